"""One case from intake to closed in Chromium, each step taken by the right person in their own browser.

Six people sign in through the login page, each in a separate browser context with a
Chinese (zh-CN) locale: the bureau's officer and approver, BCE's officer and approver, and the
service agency's officer and approver. The officer registers the case, its legal basis and two holdings and
drafts the entrustment; from then on every step is taken on the entrustment page by opening the
action's box and submitting its form (through htmx, as people do). The live server shares the
test database, so each step is checked against the entrustment's state there. A full-page
screenshot per step goes to test-artifacts/browser/.

Elements are found by URL, form action, field name and id, never by their (translated) text.
"""

import contextlib
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from cases.demo import demo_address
from cases.forms import plain_amount
from cases.models import (Case, Entrustment, EntrustmentState, Event, EventType, Lot, LotState, WhitelistedAddress,
                          WhitelistPurpose, WhitelistState, net_proceeds_by_currency)
from cases.services import custody_balance
from documents.models import Document

from .browser_helpers import ARTIFACTS, PASSWORD, Board, Camera, Person, chromium
from .factories import World
from .flow import FEE, REFERENCE_PRICES, Flow

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
S = EntrustmentState
CASE_NUMBER = "顺公立字〔2025〕900号"


@pytest.fixture(scope="module", autouse=True)
def fresh_artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()


@pytest.fixture
def portal(live_server, settings, tmp_path, monkeypatch):
    """The World with real passwords, and a Chromium to drive the live server."""
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls between browser
    # steps are plain synchronous reads (the live server, which does the writes, runs in its own thread).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    world = World()
    # Development signing keys for the World's organisations, so every step's document is issued and listed.
    settings.DOCUMENT_PKI_DIR, settings.DOCUMENT_TRUST_ROOTS = tmp_path / "pki", []
    call_command("make_dev_pki", dir=str(settings.DOCUMENT_PKI_DIR))
    for user in (world.shunyi_officer, world.shunyi_approver, world.bce_officer, world.bce_approver,
                 world.agency_officer, world.agency_approver):
        user.set_password(PASSWORD)
        user.save()
    board = Board()
    with contextlib.ExitStack() as stack:
        browser, people = [], []

        def person(user):
            """`user`, signed in, in a new browser context. Chromium starts with the first person, so the
            services a test runs itself before that (Flow) run outside Playwright's event loop."""
            if not browser:
                browser.append(stack.enter_context(chromium()))
            people.append(Person(browser[0], live_server.url, user, board).login())
            return people[-1]

        yield world, person, board
        for p in people:
            p.close()
    assert board.server_errors == [], board.server_errors
    assert board.missing == [], board.missing
    assert board.js_errors == [], board.js_errors


def reload(e) -> Entrustment:
    return Entrustment.objects.get(pk=e.pk)


def in_state(e, state) -> Entrustment:
    e = reload(e)
    assert e.state == state, (e.state, state)
    assert Event.objects.filter(entrustment=e, type=EventType.TRANSITION, to_state=state).exists()
    return e


def local(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M:%S")


# --------------------------------------------------------------------------- intake to closed


def test_a_case_goes_from_intake_to_closed_in_the_browser(portal):
    w, person, board = portal
    camera = Camera()
    officer = person(w.shunyi_officer)
    camera.shoot(officer.page, "officer-signed-in")

    # --- intake, by the bureau's officer
    officer.goto(officer.url("case-intake"))
    form = officer.page.locator("main form[method=post]")
    officer.submit_page_form(form, {
        "bureau": w.shunyi.pk, "case_number": CASE_NUMBER, "title": "网络传销案", "seized_at": "2025-06-01T16:00",
        "seizure_decision_no": "顺扣〔2025〕900号", "custodian": "涉案财物管理中心"})
    case = Case.objects.get(case_number=CASE_NUMBER)
    assert officer.page.url.endswith(reverse("case-detail", args=[case.pk]))
    assert case.bureau == w.shunyi and case.created_by == w.shunyi_officer
    camera.shoot(officer.page, "case-registered")

    officer.goto(officer.url("case-basis", case.pk))
    officer.submit_page_form(officer.page.locator("main form[method=post]"), {
        "kind": "confiscation", "document_no": "顺没〔2025〕900号", "basis_date": "2025-06-02",
        "authority": "顺义分局"})
    case.refresh_from_db()
    assert case.legal_basis == "confiscation" and case.basis_document_no == "顺没〔2025〕900号"
    camera.shoot(officer.page, "legal-basis-recorded")

    btc_address, eth_address = demo_address("btc", "browser-btc"), demo_address("evm", "browser-eth")
    officer.goto(officer.url("case-holdings", case.pk))
    officer.submit_page_form(officer.page.locator("main form[method=post]"), {
        "asset": w.btc.pk, "address": btc_address, "amount": "2.5", "location": "硬件钱包 HW-1"},
        button="button[name=another]")
    assert officer.page.url.endswith(reverse("case-holdings", args=[case.pk]))  # "register and add another"
    officer.submit_page_form(officer.page.locator("main form[method=post]"), {
        "asset": w.eth.pk, "address": eth_address, "amount": "10", "location": "硬件钱包 HW-2"})
    holdings = {h.asset.symbol: h for h in case.holdings.select_related("asset")}
    assert holdings["BTC"].declared_amount == 250_000_000 and holdings["ETH"].declared_amount == 10 * 10**18
    expect(officer.page.locator("#holdings tr.holding")).to_have_count(2)
    camera.shoot(officer.page, "holdings-registered")

    officer.goto(officer.url("case-entrust", case.pk))
    form = officer.page.locator("main form[method=post]")
    for h in holdings.values():
        form.locator(f"input[name=holdings][value='{h.pk}']").check()
    officer.submit_page_form(form, {"bce": w.bce.pk})
    e = Entrustment.objects.get(case=case)
    assert officer.page.url.endswith(reverse("entrustment-detail", args=[e.pk]))
    assert set(e.holdings.all()) == set(holdings.values()) and e.bce == w.bce
    assert e.state == S.DRAFT
    assert officer.page.evaluate("() => typeof window.htmx") == "object"  # the page's forms go through htmx
    camera.shoot(officer.page, "entrustment-drafted")

    # --- the other four people sign in (the agency's approver when the FX application is due)
    bureau_approver = person(w.shunyi_approver)
    bce_approver = person(w.bce_approver)
    bce_officer = person(w.bce_officer)
    agency = person(w.agency_officer)

    def step(who, key, values=None, *, lot=None, state=None, name=None):
        who.act(e, key, values, lot=lot)
        camera.shoot(who.page, name or key)
        return in_state(e, state) if state else reload(e)

    e = step(bureau_approver, "submit", state=S.SUBMITTED)
    e = step(bce_approver, "accept", {"reason": "材料齐全。"}, state=S.ACCEPTED)
    e = step(bce_officer, "appoint_agency", {
        "agency": w.agency.pk, "valuation_cny": "10,000,000.00", "valuation_source": "CMC 30-day average",
        "qualification_note": "持牌托管机构", "capacity_note": "HSM custody", "conflicts_declared": "无"},
        state=S.AGENCY_APPOINTED)
    assert e.agency == w.agency
    e = step(bce_officer, "post_bond", {"posted_cny": "11000000.00", "reference": "BG-2025-900"}, state=S.BONDED)

    def whitelist(asset, address, purpose, platform=None):
        """The agency's officer proposes one of its addresses on the page; BCE's approver approves it there."""
        values = {"asset": asset.pk, "address": address, "purpose": purpose}
        step(agency, "whitelist_propose", values | ({"platform": platform.pk} if platform else {}),
             name=f"whitelist-propose-{asset.symbol}-{purpose}")
        entry = WhitelistedAddress.objects.get(organisation=w.agency, asset=asset, address=address, purpose=purpose,
                                               state=WhitelistState.PROPOSED)
        step(bce_approver, "whitelist_approve", {"entry": entry.pk}, name=f"whitelist-approve-{asset.symbol}-{purpose}")
        entry.refresh_from_db()
        assert entry.state == WhitelistState.APPROVED  # the test policy has no cooling period

    held = list(e.holdings.select_related("asset").order_by("asset__symbol"))
    # Coins go only to whitelisted addresses: the agency's vaults first.
    for h in held:
        whitelist(h.asset, demo_address(h.asset.address_format, f"custody-{h.asset.symbol}"), WhitelistPurpose.CUSTODY)
    detection = {"witness": w.witness.pk}
    for h in held:
        detection |= {f"h{h.pk}_observed": plain_amount(h.asset, h.declared_amount),
                      f"h{h.pk}_block_height": "900000", f"h{h.pk}_controlled": True}
    e = step(agency, "record_detection", detection, state=S.DETECTED)
    assert e.sla_started_at is not None

    custody = {}
    for h in held:
        fee = FEE[h.asset.symbol]
        custody |= {f"h{h.pk}_to_address": demo_address(h.asset.address_format, f"custody-{h.asset.symbol}"),
                    f"h{h.pk}_amount": plain_amount(h.asset, h.declared_amount - fee),
                    f"h{h.pk}_network_fee": plain_amount(h.asset, fee), f"h{h.pk}_txid": f"tx-custody-{h.pk}"}
    e = step(agency, "custody_receive", custody, name="custody-receive", state=S.IN_CUSTODY)

    assets = [w.btc, w.eth]
    step(bce_officer, "lots_plan", {f"a{a.pk}_fee_allowance": plain_amount(a, FEE[a.symbol]) for a in assets})
    lots = list(Lot.objects.filter(entrustment=e).select_related("asset").order_by("sequence"))
    assert [lot.asset.symbol for lot in lots] == ["BTC", "ETH"]
    for lot in lots:
        prices = REFERENCE_PRICES[lot.asset.symbol]
        step(bce_officer, "reserve_propose", {
            "price": max(prices, key=Decimal), "reference_prices": "\n".join(prices),
            "source": "Bitstamp daily close", "window": "the 3 trading days before the trade date"},
            lot=lot, name=f"reserve-propose-{lot.asset.symbol}")
    for lot in lots:
        step(bce_approver, "reserve_approve", lot=lot, name=f"reserve-approve-{lot.asset.symbol}")
        lot.refresh_from_db()
        assert lot.state == LotState.RESERVE_SET
    e = in_state(e, S.RESERVE_SET)

    for a in assets:  # and the agency's deposit addresses at OSL
        whitelist(a, demo_address(a.address_format, f"osl-{a.symbol}"), WhitelistPurpose.PLATFORM_DEPOSIT, w.osl)
    deposits = {"platform": w.osl.pk}
    for a in assets:
        fee = FEE[a.symbol]
        deposits |= {f"a{a.pk}_to_address": demo_address(a.address_format, f"osl-{a.symbol}"),
                     f"a{a.pk}_amount": plain_amount(a, custody_balance(e, a) - fee),
                     f"a{a.pk}_network_fee": plain_amount(a, fee)}
    e = step(agency, "instruct_transfer", deposits, state=S.TRANSFERRING)
    e = step(agency, "confirm_deposit",
             {f"t{t.pk}_txid": f"tx-{t.reference}" for t in e.transfers.filter(kind="to_platform")},
             state=S.AT_PLATFORM)

    for lot in lots:
        sym = lot.asset.symbol
        step(agency, "inquiry_open", lot=lot, name=f"inquiry-open-{sym}")
        reserve = lot.current_reserve().price
        now = timezone.now()
        for platform, premium in ((w.osl, 100), (w.hashkey, 50)):
            step(agency, "quote_record", {
                "platform": platform.pk, "reference": f"{platform.code}-{lot.pk}", "price": str(reserve + premium),
                "quantity": plain_amount(lot.asset, lot.quantity), "quoted_at": local(now),
                "expires_at": local(now + timedelta(minutes=10))}, lot=lot, name=f"quote-{platform.code}-{sym}")
        step(agency, "inquiry_close", lot=lot, name=f"inquiry-close-{sym}")
        lot.refresh_from_db()
        assert lot.state == LotState.AWARD_PENDING

        # The approver sees the quote comparison against the reserve before approving the award.
        box = bce_approver.open_box("award_approve", lot, e)
        comparison = box.locator(".summary table").first
        expect(comparison).to_be_visible()
        expect(comparison.locator("tbody tr")).to_have_count(2)
        expect(comparison.locator("tbody tr.best")).to_contain_text(f"osl-{lot.pk}")
        expect(box.locator(".summary")).to_contain_text(str(reserve))
        camera.shoot(bce_approver.page, f"award-comparison-{sym}")
        bce_approver.submit_action(box.locator("form"))
        camera.shoot(bce_approver.page, f"award-approve-{sym}")
        lot.refresh_from_db()
        assert lot.state == LotState.EXECUTING

        price = reserve + 100
        gross = (Decimal(lot.quantity) / lot.asset.unit * price).quantize(Decimal("0.01"))
        step(agency, "execution_record", {
            "f1_trade_id": f"T{lot.pk}", "f1_quantity": plain_amount(lot.asset, lot.quantity), "f1_price": str(price),
            "f1_gross": str(gross), "f1_fee": str((gross * Decimal("0.001")).quantize(Decimal("0.01"))),
            "f1_executed_at": local(timezone.now())}, lot=lot, name=f"execution-{sym}")
        lot.refresh_from_db()
        assert lot.state == LotState.EXECUTED
    e = in_state(e, S.SOLD)

    net = net_proceeds_by_currency(e)["USD"]
    e = step(agency, "offshore_receipt", {
        "bank": w.hk_bank.pk, "currency": "USD", "amount": str(net), "bank_reference": "HKB-900",
        "value_date": timezone.localdate().isoformat()}, state=S.PROCEEDS_RECEIVED)
    # The agency's approver approves the FX application before the officer records the conversion.
    step(person(w.agency_approver), "fx_application_approve", {"reason": "金额与银行入账通知一致。"})
    rate = Decimal("7.1234")
    cny = (net * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    e = step(agency, "fx_approval", {
        "currency": "USD", "approval_reference": "SAFE-900", "bop_declaration_no": "BOP-900", "rate": str(rate),
        "amount_cny": str(cny), "slip_reference": "FX-SLIP-900"}, state=S.FX_CLEARED)
    e = step(officer, "special_account_credit", {"amount_cny": str(cny), "slip_reference": "CR-900"},
             state=S.CREDITED)
    assert e.sla_stopped_at is not None
    step(officer, "remittance_prepare", {"payment_code": f"{e.pk:020d}"})
    e = step(bureau_approver, "remittance_approve", {"treasury_receipt": "TR-900"}, state=S.REMITTED)
    e = step(bce_approver, "close", {"reason": "每一枚币、每一元均已核对。"}, state=S.CLOSED)

    # --- the closed record, as the bureau's officer reads it
    page = officer.open_entrustment(e)
    assert page.locator("section[aria-labelledby=actions-h] section.action").count() == 0  # nothing left to do
    transitions = Event.objects.filter(entrustment=e, type=EventType.TRANSITION).count()
    assert transitions == 16  # draft is where it starts: submitted … closed
    items = page.locator("ol.timeline > li")
    assert items.count() >= transitions
    expect(page.locator("ol.timeline")).to_contain_text("每一枚币、每一元均已核对。")
    expect(page.locator("ol.steps li[aria-current=step]")).to_have_count(1)
    # Every producing step issued its signed document, and the page lists them with a download link.
    assert not Event.objects.filter(entrustment=e, type=EventType.DOCUMENT_REFUSED).exists(), [
        ev.reason for ev in Event.objects.filter(entrustment=e, type=EventType.DOCUMENT_REFUSED)]
    documents = Document.objects.filter(entrustment=e, superseded_by__isnull=True)
    assert documents.count() >= 13
    listed = page.locator("section[aria-labelledby=documents-h]")
    for document in documents:
        expect(listed.locator(f"a[href='{reverse('document-download', args=[document.pk])}']")).to_have_count(1)
    camera.shoot(page, "closed-record")
    assert reload(e).state == S.CLOSED


# --------------------------------------------------------------------------- a stale page


def test_a_stale_page_is_refused_with_409_and_changes_nothing(portal):
    w, person, board = portal
    camera = Camera(prefix="stale-")
    e = Flow(w, case_number="顺公立字〔2025〕901号").to("submitted")
    approver, officer = person(w.bce_approver), person(w.bce_officer)
    approver.open_entrustment(e)
    officer.open_entrustment(e)

    # The officer starts to return the entrustment for correction ...
    box = officer.open_box("return")
    box.locator("[name=reason]").fill("扣押清单缺失。")
    # ... while the approver accepts it.
    approver.act(e, "accept", {"reason": "材料齐全。"})
    in_state(e, S.ACCEPTED)
    camera.shoot(approver.page, "approver-accepted")

    path = box.locator("form").get_attribute("action")
    with officer.page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(path)) as info:
        box.locator("button[type=submit]").click()
    assert info.value.status == 409
    refused = officer.box("return")
    alert = refused.locator("[role=alert]")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("bce_approver")  # who changed it (a username, not a label)
    expect(refused.locator(f"a[href='{reverse('entrustment-detail', args=[e.pk])}']")).to_have_count(1)
    camera.shoot(officer.page, "officer-stale-409")

    e = reload(e)
    assert e.state == S.ACCEPTED
    assert not Event.objects.filter(entrustment=e, type=EventType.DOCUMENT_REFUSED).exists()
    assert not Event.objects.filter(entrustment=e, type=EventType.TRANSITION, to_state=S.RETURNED).exists()
