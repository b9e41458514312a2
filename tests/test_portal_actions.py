"""The entrustment page and its actions, driven through HTTP as the people of the process.

Every action is taken the way a person takes it: open the page as that persona, find the
action's form among those offered, and post it with the page's tokens. `Flow` only builds
the case, its holdings and the draft (intake is another part of the portal) or puts an
entrustment in a given state for the tests of one step.
"""

import re
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cases import actions, services
from cases.demo import demo_address
from cases.forms import plain_amount
from cases.models import (Entrustment, EntrustmentState, Event, EventType, EvidenceFile, Lot, LotState,
                          WhitelistedAddress, WhitelistPurpose, WhitelistState)
from cases.services import custody_balance
from settlements.models import VictimReturn

from .factories import sign_in
from .flow import FEE, REFERENCE_PRICES, Flow

S = EntrustmentState
security = pytest.mark.security
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n%%EOF\n"


@pytest.fixture(autouse=True)
def english(client):
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"


# --------------------------------------------------------------------------- helpers


def open_page(client, user, entrustment):
    sign_in(client, user)
    response = client.get(reverse("entrustment-detail", args=[entrustment.pk]))
    assert response.status_code == 200
    return response


def items_of(response) -> list:
    ctx = response.context
    found = list(ctx["actions"]) + list(ctx["exception_actions"]) + list(ctx["evidence_actions"])
    for lot in ctx["lots_with_actions"]:
        found += lot.items
    for victim_return in ctx["returns_with_actions"]:
        found += victim_return.items
    return found


def offered(client, user, entrustment) -> set[str]:
    return {item.key for item in items_of(open_page(client, user, entrustment))}


def find(response, key, target=None):
    for item in items_of(response):
        if item.key == key and (target is None or item.target.pk == target.pk):
            return item
    return None


def errors_in(response) -> list[str]:
    return re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.content.decode(), re.S)


def act(client, user, entrustment, key, data=None, *, target=None, expect=302, files=None, **headers):
    """Open the page as `user`, take the action `key` from it, and return the answer."""
    item = find(open_page(client, user, entrustment), key, target)
    assert item is not None, f"{key} is not offered to {user.username} in state {entrustment.state}"
    payload = {"state_token": item.state_token, "record_token": item.record_token, **(data or {}), **(files or {})}
    response = client.post(item.url, payload, **headers)
    assert response.status_code == expect, (key, response.status_code, errors_in(response))
    return response


def reload(entrustment) -> Entrustment:
    return Entrustment.objects.get(pk=entrustment.pk)


def moved_to(entrustment, state) -> Entrustment:
    entrustment = reload(entrustment)
    assert entrustment.state == state
    assert Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION, to_state=state).exists()
    return entrustment


def local(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M:%S")


def transitions_to(entrustment, state) -> int:
    return Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION, to_state=state).count()


def whitelist_through_the_page(client, world, entrustment, asset, address, purpose, platform=None):
    """The agency's officer proposes one of its addresses from the entrustment's page and BCE's approver approves
    it there (the test policy has no cooling period, so it is usable at once)."""
    act(client, world.agency_officer, entrustment, "whitelist_propose", {
        "asset": asset.pk, "address": address, "purpose": purpose, "platform": platform.pk if platform else ""})
    entry = WhitelistedAddress.objects.get(organisation=entrustment.agency, asset=asset, address=address,
                                           purpose=purpose, state=WhitelistState.PROPOSED)
    assert "whitelist_approve" not in offered(client, world.agency_officer, entrustment)
    act(client, world.bce_approver, entrustment, "whitelist_approve", {"entry": entry.pk})
    entry.refresh_from_db()
    assert entry.state == WhitelistState.APPROVED
    return entry


# --------------------------------------------------------------------------- draft to closed, all by HTTP


def test_an_entrustment_goes_from_draft_to_closed_entirely_through_the_page(client, world):
    w = world
    flow = Flow(w)
    e = flow.to("draft")

    act(client, w.shunyi_approver, e, "submit")
    e = moved_to(e, S.SUBMITTED)
    act(client, w.bce_approver, e, "accept", {"reason": "Complete file."})
    e = moved_to(e, S.ACCEPTED)
    act(client, w.bce_officer, e, "appoint_agency", {
        "agency": w.agency.pk, "valuation_cny": "10,000,000.00", "valuation_source": "CMC 30-day average",
        "qualification_note": "Licensed custodian", "capacity_note": "HSM custody", "conflicts_declared": "none"})
    e = moved_to(e, S.AGENCY_APPOINTED)
    assert e.agency == w.agency
    act(client, w.bce_officer, e, "post_bond", {"posted_cny": "11000000.00", "reference": "BG-2025-1"})
    e = moved_to(e, S.BONDED)

    holdings = list(e.holdings.select_related("asset"))
    # Coins go only to whitelisted addresses: the agency's vaults, proposed and approved from this page.
    for h in holdings:
        whitelist_through_the_page(client, w, e, h.asset, demo_address(h.asset.address_format,
                                                                       f"custody-{h.asset.symbol}"),
                                   WhitelistPurpose.CUSTODY)
    detection = {"witness": w.witness.pk}
    for h in holdings:
        detection |= {f"h{h.pk}_observed": plain_amount(h.asset, h.declared_amount),
                      f"h{h.pk}_block_height": "900000", f"h{h.pk}_controlled": "on"}
    act(client, w.agency_officer, e, "record_detection", detection)
    e = moved_to(e, S.DETECTED)
    assert e.sla_started_at is not None

    custody = {}
    for h in holdings:
        fee = FEE[h.asset.symbol]
        custody |= {f"h{h.pk}_to_address": demo_address(h.asset.address_format, f"custody-{h.asset.symbol}"),
                    f"h{h.pk}_amount": plain_amount(h.asset, h.declared_amount - fee),
                    f"h{h.pk}_network_fee": plain_amount(h.asset, fee), f"h{h.pk}_txid": f"tx-custody-{h.pk}"}
    act(client, w.agency_officer, e, "custody_receive", custody)
    e = moved_to(e, S.IN_CUSTODY)

    assets = {h.asset for h in holdings}
    act(client, w.bce_officer, e, "lots_plan",
        {f"a{a.pk}_fee_allowance": plain_amount(a, FEE[a.symbol]) for a in assets})
    lots = list(Lot.objects.filter(entrustment=e).select_related("asset").order_by("sequence"))
    assert [lot.asset.symbol for lot in lots] == ["BTC", "ETH"]
    for lot in lots:
        prices = REFERENCE_PRICES[lot.asset.symbol]
        act(client, w.bce_officer, e, "reserve_propose", {
            "price": max(prices), "reference_prices": "\n".join(prices), "source": "Bitstamp daily close",
            "window": "the 3 trading days before the trade date"}, target=lot)
        act(client, w.bce_approver, e, "reserve_approve", target=lot)
        lot.refresh_from_db()
        assert lot.state == LotState.RESERVE_SET
    e = moved_to(e, S.RESERVE_SET)

    for a in assets:
        whitelist_through_the_page(client, w, e, a, demo_address(a.address_format, f"osl-{a.symbol}"),
                                   WhitelistPurpose.PLATFORM_DEPOSIT, platform=w.osl)
    deposits = {"platform": w.osl.pk}
    for a in assets:
        fee = FEE[a.symbol]
        deposits |= {f"a{a.pk}_to_address": demo_address(a.address_format, f"osl-{a.symbol}"),
                     f"a{a.pk}_amount": plain_amount(a, custody_balance(e, a) - fee),
                     f"a{a.pk}_network_fee": plain_amount(a, fee)}
    act(client, w.agency_officer, e, "instruct_transfer", deposits)
    e = moved_to(e, S.TRANSFERRING)
    act(client, w.agency_officer, e, "confirm_deposit",
        {f"t{t.pk}_txid": f"tx-{t.reference}" for t in e.transfers.filter(kind="to_platform")})
    e = moved_to(e, S.AT_PLATFORM)

    for lot in lots:
        act(client, w.agency_officer, e, "inquiry_open", target=lot)
        e = reload(e)
        reserve = lot.current_reserve().price
        now = timezone.now()
        for platform, premium in ((w.osl, 100), (w.hashkey, 50)):
            act(client, w.agency_officer, e, "quote_record", {
                "platform": platform.pk, "reference": f"{platform.code}-{lot.pk}", "price": str(reserve + premium),
                "quantity": plain_amount(lot.asset, lot.quantity), "quoted_at": local(now),
                "expires_at": local(now + timedelta(seconds=30))}, target=lot)
        act(client, w.agency_officer, e, "inquiry_close", target=lot)
        lot.refresh_from_db()
        assert lot.state == LotState.AWARD_PENDING
        act(client, w.bce_approver, e, "award_approve", target=lot)
        lot.refresh_from_db()
        assert lot.state == LotState.EXECUTING
        price = reserve + 100
        gross = (Decimal(lot.quantity) / lot.asset.unit * price).quantize(Decimal("0.01"))
        act(client, w.agency_officer, e, "execution_record", {
            "f1_trade_id": f"T{lot.pk}", "f1_quantity": plain_amount(lot.asset, lot.quantity), "f1_price": str(price),
            "f1_gross": str(gross), "f1_fee": str((gross * Decimal("0.001")).quantize(Decimal("0.01"))),
            "f1_executed_at": local(now)}, target=lot)
        lot.refresh_from_db()
        assert lot.state == LotState.EXECUTED
    e = moved_to(e, S.SOLD)
    assert transitions_to(e, S.SELLING) == 1

    from cases.models import net_proceeds_by_currency

    net = net_proceeds_by_currency(e)["USD"]
    act(client, w.agency_officer, e, "offshore_receipt", {
        "bank": w.hk_bank.pk, "currency": "USD", "amount": str(net), "bank_reference": "HKB-1",
        "value_date": timezone.localdate().isoformat()})
    e = moved_to(e, S.PROCEEDS_RECEIVED)
    rate = Decimal("7.1234")
    cny = (net * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    fx = {"currency": "USD", "approval_reference": "SAFE-1", "bop_declaration_no": "BOP-1", "rate": str(rate),
          "amount_cny": str(cny), "slip_reference": "FX-SLIP-1"}
    # FX is recorded only for an FX application the agency's approver approved: refused (and said why) before.
    refused = act(client, w.agency_officer, e, "fx_approval", fx, expect=400)
    assert "FX application is not approved" in " ".join(errors_in(refused))
    assert "fx_application_approve" not in offered(client, w.agency_officer, e)
    act(client, w.agency_approver, e, "fx_application_approve", {"reason": "Amounts match the bank's advice."})
    assert "fx_application_approve" not in offered(client, w.agency_approver, e)  # approved: nothing left
    assert reload(e).state == S.PROCEEDS_RECEIVED
    act(client, w.agency_officer, e, "fx_approval", fx)
    e = moved_to(e, S.FX_CLEARED)
    act(client, w.shunyi_officer, e, "special_account_credit", {"amount_cny": str(cny), "slip_reference": "CR-1"})
    e = moved_to(e, S.CREDITED)
    assert e.sla_stopped_at is not None
    act(client, w.shunyi_officer, e, "remittance_prepare", {"payment_code": f"{e.pk:020d}"})
    act(client, w.shunyi_approver, e, "remittance_approve", {"treasury_receipt": "TR-1"})
    e = moved_to(e, S.REMITTED)
    act(client, w.bce_approver, e, "close", {"reason": "Every coin and yuan accounted for."})
    e = moved_to(e, S.CLOSED)

    page = open_page(client, w.supervisor, e)
    assert items_of(page) == []
    html = page.content.decode()
    assert "All amounts reconcile." in html and "Every coin and yuan accounted for." in html


# --------------------------------------------------------------------------- who sees which actions


@security
def test_each_persona_sees_only_the_actions_it_may_take(client, world, flow):
    e = flow.to("submitted")
    assert "accept" not in offered(client, world.shunyi_officer, e)
    assert offered(client, world.shunyi_officer, e) == {"evidence_add"}
    assert {"accept", "return", "refuse"} <= offered(client, world.bce_approver, e)
    assert "accept" not in offered(client, world.bce_officer, e)  # an officer returns, an approver accepts
    assert "return" in offered(client, world.bce_officer, e)
    assert offered(client, world.supervisor, e) == set()
    assert "cancel" in offered(client, world.shunyi_approver, e)


@security
def test_a_supervisor_sees_no_action_in_any_state_and_the_page_says_so(client, world, flow):
    for state in ("draft", "bonded", "selling"):
        e = flow.to(state)
        response = open_page(client, world.supervisor, e)
        assert items_of(response) == []
        assert "Nothing for you to do on this entrustment now." in response.content.decode()


@security
def test_an_agency_sees_404_on_another_agencys_entrustment(client, world, flow):
    e = flow.to("bonded")
    sign_in(client, world.agency_b_officer)
    assert client.get(reverse("entrustment-detail", args=[e.pk])).status_code == 404
    post = client.post(reverse("entrustment-action", args=[e.pk, "record_detection"]),
                       {"state_token": actions.state_token(e)})
    assert post.status_code == 404
    lot_flow = Flow(world, case_number="顺公立字〔2025〕500号")
    lot = lot_flow.to("reserve_set").lots.first()
    assert client.post(reverse("lot-action", args=[lot.pk, "inquiry_open"])).status_code == 404
    assert reload(e).state == S.BONDED


@security
def test_posting_an_action_that_is_not_offered_is_refused_and_changes_nothing(client, world, flow):
    e = flow.to("submitted")
    before = Event.objects.count()
    token = {"state_token": actions.state_token(e)}
    for user in (world.shunyi_officer, world.bce_officer, world.supervisor):
        sign_in(client, user)
        response = client.post(reverse("entrustment-action", args=[e.pk, "accept"]), token)
        assert response.status_code == 403, user.username
        assert "is not open to you" in response.content.decode()
    sign_in(client, world.bce_approver)
    assert client.post(reverse("entrustment-action", args=[e.pk, "close"]), token).status_code == 403
    assert client.post(reverse("entrustment-action", args=[e.pk, "no_such_action"]), token).status_code == 404
    assert client.post(reverse("entrustment-action", args=[e.pk, "reserve_approve"]), token).status_code == 404
    assert client.get(reverse("entrustment-action", args=[e.pk, "accept"])).status_code == 405
    assert reload(e).state == S.SUBMITTED and Event.objects.count() == before


@security
def test_the_preparer_is_not_offered_the_approval_of_their_own_work(client, world, flow):
    from agencies.models import Membership, Role

    # One person who is both an officer and an approver of BCE: they may propose, or approve, not both.
    Membership.objects.create(user=world.bce_approver_2, organisation=world.bce, role=Role.OFFICER)
    e = flow.to("in_custody")
    services.lots_plan(actor=world.bce_officer, entrustment=e,
                       fee_allowances={flow.asset(s).pk: FEE[s] for s, _ in flow.holdings_spec})
    lot = e.lots.order_by("sequence").first()
    prices = REFERENCE_PRICES[lot.asset.symbol]
    services.reserve_propose(actor=world.bce_approver_2, lot=lot, price=max(prices),
                             inputs={"reference_prices": prices, "source": "Bitstamp"})
    assert "reserve_approve" not in offered(client, world.bce_approver_2, e)
    assert "reserve_approve" in offered(client, world.bce_approver, e)


# --------------------------------------------------------------------------- forms and errors


def test_a_bad_amount_keeps_what_was_typed_and_says_why_at_the_field(client, world, flow):
    e = flow.to("detected")
    h = e.holdings.select_related("asset").get(asset__symbol="BTC")
    data = {}
    for holding in e.holdings.select_related("asset"):
        data |= {f"h{holding.pk}_to_address": demo_address(holding.asset.address_format, "custody"),
                 f"h{holding.pk}_amount": "1", f"h{holding.pk}_network_fee": "0",
                 f"h{holding.pk}_txid": f"tx-{holding.pk}"}
    data[f"h{h.pk}_amount"] = "1.123456789"  # nine decimals: BTC has eight
    response = act(client, world.agency_officer, e, "custody_receive", data, expect=400)
    html = response.content.decode()
    assert 'value="1.123456789"' in html
    assert "BTC has 8 decimals; this amount has more." in html
    item = find(response, "custody_receive")
    assert item.open and item.form.errors[f"h{h.pk}_amount"]
    assert reload(e).state == S.DETECTED and not e.transfers.exists()


def test_a_service_refusal_lands_on_its_field(client, world, flow):
    e = flow.to("agency_appointed")
    response = act(client, world.bce_officer, e, "post_bond", {"posted_cny": "100.00", "reference": "BG-LOW"},
                   expect=400)
    form = find(response, "post_bond").form
    assert "CNY is missing" in " ".join(form.errors["posted_cny"])
    assert 'value="BG-LOW"' in response.content.decode()
    assert reload(e).state == S.AGENCY_APPOINTED


def test_a_missing_reason_is_a_field_error_not_an_exception(client, world, flow):
    e = flow.to("submitted")
    response = act(client, world.bce_approver, e, "refuse", {"reason": ""}, expect=400)
    assert find(response, "refuse").form.errors["reason"]
    assert reload(e).state == S.SUBMITTED


def test_a_domain_refusal_becomes_a_message_above_the_form(client, world, flow):
    draft = flow.to("draft")
    draft.case.legal_basis = ""
    draft.case.save()
    response = act(client, world.shunyi_approver, draft, "submit", expect=400)
    assert "No legal basis for disposal is recorded." in " ".join(find(response, "submit").form.non_field_errors())
    assert reload(draft).state == S.DRAFT


def test_an_htmx_post_with_errors_gets_only_the_actions_box_back(client, world, flow):
    e = flow.to("submitted")
    response = act(client, world.bce_approver, e, "refuse", {"reason": "  "}, expect=400, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html and 'id="action-refuse"' in html and "errorlist" in html


def test_an_htmx_post_that_succeeds_is_told_where_to_go(client, world, flow):
    e = flow.to("submitted")
    response = act(client, world.bce_approver, e, "accept", expect=200, HTTP_HX_REQUEST="true")
    assert response["HX-Redirect"] == reverse("entrustment-detail", args=[e.pk])
    assert reload(e).state == S.ACCEPTED


# --------------------------------------------------------------------------- double submits and stale pages


def test_a_double_submit_happens_once_and_the_second_says_what_happened(client, world, flow):
    e = flow.to("submitted")
    item = find(open_page(client, world.bce_approver, e), "accept")
    payload = {"state_token": item.state_token, "record_token": item.record_token, "reason": ""}
    assert client.post(item.url, payload).status_code == 302
    second = client.post(item.url, payload)
    assert second.status_code == 409
    html = second.content.decode()
    assert "This entrustment changed since you opened the page: it is now “Accepted by BCE”" in html
    assert "changed by bce_approver" in html and "Nothing was done; please review." in html
    assert transitions_to(e, S.ACCEPTED) == 1


def test_a_stale_page_after_a_colleague_acted_is_refused_with_their_name(client, world, flow):
    e = flow.to("submitted")
    approver_item = find(open_page(client, world.bce_approver, e), "accept")
    act(client, world.bce_officer, e, "return", {"reason": "The seizure list is missing."})
    sign_in(client, world.bce_approver)
    response = client.post(approver_item.url, {"state_token": approver_item.state_token,
                                               "record_token": approver_item.record_token})
    assert response.status_code == 409
    html = response.content.decode()
    assert "it is now “Returned for correction”, changed by bce_officer" in html
    assert reload(e).state == S.RETURNED and transitions_to(e, S.ACCEPTED) == 0


def test_a_stale_htmx_post_gets_the_message_in_the_actions_box(client, world, flow):
    e = flow.to("submitted")
    item = find(open_page(client, world.bce_approver, e), "accept")
    payload = {"state_token": item.state_token, "record_token": item.record_token}
    client.post(item.url, payload)
    response = client.post(item.url, payload, HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    html = response.content.decode()
    assert "<html" not in html and 'id="action-accept"' in html and "Nothing was done" in html


def test_a_double_submitted_quote_is_recorded_once(client, world, flow):
    e = flow.to("selling")
    lot = e.lots.order_by("sequence").first()
    item = find(open_page(client, world.agency_officer, e), "quote_record", lot)
    now = timezone.now()
    payload = {"state_token": item.state_token, "record_token": item.record_token, "platform": world.osl.pk,
               "reference": "Q-1", "price": "70000", "quantity": plain_amount(lot.asset, lot.quantity),
               "quoted_at": local(now), "expires_at": local(now + timedelta(seconds=30))}
    assert client.post(item.url, payload).status_code == 302
    second = client.post(item.url, payload)
    assert second.status_code == 409
    assert "record changed since you opened the page: Quote recorded by agency_officer" in second.content.decode()
    assert lot.rounds.get().quotes.count() == 1


def test_a_double_submitted_return_to_victims_is_prepared_once(client, world, flow):
    e = flow.to("credited")
    item = find(open_page(client, world.shunyi_officer, e), "victim_return_prepare")
    payload = {"state_token": item.state_token, "record_token": item.record_token, "recipient": "张三",
               "recipient_account": "6222000011112222", "amount_cny": "1000.00", "basis": "判决第二项"}
    assert client.post(item.url, payload).status_code == 302
    assert client.post(item.url, payload).status_code == 409
    assert VictimReturn.objects.filter(entrustment=e).count() == 1
    victim_return = VictimReturn.objects.get(entrustment=e)
    assert "victim_return_approve" not in offered(client, world.shunyi_officer, e)
    act(client, world.shunyi_approver, e, "victim_return_approve", target=victim_return)
    victim_return.refresh_from_db()
    assert victim_return.approved_at is not None


def test_a_lot_changed_by_someone_else_is_named_in_the_refusal(client, world, flow):
    e = flow.to("selling")
    lot = e.lots.order_by("sequence").first()
    stale = find(open_page(client, world.agency_officer, e), "inquiry_close", lot)
    services.lot_suspend(actor=world.bce_officer, lot=lot, reason="Flash crash")
    sign_in(client, world.agency_officer)
    response = client.post(stale.url, {"state_token": stale.state_token, "record_token": stale.record_token})
    assert response.status_code == 409
    assert f"Lot {lot.sequence} changed since you opened the page: it is now “Market suspension”, changed by " \
           "bce_officer" in response.content.decode()


def test_a_post_without_the_page_token_does_nothing(client, world, flow):
    e = flow.to("submitted")
    sign_in(client, world.bce_approver)
    response = client.post(reverse("entrustment-action", args=[e.pk, "accept"]), {})
    assert response.status_code == 400
    assert reload(e).state == S.SUBMITTED


# --------------------------------------------------------------------------- what the page shows


def test_award_approval_shows_the_quote_comparison_against_the_reserve(client, world, flow):
    e = flow.to("selling")
    lot = e.lots.order_by("sequence").first()
    reserve = lot.current_reserve().price
    flow.quote(lot, world.osl, reserve + 100, "osl-best")
    flow.quote(lot, world.hashkey, reserve + 10, "hk-second")
    services.inquiry_close(actor=world.agency_officer, lot=lot)
    response = open_page(client, world.bce_approver, e)
    item = find(response, "award_approve", lot)
    assert item is not None
    html = response.content.decode()
    section = html[html.index('id="action-award_approve'):]
    section = section[:section.index("</section>")]
    for text in ("osl-best", "hk-second", "OSL", "HashKey", str(reserve), "Best quote", "60000", "61000", "62000",
                 "Bitstamp daily close"):
        assert text in section, text
    assert section.index("osl-best") < section.index("hk-second")
    assert item.form.best.reference == "osl-best"


def test_the_page_shows_lifecycle_clock_timeline_and_counterparty_record(client, world, flow):
    e = flow.to("at_platform")
    response = open_page(client, world.shunyi_officer, e)
    html = response.content.decode()
    steps = response.context["steps"]["steps"]
    assert [s["current"] for s in steps].index(True) == 9  # at_platform on the main path
    assert 'aria-current="step"' in html
    assert response.context["sla"]["status"] == "running" and "left, deadline" in html
    assert "tx-" in html and f"{e.number}-P1" in html  # the transfer references
    assert "2.49998000" in html  # BTC to custody, in the asset's precision
    timeline = response.context["timeline"]
    kinds = {t["kind"] for t in timeline}
    assert kinds == {"event", "history"}
    assert any(t["to"] == "At HK platform, cleared" and t["who"] == "agency_officer" for t in timeline)


def test_the_clock_warns_before_the_deadline_and_shows_a_breach(client, world, flow):
    e = flow.to("detected")
    Entrustment.objects.filter(pk=e.pk).update(sla_started_at=timezone.now() - timedelta(hours=21))
    response = open_page(client, world.shunyi_officer, e)
    assert response.context["sla"]["status"] == "warning" and "WARNING" in response.content.decode()
    Entrustment.objects.filter(pk=e.pk).update(sla_started_at=timezone.now() - timedelta(hours=30))
    response = open_page(client, world.shunyi_officer, e)
    assert response.context["sla"]["status"] == "breached" and "BREACHED" in response.content.decode()


def test_an_exception_state_is_shown_as_a_badge_on_the_step_it_belongs_to(client, world, flow):
    e = flow.to("submitted")
    act(client, world.bce_officer, e, "return", {"reason": "Seizure list missing."})
    response = open_page(client, world.shunyi_officer, reload(e))
    assert response.context["steps"]["exception"] == "Returned for correction"
    assert "Exception: Returned for correction" in response.content.decode()
    assert [s["label"] for s in response.context["steps"]["steps"] if s["current"]] == ["Entrusted, awaiting BCE"]


# --------------------------------------------------------------------------- exception paths through the page


def test_cancel_and_dispute_are_taken_from_the_page(client, world, flow):
    e = flow.to("bonded")
    act(client, world.shunyi_approver, e, "open_dispute", {"reason": "The owner contests the seizure."})
    e = moved_to(e, S.DISPUTED)
    act(client, world.bce_approver, e, "resolve_dispute", {"reason": "Court ruling upheld."})
    e = moved_to(e, S.BONDED)
    act(client, world.shunyi_approver, e, "cancel", {"reason": "Withdrawn by the bureau."})
    moved_to(e, S.CANCELLED)


def test_a_failed_round_then_exhausted_lot_through_the_page(client, world):
    world.policy.max_failed_rounds = 1
    world.policy.save()
    flow = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕502号")
    e = flow.to("selling")
    lot = e.lots.get()
    reserve = lot.current_reserve().price
    flow.quote(lot, world.osl, reserve - 1, "osl-low")
    flow.quote(lot, world.hashkey, reserve - 2, "hk-low")
    act(client, world.agency_officer, e, "inquiry_close", target=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.NO_DEAL
    assert "reserve_propose" not in offered(client, world.bce_officer, e)  # no rounds left under the policy
    act(client, world.bce_approver, e, "lot_exhaust", {"reason": "Unsold after the last round."}, target=lot)
    moved_to(e, S.TERMINATED)


def test_an_order_the_platform_did_not_carry_out_is_recorded_from_the_page_and_the_lot_is_offered_again(
        client, world):
    flow = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕503号")
    e = flow.to("selling")
    lot = e.lots.get()
    reserve = lot.current_reserve().price
    flow.quote(lot, world.osl, reserve + 2, "osl-ok")
    flow.quote(lot, world.hashkey, reserve + 1, "hk-ok")
    act(client, world.agency_officer, e, "inquiry_close", target=lot)
    services.award_approve(actor=world.bce_approver, lot=lot)
    assert "execution_fail" not in offered(client, world.bce_officer, e)
    act(client, world.agency_officer, e, "execution_fail", {"reason": "OSL: quote expired before acceptance."},
        target=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.RESERVE_SET
    assert "inquiry_open" in offered(client, world.agency_officer, e)


def test_fx_rejection_and_resubmission_through_the_page(client, world, flow):
    e = flow.to("proceeds_received")
    act(client, world.agency_officer, e, "fx_rejection", {"currency": "USD", "reason": "Missing BoP form."})
    e = moved_to(e, S.FX_REJECTED)
    act(client, world.agency_officer, e, "fx_resubmit", {"reason": "BoP form added."})
    moved_to(e, S.PROCEEDS_RECEIVED)


# --------------------------------------------------------------------------- evidence


def upload(client, user, entrustment, name, content, expect, kind="detection"):
    return act(client, user, entrustment, "evidence_add", {"kind": kind, "description": "recording"},
               files={"file": SimpleUploadedFile(name, content)}, expect=expect)


def test_evidence_is_uploaded_from_the_page_and_its_sha256_shown(client, world, flow):
    import hashlib

    e = flow.to("bonded")
    response = upload(client, world.agency_officer, e, "detection.pdf", PDF, 302)
    digest = hashlib.sha256(PDF).hexdigest()
    page = client.get(response["Location"])
    html = page.content.decode()
    assert f"SHA-256: {digest}" in html  # the message after the upload
    assert html.count(digest) >= 2  # and the list
    assert EvidenceFile.objects.get(entrustment=e).sha256 == digest


@security
def test_an_executable_is_refused_whatever_its_name(client, world, flow):
    e = flow.to("bonded")
    exe = b"MZ\x90\x00" + b"\x00" * 60
    response = upload(client, world.agency_officer, e, "tool.exe", exe, 400)
    assert "only PDF, JPEG, PNG, MP4, MP3 and ZIP files may be uploaded" in response.content.decode()
    response = upload(client, world.agency_officer, e, "report.pdf", exe, 400)
    assert "is named as a PDF file but its content is not PDF" in response.content.decode()
    response = upload(client, world.agency_officer, e, "photo.pdf", PNG, 400)
    assert "its content is not PDF (PNG)" in response.content.decode()
    assert not EvidenceFile.objects.exists()


@security
def test_an_oversized_file_is_refused_with_the_limit(client, world, flow, settings):
    settings.EVIDENCE_MAX_BYTES = 100
    e = flow.to("bonded")
    response = upload(client, world.shunyi_officer, e, "scan.png", PNG + b"\x00" * 200, 400)
    assert "the limit is 100" in response.content.decode()
    assert not EvidenceFile.objects.exists()
    upload(client, world.shunyi_officer, e, "small.png", PNG, 302)


# --------------------------------------------------------------------------- query count


def queries_for_page(client, user, entrustment) -> int:
    sign_in(client, user)
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(reverse("entrustment-detail", args=[entrustment.pk])).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("state, persona", [("bonded", "agency_officer"), ("detected", "agency_officer"),
                                            ("selling", "agency_officer"), ("credited", "shunyi_officer")])
def test_the_page_needs_the_same_queries_for_2_or_20_holdings(client, world, state, persona):
    small = Flow(world, holdings=(("BTC", "0.5"), ("BTC", "0.25")), case_number="顺公立字〔2025〕600号")
    large = Flow(world, holdings=(("BTC", "0.5"),) * 20, case_number="顺公立字〔2025〕601号")
    user = getattr(world, persona)
    with_two = queries_for_page(client, user, small.to(state))
    with_twenty = queries_for_page(client, user, large.to(state))
    assert with_two == with_twenty
    assert with_twenty <= 50


def test_the_page_needs_the_same_queries_for_few_or_many_events(client, world, flow, django_assert_max_num_queries):
    e = flow.to("bonded")
    few = queries_for_page(client, world.agency_officer, e)
    for n in range(20):
        services.evidence_add(actor=world.agency_officer, case=e.case, kind="recording", entrustment=e,
                              upload=SimpleUploadedFile(f"r{n}.mp3", b"ID3" + bytes([n]) * 32))
    assert queries_for_page(client, world.agency_officer, e) == few
    sign_in(client, world.agency_officer)
    with django_assert_max_num_queries(50):
        client.get(reverse("entrustment-detail", args=[e.pk]))


def test_a_detection_mismatch_is_accepted_by_the_bureaus_approver_from_the_page(client, world, flow):
    e = flow.to("bonded")
    data = {"witness": world.witness.pk}
    for h in e.holdings.select_related("asset"):
        observed = h.declared_amount - (1 if h.asset.symbol == "BTC" else 0)
        data |= {f"h{h.pk}_observed": plain_amount(h.asset, observed), f"h{h.pk}_block_height": "900001",
                 f"h{h.pk}_controlled": "on"}
    act(client, world.agency_officer, e, "record_detection", data)
    e = moved_to(e, S.DETECTION_MISMATCH)
    assert "accept_observed" not in offered(client, world.shunyi_officer, e)
    act(client, world.shunyi_approver, e, "accept_observed", {"reason": "One satoshi of dust spent before seizure."})
    e = moved_to(e, S.DETECTED)
    btc = e.holdings.get(asset__symbol="BTC")
    assert btc.accepted_amount == btc.declared_amount - 1


def test_aml_hold_then_clearance_and_a_failed_transfer_instructed_again(client, world, flow):
    e = flow.to("transferring")
    act(client, world.agency_officer, e, "aml_hold", {"reason": "Travel Rule data requested."})
    e = moved_to(e, S.AML_HOLD)
    act(client, world.agency_officer, e, "confirm_deposit",
        {f"t{t.pk}_txid": f"tx-{t.reference}" for t in e.transfers.filter(kind="to_platform")})
    moved_to(e, S.AT_PLATFORM)

    other = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕503号")
    e = other.to("transferring")
    act(client, world.agency_officer, e, "transfer_failed", {"reason": "Address not whitelisted."})
    e = moved_to(e, S.TRANSFER_FAILED)
    btc = world.btc
    act(client, world.agency_officer, e, "instruct_transfer", {
        "platform": world.hashkey.pk, f"a{btc.pk}_to_address": demo_address("btc", "hashkey-BTC"),
        f"a{btc.pk}_amount": plain_amount(btc, custody_balance(e, btc) - FEE["BTC"]),
        f"a{btc.pk}_network_fee": plain_amount(btc, FEE["BTC"])})
    e = moved_to(e, S.TRANSFERRING)
    assert e.platform == world.hashkey


def test_agency_default_reopen_and_a_new_appointment_from_the_page(client, world, flow):
    e = flow.to("detected")
    act(client, world.bce_approver, e, "declare_default", {"reason": "The agency stopped answering."})
    e = moved_to(e, S.AGENCY_DEFAULT)
    act(client, world.bce_approver, e, "reopen_after_default", {"reason": "A new agency will be appointed."})
    e = moved_to(e, S.ACCEPTED)
    act(client, world.bce_officer, e, "appoint_agency", {
        "agency": world.agency_b.pk, "valuation_cny": "10000000.00", "valuation_source": "CMC",
        "qualification_note": "Licensed", "capacity_note": "HSM", "conflicts_declared": "none"})
    assert moved_to(e, S.AGENCY_APPOINTED).agency == world.agency_b


def test_after_a_failed_round_a_cut_reserve_is_proposed_and_approved_from_the_page(client, world):
    flow = Flow(world, holdings=(("BTC", "2.5"),), case_number="顺公立字〔2025〕504号")
    e = flow.to("selling")
    lot = e.lots.get()
    previous = lot.current_reserve().price
    flow.quote(lot, world.osl, previous - 1, "osl-low")
    flow.quote(lot, world.hashkey, previous - 2, "hk-low")
    act(client, world.agency_officer, e, "inquiry_close", target=lot)
    too_deep = act(client, world.bce_officer, e, "reserve_propose", {"price": str(previous / 2)}, target=lot,
                   expect=400)
    assert "may be cut by at most 20%" in " ".join(find(too_deep, "reserve_propose", lot).form.errors["price"])
    act(client, world.bce_officer, e, "reserve_propose", {"price": str(previous * Decimal("0.9"))}, target=lot)
    act(client, world.bce_approver, e, "reserve_approve", target=lot)
    lot.refresh_from_db()
    assert lot.state == LotState.RESERVE_SET and lot.current_reserve().round_no == 2


def test_every_service_a_person_performs_on_an_entrustment_is_an_action_of_the_page():
    import inspect

    from settlements import services as money

    intake = {"case_register", "case_record_legal_basis", "holding_register", "entrustment_create"}
    # Steps the workers take from a counterparty's answer; a person records the same facts through the
    # manual actions (the deposit's txids on confirmation, the treasury receipt on the remittance approval).
    intake |= {"transfer_record_broadcast", "remittance_confirm"}
    wired = {a.service for a in actions.ACTIONS}
    for module in (services, money):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            parameters = inspect.signature(function).parameters
            public = function.__module__ == module.__name__ and not name.startswith("_")
            if public and "actor" in parameters and name not in intake:
                assert function in wired, f"{module.__name__}.{name} has no action on the page"
