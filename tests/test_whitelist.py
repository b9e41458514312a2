"""The agency's address whitelist: coins go only to addresses BCE approved, after the cooling period."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import translation
from django.core.exceptions import ValidationError
from django.utils import timezone

from agencies.models import Role
from cases import services, whitelist
from cases.demo import demo_address
from cases.models import (
    Approval,
    EntrustmentState as S,
    Event,
    EventType,
    WhitelistedAddress,
    WhitelistPurpose as P,
    WhitelistState as W,
)
from cases.services import TransferRecord
from cases.workflow import DisposalError, NotPermitted
from counterparties.automation import service_user

from .factories import OrganisationFactory, member
from .flow import FEE, custody_address, deposit_address


def propose(world, address, *, asset=None, purpose=P.CUSTODY, platform=None, actor=None, **kwargs):
    return whitelist.whitelist_propose(actor=actor or world.agency_officer, organisation=world.agency,
                                       asset=asset or world.btc, address=address, purpose=purpose,
                                       platform=platform, **kwargs)


def to_vault(flow, address_of):
    """One custody transfer per holding of the flow's entrustment, to the address `address_of(asset)`."""
    return [TransferRecord(holding=h, asset=h.asset, to_address=address_of(h.asset),
                           amount=h.accepted_amount - FEE[h.asset.symbol], network_fee=FEE[h.asset.symbol],
                           txid=f"tx-{h.pk}")
            for h in flow.entrustment.holdings.select_related("asset")]


NEW_VAULT = "new-vault"


def new_vault(asset):
    return demo_address(asset.address_format, f"{NEW_VAULT}-{asset.symbol}")


def refused_message(call) -> str:
    with pytest.raises(ValidationError) as refused:
        call()
    return " ".join(refused.value.message_dict["to_address"])



@pytest.fixture(autouse=True)
def english():
    # The refusals are matched by their English text; the page's language would otherwise be the default.
    with translation.override("en"):
        yield

# --------------------------------------------------------------------------- proposing


def test_an_agency_officer_proposes_and_proposing_again_returns_the_same_entry(world):
    address = demo_address("btc", "vault-1")
    entry = propose(world, address)
    assert entry.state == W.PROPOSED and entry.proposed_by == world.agency_officer
    assert entry.usable_from is None
    assert propose(world, address).pk == entry.pk
    assert WhitelistedAddress.objects.count() == 1
    assert entry.history.first().history_user == world.agency_officer


def test_the_agencys_service_account_may_propose(world):
    entry = propose(world, demo_address("btc", "vault-svc"), actor=service_user(world.agency))
    assert entry.state == W.PROPOSED


def test_only_the_agencys_own_officers_propose_and_only_valid_addresses(world):
    with pytest.raises(NotPermitted):
        propose(world, demo_address("btc", "x"), actor=world.agency_b_officer)
    with pytest.raises(NotPermitted):
        propose(world, demo_address("btc", "x"), actor=world.bce_approver)
    with pytest.raises(ValidationError) as bad:
        propose(world, "1BoatSLRHtKNngkdXEeobR76b53LETtpyX")  # a checksum error
    assert "address" in bad.value.message_dict
    with pytest.raises(ValidationError):
        propose(world, demo_address("evm", "wrong chain"))  # an Ethereum address for BTC
    with pytest.raises(ValidationError):
        propose(world, demo_address("btc", "deposit"), purpose=P.PLATFORM_DEPOSIT)  # no platform named
    with pytest.raises(ValidationError):
        propose(world, demo_address("btc", "deposit"), purpose=P.PLATFORM_DEPOSIT, platform=world.hk_bank)
    assert not WhitelistedAddress.objects.exists()


# --------------------------------------------------------------------------- approving


def test_a_bce_approver_approves_and_the_proposer_never_counts(world):
    require_bce_approver = member("agency_officer", world.bce, Role.APPROVER)  # also holds a BCE approver role
    entry = propose(world, demo_address("btc", "vault-2"))
    with pytest.raises(DisposalError, match="four eyes"):
        whitelist.whitelist_approve(actor=require_bce_approver, entry=entry)
    for outsider in (world.agency_b_officer, world.bce_officer, world.shunyi_approver):
        with pytest.raises(NotPermitted):
            whitelist.whitelist_approve(actor=outsider, entry=entry)
    entry.refresh_from_db()
    assert entry.state == W.PROPOSED and not Approval.objects.exists()
    entry = whitelist.whitelist_approve(actor=world.bce_approver, entry=entry)
    assert entry.state == W.APPROVED and entry.usable_from == entry.approved_at  # the test policy: no cooling
    assert whitelist.is_usable(world.agency, world.btc, entry.address, purpose=P.CUSTODY)
    with pytest.raises(DisposalError, match="not awaiting approval"):
        whitelist.whitelist_approve(actor=world.bce_approver_2, entry=entry)


def test_a_bce_approver_of_another_jurisdiction_may_not_approve(world):
    from cases.models import Jurisdiction

    shanghai = Jurisdiction.objects.create(code="shanghai", name="上海")
    other_exchange = OrganisationFactory(code="sh-exchange", kind="bce", name="上海联合产权交易所",
                                         jurisdiction=shanghai)
    outsider = member("sh_approver", other_exchange, Role.APPROVER)
    entry = propose(world, demo_address("btc", "vault-3"))
    with pytest.raises(NotPermitted):
        whitelist.whitelist_approve(actor=outsider, entry=entry)


def test_two_of_three_bce_approvers_whitelist_on_the_second_distinct_one(world):
    world.policy.quorums["whitelist"] = 2
    world.policy.save()
    entry = propose(world, demo_address("btc", "vault-4"))
    whitelist.whitelist_approve(actor=world.bce_approver, entry=entry)
    entry.refresh_from_db()
    assert entry.state == W.PROPOSED and whitelist.approvals_of(entry) == 1
    assert not whitelist.is_usable(world.agency, world.btc, entry.address, purpose=P.CUSTODY)
    with pytest.raises(DisposalError, match="already approved"):
        whitelist.whitelist_approve(actor=world.bce_approver, entry=entry)
    whitelist.whitelist_approve(actor=world.bce_approver_2, entry=entry)
    entry.refresh_from_db()
    assert entry.state == W.APPROVED
    assert whitelist.is_usable(world.agency, world.btc, entry.address, purpose=P.CUSTODY)


def test_an_approved_address_waits_out_the_cooling_period(world):
    world.policy.whitelist_cooling_hours = 24
    world.policy.save()
    entry = whitelist.whitelist_approve(actor=world.bce_approver, entry=propose(world, demo_address("btc", "v5")))
    assert entry.usable_from == entry.approved_at + timedelta(hours=24)
    reason = whitelist.unusable_reason(world.agency, world.btc, entry.address, purpose=P.CUSTODY)
    assert "cooling period until" in reason and entry.address in reason
    assert timezone.localtime(entry.usable_from).strftime("%Y-%m-%d %H:%M") in reason
    with mock.patch("django.utils.timezone.now", return_value=entry.usable_from - timedelta(seconds=1)):
        assert not whitelist.is_usable(world.agency, world.btc, entry.address, purpose=P.CUSTODY)
    with mock.patch("django.utils.timezone.now", return_value=entry.usable_from):
        assert whitelist.is_usable(world.agency, world.btc, entry.address, purpose=P.CUSTODY)


# --------------------------------------------------------------------------- enforcement: custody


def test_custody_receive_refuses_an_unknown_address_and_nothing_moves(flow):
    entrustment = flow.to("detected")
    message = refused_message(lambda: services.custody_receive(
        actor=flow.w.agency_officer, entrustment=entrustment, transfers=to_vault(flow, new_vault)))
    assert new_vault(flow.w.btc) in message and "unknown" in message
    entrustment = flow.refresh()
    assert entrustment.state == S.DETECTED and not entrustment.transfers.exists()


def test_custody_receive_refuses_an_address_awaiting_approval_then_accepts_it_once_approved(flow):
    w = flow.w
    entrustment = flow.to("detected")
    entries = [propose(w, new_vault(a), asset=a) for a in (w.btc, w.eth)]
    message = refused_message(lambda: services.custody_receive(
        actor=w.agency_officer, entrustment=entrustment, transfers=to_vault(flow, new_vault)))
    assert "awaits approval" in message and new_vault(w.btc) in message
    for entry in entries:
        whitelist.whitelist_approve(actor=w.bce_approver, entry=entry)
    services.custody_receive(actor=w.agency_officer, entrustment=entrustment, transfers=to_vault(flow, new_vault))
    assert flow.refresh().state == S.IN_CUSTODY


def test_custody_receive_refuses_an_address_in_its_cooling_period(flow):
    w = flow.w
    entrustment = flow.to("detected")
    w.policy.whitelist_cooling_hours = 12
    w.policy.save()
    for asset in (w.btc, w.eth):
        whitelist.whitelist_approve(actor=w.bce_approver, entry=propose(w, new_vault(asset), asset=asset))
    message = refused_message(lambda: services.custody_receive(
        actor=w.agency_officer, entrustment=entrustment, transfers=to_vault(flow, new_vault)))
    assert "cooling period until" in message
    assert flow.refresh().state == S.DETECTED


def test_another_agencys_vault_is_not_this_agencys(flow):
    w = flow.w
    entrustment = flow.to("detected")
    for asset in (w.btc, w.eth):
        entry = whitelist.whitelist_propose(actor=w.agency_b_officer, organisation=w.agency_b, asset=asset,
                                            address=new_vault(asset), purpose=P.CUSTODY)
        whitelist.whitelist_approve(actor=w.bce_approver, entry=entry)
    message = refused_message(lambda: services.custody_receive(
        actor=w.agency_officer, entrustment=entrustment, transfers=to_vault(flow, new_vault)))
    assert "unknown" in message


def test_a_revoked_address_is_refused(flow):
    w = flow.w
    entrustment = flow.to("detected")
    entry = WhitelistedAddress.objects.get(organisation=w.agency, asset=w.btc, address=custody_address(w.btc))
    with pytest.raises(ValidationError):
        whitelist.whitelist_revoke(actor=w.agency_officer, entry=entry, reason="")
    with pytest.raises(NotPermitted):
        whitelist.whitelist_revoke(actor=w.agency_b_officer, entry=entry, reason="not mine")
    whitelist.whitelist_revoke(actor=w.agency_officer, entry=entry, reason="The HSM key was rotated.")
    entry.refresh_from_db()
    assert entry.state == W.REVOKED and entry.revoke_reason == "The HSM key was rotated."
    message = refused_message(lambda: services.custody_receive(
        actor=w.agency_officer, entrustment=entrustment, transfers=flow.custody_transfers()))
    assert custody_address(w.btc) in message and "revoked" in message
    # Proposed again, it is a new entry that needs a new approval.
    again = propose(w, custody_address(w.btc))
    assert again.pk != entry.pk and again.state == W.PROPOSED


# --------------------------------------------------------------------------- enforcement: platform deposit


def test_a_deposit_goes_only_to_an_address_whitelisted_for_that_platform(flow):
    w = flow.w
    entrustment = flow.to("reserve_set")
    from cases.services import custody_balance

    def deposits(address_of):
        return [TransferRecord(holding=None, asset=a, to_address=address_of(a),
                               amount=custody_balance(entrustment, a) - FEE[a.symbol], network_fee=FEE[a.symbol],
                               txid="", from_address="custody")
                for a in (w.btc, w.eth)]

    # OSL's deposit addresses, instructed as deposits at HashKey: not whitelisted there.
    osl = lambda a: deposit_address(a, "osl")  # noqa: E731
    other = WhitelistedAddress.objects.filter(platform=w.hashkey, address__in=[osl(w.btc), osl(w.eth)])
    assert not other.exists()
    message = refused_message(lambda: services.platform_transfer_instruct(
        actor=w.agency_officer, entrustment=entrustment, platform=w.hashkey, deposits=deposits(osl)))
    assert osl(w.btc) in message and "unknown" in message
    entrustment = flow.refresh()
    assert entrustment.state == S.RESERVE_SET and not entrustment.transfers.filter(kind="to_platform").exists()
    # The custody vault is no deposit address either.
    message = refused_message(lambda: services.platform_transfer_instruct(
        actor=w.agency_officer, entrustment=entrustment, platform=w.osl, deposits=deposits(custody_address)))
    assert "unknown" in message
    services.platform_transfer_instruct(actor=w.agency_officer, entrustment=entrustment, platform=w.osl,
                                        deposits=deposits(osl))
    assert flow.refresh().state == S.TRANSFERRING


# --------------------------------------------------------------------------- the record


def test_from_an_entrustment_the_whitelist_changes_are_business_events(flow):
    w = flow.w
    entrustment = flow.to("bonded")
    entry = propose(w, new_vault(w.btc), entrustment=entrustment)
    whitelist.whitelist_approve(actor=w.bce_approver, entry=entry, entrustment=entrustment)
    whitelist.whitelist_revoke(actor=w.bce_approver, entry=entry, reason="Wrong vault.", entrustment=entrustment)
    events = Event.objects.filter(entrustment=entrustment, type=EventType.ADDRESS_WHITELISTED).order_by("id")
    assert [e.details["action"] for e in events] == ["proposed", "approved", "revoked"]
    assert [e.actor for e in events] == [w.agency_officer, w.bce_approver, w.bce_approver]
    assert events[0].details["address"] == entry.address and events[2].reason == "Wrong vault."
    approval = Approval.objects.get(action="whitelist", subject=f"whitelist:{entry.pk}")
    assert approval.approver == w.bce_approver and approval.entrustment == entrustment
    assert [h.history_user for h in entry.history.order_by("history_id")] == [
        w.agency_officer, w.bce_approver, w.bce_approver]
    # An entrustment of another agency is no context for this agency's whitelist.
    with pytest.raises(ValidationError):
        whitelist.whitelist_propose(actor=w.agency_b_officer, organisation=w.agency_b, asset=w.btc,
                                    address=new_vault(w.btc), purpose=P.CUSTODY, entrustment=entrustment)


# --------------------------------------------------------------------------- the entrustment page


def test_on_the_page_the_agency_proposes_and_a_bce_approver_approves(client, flow):
    from .test_portal_actions import act, offered

    w = flow.w
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    entrustment = flow.to("bonded")
    assert "whitelist_propose" in offered(client, w.agency_officer, entrustment)
    assert "whitelist_approve" not in offered(client, w.bce_approver, entrustment)  # nothing pending
    address = new_vault(w.btc)
    act(client, w.agency_officer, entrustment, "whitelist_propose",
        {"asset": w.btc.pk, "address": address, "purpose": P.CUSTODY, "platform": ""})
    entry = WhitelistedAddress.objects.get(organisation=w.agency, address=address)
    assert entry.state == W.PROPOSED and entry.proposed_by == w.agency_officer
    assert "whitelist_approve" not in offered(client, w.agency_officer, entrustment)
    assert "whitelist_propose" not in offered(client, w.bce_approver, entrustment)
    act(client, w.bce_approver, entrustment, "whitelist_approve", {"entry": entry.pk})
    entry.refresh_from_db()
    assert entry.state == W.APPROVED
    assert Event.objects.filter(entrustment=entrustment, type=EventType.ADDRESS_WHITELISTED).count() == 2
    # A bad address is refused at the field, and nothing is written.
    before = WhitelistedAddress.objects.count()
    response = act(client, w.agency_officer, entrustment, "whitelist_propose",
                   {"asset": w.btc.pk, "address": "not-an-address", "purpose": P.CUSTODY}, expect=400)
    assert "not-an-address" in response.content.decode()
    assert WhitelistedAddress.objects.count() == before


# --------------------------------------------------------------------------- the admin


def test_the_admin_lists_entries_read_only_and_approves_and_revokes_through_the_services(client, world):
    from agencies.models import Membership

    from .factories import UserFactory, sign_in

    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    Membership.objects.create(user=root, organisation=world.bce, role=Role.APPROVER)
    sign_in(client, root)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    entry = propose(world, demo_address("btc", "vault-admin"))
    changelist = "/admin/cases/whitelistedaddress/"
    assert entry.address in client.get(changelist).content.decode()
    assert client.get(f"{changelist}add/").status_code == 403
    client.post(f"{changelist}{entry.pk}/change/", {"address": demo_address("btc", "other")})
    entry.refresh_from_db()
    assert entry.address == demo_address("btc", "vault-admin") and entry.state == W.PROPOSED
    client.post(changelist, {"action": "whitelist_approve", "_selected_action": [entry.pk]}, follow=True)
    entry.refresh_from_db()
    assert entry.state == W.APPROVED
    assert Approval.objects.get(action="whitelist", subject=f"whitelist:{entry.pk}").approver == root
    client.post(changelist, {"action": "whitelist_revoke", "_selected_action": [entry.pk], "apply": "1",
                             "reason": "Wrong vault."}, follow=True)
    entry.refresh_from_db()
    assert entry.state == W.REVOKED and entry.revoke_reason == "Wrong vault."
