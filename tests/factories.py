"""Factories and named personas: the people of the process, as tests speak of them."""

from datetime import date, datetime, timezone as dt_timezone
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from agencies.models import Membership, Organisation, OrgKind, Role
from cases.models import Asset, DisposalPolicy, Jurisdiction


class JurisdictionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Jurisdiction
        django_get_or_create = ("code",)

    code = "beijing"
    name = "北京"


class PolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DisposalPolicy

    jurisdiction = factory.SubFactory(JurisdictionFactory)
    name = "test policy"
    reserve_rule = "reference_average"
    reference_days = 3
    min_quotes = 2
    # Whitelisted addresses are usable at once in tests; test_whitelist sets a cooling period where it matters.
    whitelist_cooling_hours = 0


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"org-{n}")
    kind = OrgKind.BUREAU
    name = factory.LazyAttribute(lambda o: f"{o.code} name")
    jurisdiction = factory.SubFactory(JurisdictionFactory)
    special_account_no = factory.LazyAttribute(lambda o: "110100000000009999" if o.kind == OrgKind.BUREAU else "")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.invalid")


def member(username: str, organisation: Organisation, role: str):
    user = UserFactory(username=username)
    Membership.objects.get_or_create(user=user, organisation=organisation, role=role)
    return user


class AssetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Asset
        django_get_or_create = ("symbol", "chain")

    symbol = "BTC"
    name = "Bitcoin"
    chain = "bitcoin"
    decimals = 8
    address_format = "btc"
    confirmations_required = 6
    supply_cap = 21_000_000 * 10**8


def btc():
    return AssetFactory()


def eth():
    return AssetFactory(symbol="ETH", name="Ether", chain="ethereum", decimals=18, address_format="evm",
                        confirmations_required=64, supply_cap=130_000_000 * 10**18)


def ltc():
    return AssetFactory(symbol="LTC", name="Litecoin", chain="litecoin", decimals=8, address_format="ltc",
                        confirmations_required=12, supply_cap=84_000_000 * 10**8)


def usdt_tron():
    return AssetFactory(symbol="USDT", name="Tether (TRC-20)", chain="tron", decimals=6, address_format="tron",
                        confirmations_required=20, supply_cap=200_000_000_000 * 10**6)


class World:
    """Everyone in one jurisdiction: two bureaus, BCE, two agencies, a witness, platforms, banks, supervisors."""

    def __init__(self):
        self.policy = PolicyFactory()
        org = OrganisationFactory
        self.shunyi = org(code="shunyi", kind=OrgKind.BUREAU, name="顺义分局")
        self.chaoyang = org(code="chaoyang", kind=OrgKind.BUREAU, name="朝阳分局")
        self.bce = org(code="cbex", kind=OrgKind.BCE, name="北京产权交易所")
        self.agency = org(code="agency-a", kind=OrgKind.AGENCY, name="甲机构")
        self.agency_b = org(code="agency-b", kind=OrgKind.AGENCY, name="乙机构")
        self.witness = org(code="witness", kind=OrgKind.WITNESS, name="公安部第一研究所")
        self.osl = org(code="osl", kind=OrgKind.PLATFORM, name="OSL")
        self.hashkey = org(code="hashkey", kind=OrgKind.PLATFORM, name="HashKey")
        self.hk_bank = org(code="hk-bank", kind=OrgKind.BANK, name="HK bank")
        self.inspection = org(code="inspection", kind=OrgKind.SUPERVISOR, name="督察")
        self.shunyi_officer = member("shunyi_officer", self.shunyi, Role.OFFICER)
        self.shunyi_approver = member("shunyi_approver", self.shunyi, Role.APPROVER)
        self.shunyi_approver_2 = member("shunyi_approver_2", self.shunyi, Role.APPROVER)
        self.chaoyang_officer = member("chaoyang_officer", self.chaoyang, Role.OFFICER)
        self.chaoyang_approver = member("chaoyang_approver", self.chaoyang, Role.APPROVER)
        self.bce_officer = member("bce_officer", self.bce, Role.OFFICER)
        self.bce_approver = member("bce_approver", self.bce, Role.APPROVER)
        self.bce_approver_2 = member("bce_approver_2", self.bce, Role.APPROVER)
        self.agency_officer = member("agency_officer", self.agency, Role.OFFICER)
        self.agency_approver = member("agency_approver", self.agency, Role.APPROVER)
        self.agency_b_officer = member("agency_b_officer", self.agency_b, Role.OFFICER)
        self.supervisor = member("supervisor", self.inspection, Role.AUDITOR)
        self.stranger = UserFactory(username="stranger")
        self.btc, self.eth, self.usdt = btc(), eth(), usdt_tron()


SEIZED_AT = datetime(2025, 6, 1, 8, 0, tzinfo=dt_timezone.utc)
BASIS_DATE = date(2025, 6, 2)
VALUATION = Decimal("10000000.00")


def sign_in(client, user):
    """Sign a test client in as `user`, the way every test should (see the sign-in security in the README).

    `Client.login()` cannot be used under django-axes; this is the one place that knows what else a
    signed-in session needs.
    """
    from accounts.models import SealedTOTPDevice
    from accounts.services import requires_two_factor
    from django_otp import DEVICE_ID_SESSION_KEY

    client.force_login(user)
    if requires_two_factor(user):
        # What a person who has enrolled and typed a valid code holds: a confirmed authenticator and a
        # session marked verified by it, as django_otp.login() marks it.
        device = SealedTOTPDevice.objects.filter(user=user, confirmed=True).first()
        if device is None:
            device = SealedTOTPDevice.start_for(user)
            device.confirmed = True
            device.save(update_fields=["confirmed"])
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return client
