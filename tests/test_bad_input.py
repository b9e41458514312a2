"""Bad input is refused with a message keyed by the field, and nothing is written.

Every refusal here is checked three ways: the exception type, the field it names (or a clear
DisposalError message), and row counts of the business tables, their history and the
event log before and after: a refused action leaves no trace but the refusal.
"""

from decimal import Decimal

import pytest
from bip_utils import CoinsConf, P2PKHAddrEncoder, Secp256k1PrivateKey
from django.core.exceptions import ValidationError
from django.utils import translation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agencies.models import Membership, PerformanceBond, Role
from cases import services
from cases.addresses import AddressError, validate_address
from cases.demo import demo_address
from cases.models import Approval, Asset, Case, Entrustment, Event, Holding
from cases.services import parse_amount, parse_money
from cases.workflow import DisposalError, NotPermitted
from settlements import services as money
from settlements.models import TreasuryRemittance

from .factories import BASIS_DATE, SEIZED_AT, VALUATION, ltc, member

TRACKED = [Case, Holding, Entrustment, Event, Approval, PerformanceBond, TreasuryRemittance]


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


def row_counts() -> dict:
    counts = {m.__name__: m.objects.count() for m in TRACKED}
    counts |= {f"history of {m.__name__}": m.history.model.objects.count()
               for m in TRACKED if hasattr(m, "history")}
    return counts


def refused(call, field: str, fragment: str) -> ValidationError:
    """`call()` raises a ValidationError on `field` whose message contains `fragment`; nothing is saved."""
    before = row_counts()
    with pytest.raises(ValidationError) as exc:
        call()
    messages = exc.value.message_dict
    assert field in messages, messages
    assert fragment.lower() in " ".join(messages[field]).lower(), messages[field]
    assert row_counts() == before
    return exc.value


def refused_by_rule(call, fragment: str, error=DisposalError) -> DisposalError:
    before = row_counts()
    with pytest.raises(error) as exc:
        call()
    assert fragment.lower() in exc.value.message.lower(), exc.value.message
    assert row_counts() == before
    return exc.value


def register_case(world, number="顺公立字〔2025〕900号", **overrides):
    fields = dict(actor=world.shunyi_officer, bureau=world.shunyi, case_number=number, title="网络传销案",
                  seized_at=SEIZED_AT, seizure_decision_no="顺扣〔2025〕9号", custodian="涉案财物管理中心")
    return services.case_register(**(fields | overrides))


@pytest.fixture
def case(world):
    return register_case(world)


def declare(world, case, asset=None, address=None, amount="1.5", location="硬件钱包 HW-9"):
    asset = asset or world.btc
    address = address if address is not None else demo_address(asset.address_format, f"bad-input-{asset.symbol}")
    return lambda: services.holding_register(actor=world.shunyi_officer, case=case, asset=asset, address=address,
                                             amount=amount, location=location)


# --------------------------------------------------------------------------- holdings: amounts


@pytest.mark.parametrize("amount, fragment", [
    ("-1", "greater than zero"),
    ("0", "greater than zero"),
    ("0.00000000", "greater than zero"),
    ("abc", "not a number"),
    ("", "not a number"),
    ("1.5 BTC", "not a number"),
    ("1e3", "plain decimal"),
    ("1E-3", "plain decimal"),
    ("NaN", "plain decimal"),
    ("Infinity", "plain decimal"),
    ("1_000", "plain decimal"),
    ("0.123456789", "8 decimals"),
    ("21000000.00000001", "total supply"),
    ("21000001", "total supply"),
    ("1,5", "commas only to group thousands"),
    ("1" * 101, "too long"),
])
def test_a_holding_amount_a_careful_clerk_would_refuse_is_refused(world, case, amount, fragment):
    refused(declare(world, case, amount=amount), "amount", fragment)


def test_more_digits_than_the_default_precision_are_not_rounded_away(world, case):
    # 31 significant digits: 28-digit arithmetic would round this to exactly 1 BTC and accept it.
    refused(declare(world, case, amount="1.000000000000000000000000000001"), "amount", "8 decimals")
    eth_case = register_case(world, "顺公立字〔2025〕901号")
    refused(declare(world, eth_case, world.eth, amount="100000000.00000000000000000001"), "amount", "18 decimals")


def test_well_formed_amounts_are_converted_exactly_to_base_units(world):
    assert parse_amount("1.5", asset=world.btc) == 150_000_000
    assert parse_amount(" 1,234.5 ", asset=world.btc) == 123_450_000_000
    assert parse_amount("0.00000001", asset=world.btc) == 1
    assert parse_amount("1.000000000", asset=world.btc) == 100_000_000  # trailing zeros are not decimals
    assert parse_amount("21000000", asset=world.btc) == world.btc.supply_cap
    assert parse_amount("123456789.123456789123456789", asset=world.eth) == 123456789123456789123456789
    assert isinstance(parse_amount(Decimal("2.5"), asset=world.eth), int)


# --------------------------------------------------------------------------- holdings: addresses and the rest


PUB = Secp256k1PrivateKey.FromBytes(bytes(range(7, 39))).PublicKey()
BTC_LEGACY = P2PKHAddrEncoder.EncodeKey(PUB, net_ver=CoinsConf.BitcoinMainNet.ParamByKey("p2pkh_net_ver"))


def wrong_case(address: str) -> str:
    """The EVM address with the case of its first letter flipped: an EIP-55 checksum error."""
    body = address[2:]
    i = next(i for i, c in enumerate(body) if c.isalpha())
    return "0x" + body[:i] + body[i].swapcase() + body[i + 1:]


def test_a_malformed_address_is_refused(world, case):
    refused(declare(world, case, address="not-an-address"), "address", "not a valid bitcoin address")
    refused(declare(world, case, address=""), "address", "address is required")
    refused(declare(world, case, address="bc1qqqqqqqq"), "address", "checksum mismatch")


def test_a_bitcoin_address_on_a_litecoin_holding_is_refused(world, case):
    litecoin = ltc()
    refused(declare(world, case, litecoin, address=demo_address("btc", "seized")), "address",
            "Bitcoin address, not a Litecoin one")
    refused(declare(world, case, litecoin, address=BTC_LEGACY), "address", "Bitcoin address, not a Litecoin one")


def test_an_ethereum_address_with_a_wrong_eip55_checksum_is_refused(world, case):
    good = demo_address("evm", "seized-eth")
    refused(declare(world, case, world.eth, address=wrong_case(good)), "address", "EIP-55 checksum")


def test_a_tron_address_with_a_bad_checksum_is_refused(world, case):
    good = demo_address("tron", "seized-trx")
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")
    refused(declare(world, case, world.usdt, address=bad), "address", "checksum mismatch")


def test_the_same_holding_cannot_be_declared_twice_even_spelt_differently(world, case):
    address = demo_address("evm", "seized-eth")
    declare(world, case, world.eth, address=address)()
    refused(declare(world, case, world.eth, address=address), "address", "already has a ETH holding")
    # The all-lowercase spelling is the same address: canonical EIP-55 form is what is compared.
    refused(declare(world, case, world.eth, address=address.lower(), amount="2"), "address", "already has")


def test_a_holding_of_an_inactive_asset_is_refused(world, case):
    litecoin = ltc()
    Asset.objects.filter(pk=litecoin.pk).update(is_active=False)
    litecoin.refresh_from_db()
    refused(declare(world, case, litecoin, address=demo_address("ltc", "x")), "asset", "not enabled")


@pytest.mark.parametrize("location, fragment", [("", "where the coins sit"), ("  ", "where the coins sit"),
                                                ("钱" * 201, "at most 200"), ("HW\x00-1", "null characters")])
def test_a_holding_needs_a_sensible_location(world, case, location, fragment):
    refused(declare(world, case, location=location), "location", fragment)


def test_a_holding_is_declared_only_by_an_officer_of_the_case_bureau(world, case):
    before = row_counts()
    for outsider in (world.chaoyang_officer, world.shunyi_approver, world.stranger, world.supervisor):
        with pytest.raises(NotPermitted):
            services.holding_register(actor=outsider, case=case, asset=world.btc, address=BTC_LEGACY, amount="1",
                                      location="x")
    assert row_counts() == before


# --------------------------------------------------------------------------- cases and the legal basis


def test_a_case_number_is_unique_within_its_bureau(world, case):
    refused(lambda: register_case(world), "case_number", "already has a case with this number")
    refused(lambda: register_case(world, f"  {case.case_number} "), "case_number", "already has a case")
    # Another bureau may use the same number for its own case.
    other = register_case(world, case.case_number, actor=world.chaoyang_officer, bureau=world.chaoyang)
    assert other.bureau == world.chaoyang


def test_a_case_needs_every_required_field(world):
    error = refused(lambda: register_case(world, "", title="  ", custodian=""), "case_number", "required")
    assert set(error.message_dict) == {"case_number", "title", "custodian"}
    refused(lambda: register_case(world, seizure_decision_no=""), "seizure_decision_no", "required")


def test_overlong_or_nul_text_is_refused_before_the_database_sees_it(world):
    refused(lambda: register_case(world, "号" * 61), "case_number", "at most 60")
    refused(lambda: register_case(world, title="t" * 201), "title", "at most 200")
    refused(lambda: register_case(world, custodian="管理\x00中心"), "custodian", "null characters")


def record_basis(world, case, **overrides):
    fields = dict(actor=world.shunyi_officer, case=case, kind="pre_judgment", document_no="顺先处〔2025〕1号",
                  basis_date=BASIS_DATE, authority="顺义分局", owner_consent=True, approval_level="county")
    return lambda: services.case_record_legal_basis(**(fields | overrides))


def test_pre_judgment_disposal_without_owner_consent_is_refused(world, case):
    refused(record_basis(world, case, owner_consent=False), "kind", "owner's consent")
    case.refresh_from_db()
    assert case.legal_basis == "" and not case.owner_consent


def test_pre_judgment_disposal_without_an_approval_level_is_refused(world, case):
    refused(record_basis(world, case, approval_level=""), "kind", "county level or higher")
    refused(record_basis(world, case, approval_level="village"), "approval_level", "approval level")
    case.refresh_from_db()
    assert case.legal_basis == "" and case.approval_level == ""


def test_a_legal_basis_needs_its_document_and_a_known_kind(world, case):
    refused(record_basis(world, case, kind="hearsay"), "kind", "choose a legal basis")
    refused(record_basis(world, case, kind="judgment", document_no=" "), "kind", "document number")
    refused(record_basis(world, case, kind="judgment", document_no="号" * 81), "document_no", "at most 80")
    record_basis(world, case)()  # with consent and approval it is recorded
    assert Case.objects.get(pk=case.pk).legal_basis == "pre_judgment"


# --------------------------------------------------------------------------- entrustment steps


def test_a_bond_below_the_policy_ratio_is_refused_and_nothing_moves(flow):
    entrustment = flow.to("agency_appointed")
    post = lambda amount: lambda: services.bond_post(actor=flow.w.bce_officer, entrustment=entrustment,  # noqa: E731
                                                     posted_cny=amount, reference="BG-LOW")
    error = refused(post(VALUATION), "posted_cny", "at least 11000000.00 CNY (110% of the valuation")
    assert "E+" not in str(error)
    refused(post(VALUATION * Decimal("1.1") - Decimal("0.01")), "posted_cny", "0.01 CNY is missing")
    refused(post("eleven million"), "posted_cny", "not an amount of money")
    refused(post("11,000,000.001"), "posted_cny", "2 decimal places")
    refused(post("1" * 30), "posted_cny", "too large")
    refused(post("11000000,00"), "posted_cny", "commas only to group thousands")
    assert flow.refresh().state == "agency_appointed"
    assert entrustment.current_bond() is None


def test_a_treasury_payment_code_has_exactly_twenty_ascii_digits(flow):
    entrustment = flow.to("credited")
    prepare = lambda code: lambda: money.remittance_prepare(  # noqa: E731
        actor=flow.w.shunyi_officer, entrustment=entrustment, payment_code=code)
    for code in ("1" * 19, "1" * 21, "ABCDEFGHIJKLMNOPQRST", "1234567890123456789X", "１" * 20, ""):
        refused(prepare(code), "payment_code", "exactly 20 digits")
    assert flow.refresh().state == "credited"
    assert not TreasuryRemittance.objects.exists()


def test_a_transition_from_the_wrong_state_is_refused_with_the_state_named(flow):
    entrustment = flow.to("draft")
    refused_by_rule(lambda: services.entrustment_accept(actor=flow.w.bce_approver, entrustment=entrustment),
                    "only a submitted entrustment can be accepted")
    refused_by_rule(lambda: services.entrustment_return(actor=flow.w.bce_officer, entrustment=entrustment,
                                                        reason="缺少扣押清单"),
                    "not possible while the record is in state “Draft”")
    refused(lambda: services.entrustment_return(actor=flow.w.bce_officer, entrustment=entrustment, reason=" "),
            "reason", "reason is required")
    assert flow.refresh().state == "draft"


def test_the_preparer_cannot_give_the_second_approval(world, flow):
    world.policy.quorums = {**world.policy.quorums, "submit": 2}
    world.policy.save()
    entrustment = flow.to("draft")
    assert entrustment.prepared_by == world.shunyi_officer
    # The officer who prepared the entrustment is also an approver of the bureau.
    member("shunyi_officer", world.shunyi, Role.APPROVER)
    services.entrustment_submit(actor=world.shunyi_approver, entrustment=entrustment)
    assert flow.refresh().state == "draft"  # one of two approvals

    refused_by_rule(lambda: services.entrustment_submit(actor=world.shunyi_officer, entrustment=entrustment),
                    "may not be the person who prepared it")
    refused_by_rule(lambda: services.entrustment_submit(actor=world.shunyi_approver, entrustment=entrustment),
                    "already approved")
    assert flow.refresh().state == "draft"
    assert Approval.objects.filter(entrustment=entrustment).count() == 1

    services.entrustment_submit(actor=world.shunyi_approver_2, entrustment=entrustment)
    assert flow.refresh().state == "submitted"


def test_an_inactive_membership_grants_nothing(world, case):
    Membership.objects.filter(user=world.shunyi_officer).update(is_active=False)
    refused_by_rule(declare(world, case), "only", error=NotPermitted)


# --------------------------------------------------------------------------- random input


HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])

NUMBERISH = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789.,-+eE_ \u3000１", max_size=32),
    st.from_regex(r"\A[-+]?[0-9]{0,9}(,[0-9]{3}){0,3}(\.[0-9]{0,12})?\Z"),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)


@HYPOTHESIS
@given(text=NUMBERISH)
def test_parse_amount_either_refuses_or_converts_exactly(text):
    btc = Asset(symbol="BTC", chain="bitcoin", decimals=8, address_format="btc", confirmations_required=6,
                supply_cap=21_000_000 * 10**8)
    try:
        units = parse_amount(text, asset=btc)
    except ValidationError as exc:
        assert list(exc.message_dict) == ["amount"]
        return
    assert isinstance(units, int) and 0 < units <= btc.supply_cap
    # Exact round trip: what was typed is what is recorded, to the satoshi.
    assert Decimal(units).scaleb(-8) == Decimal(text.strip().replace(",", ""))


@HYPOTHESIS
@given(text=NUMBERISH, places=st.sampled_from([2, 6, 8]))
def test_parse_money_either_refuses_or_returns_what_its_column_can_hold(text, places):
    try:
        value = parse_money(text, field="amount_cny", places=places)
    except ValidationError as exc:
        assert list(exc.message_dict) == ["amount_cny"]
        return
    assert value > 0 and value == value.quantize(Decimal(1).scaleb(-places))
    assert value.adjusted() < 24 - places


def test_money_larger_than_its_column_is_refused_not_crashed():
    assert parse_money("9" * 22, field="amount_cny") == Decimal("9" * 22)
    for text, kwargs in (("1" + "0" * 22, {}), ("1" * 30, {}), ("12345678901", {"places": 6, "max_digits": 16})):
        with pytest.raises(ValidationError, match="too large"):
            parse_money(text, field="rate", **kwargs)
    assert parse_money("1234567890.123456", field="rate", places=6, max_digits=16) == Decimal("1234567890.123456")
    assert parse_money("12,000,000.00", field="amount_cny") == Decimal("12000000.00")
    with pytest.raises(ValidationError, match="commas"):
        parse_money("7,1234", field="rate", places=6, max_digits=16)


def test_random_amounts_only_ever_raise_validation_errors_and_save_nothing_when_refused(world):
    case = register_case(world, "顺公立字〔2025〕950号")
    addresses = iter(demo_address("btc", f"random-amount-{i}") for i in range(10_000))

    @HYPOTHESIS
    @given(text=NUMBERISH)
    def check(text):
        before = row_counts()
        try:
            holding = services.holding_register(actor=world.shunyi_officer, case=case, asset=world.btc,
                                                address=next(addresses), amount=text, location="钱包")
        except ValidationError as exc:
            assert "amount" in exc.message_dict
            assert row_counts() == before
        else:
            assert holding.declared_amount == parse_amount(text, asset=world.btc)
            assert row_counts()["Holding"] == before["Holding"] + 1

    check()


def mutate(address: str, data) -> str:
    i = data.draw(st.integers(0, len(address) - 1))
    how = data.draw(st.sampled_from(["replace", "delete", "insert", "swapcase"]))
    char = data.draw(st.characters(codec="utf-8"))
    if how == "replace":
        return address[:i] + char + address[i + 1:]
    if how == "delete":
        return address[:i] + address[i + 1:]
    if how == "insert":
        return address[:i] + char + address[i:]
    return address[:i] + address[i].swapcase() + address[i + 1:]


def test_random_addresses_only_ever_raise_validation_errors_and_save_nothing_when_refused(world):
    case = register_case(world, "顺公立字〔2025〕951号")
    assets = [world.btc, world.eth, world.usdt, ltc()]
    valid = [demo_address(a.address_format, f"random-{a.symbol}") for a in assets] + [BTC_LEGACY]

    @HYPOTHESIS
    @given(asset=st.sampled_from(assets), data=st.data())
    def check(asset, data):
        address = data.draw(st.one_of(st.text(max_size=130), st.sampled_from(valid).map(lambda a: mutate(a, data))))
        before = row_counts()
        try:
            holding = services.holding_register(actor=world.shunyi_officer, case=case, asset=asset, address=address,
                                                amount="1", location="钱包")
        except ValidationError as exc:
            assert "address" in exc.message_dict, exc.message_dict
            assert row_counts() == before
        else:
            assert holding.address == validate_address(address, asset.address_format)
            assert row_counts()["Holding"] == before["Holding"] + 1

    check()


def test_the_address_validator_raises_only_address_errors(world):
    @settings(max_examples=200, deadline=None)
    @given(text=st.text(max_size=120), fmt=st.sampled_from(["btc", "ltc", "evm", "tron"]))
    def check(text, fmt):
        try:
            validate_address(text, fmt)
        except AddressError:
            pass

    check()
