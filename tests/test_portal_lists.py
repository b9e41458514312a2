"""The pages across many entrustments: my work, the list and its exports, the dashboard, notifications.

Each person sees only what `visible_entrustments` lets them see, on every page and in every
export (a leak in a spreadsheet is a leak); filters refuse bad input with a message, never a
500; the pages cost the same number of queries for 2 entrustments as for 30.
"""

import csv
import io
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import openpyxl
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agencies.models import Membership
from cases import services
from cases.charts import Bar, bar_chart
from cases.demo import demo_address
from cases.models import Entrustment, Event, EventType, Fill, Notification
from cases.tasks import notify_event
from settlements import services as money

from .factories import BASIS_DATE, SEIZED_AT, VALUATION, sign_in
from .flow import Flow

security = pytest.mark.security


@pytest.fixture(autouse=True)
def english(client):
    """Assertions read the English source strings; a Chinese translation must not break them."""
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"


# --------------------------------------------------------------------------- helpers


def register(world, officer, bureau, number, holdings=(("BTC", "0.5"),)):
    """A case of `bureau` with a recorded legal basis and the given holdings."""
    case = services.case_register(actor=officer, bureau=bureau, case_number=number, title="诈骗案",
                                  seized_at=SEIZED_AT, seizure_decision_no=f"{number}-扣", custodian="财物中心")
    services.case_record_legal_basis(actor=officer, case=case, kind="judgment", document_no=f"{number}-判",
                                     basis_date=BASIS_DATE, authority="人民法院")
    assets = {"BTC": world.btc, "ETH": world.eth, "USDT": world.usdt}
    for i, (symbol, amount) in enumerate(holdings):
        asset = assets[symbol]
        services.holding_register(actor=officer, case=case, asset=asset, amount=amount, location="钱包",
                                  address=demo_address(asset.address_format, f"{number}-{symbol}-{i}"))
    return case


def entrust(world, officer, case, holdings=None) -> Entrustment:
    """One entrustment of `holdings` (default: all of the case's)."""
    return services.entrustment_create(actor=officer, case=case, holdings=list(holdings or case.holdings.all()),
                                       bce=world.bce)


def entrust_each_holding(world, officer, case) -> list[Entrustment]:
    return [entrust(world, officer, case, [h]) for h in case.holdings.all()]


def get(client, user, name, *args, **params):
    sign_in(client, user)
    return client.get(reverse(name, args=args), params)


def listed(client, user, **params) -> set[str]:
    response = get(client, user, "entrustment-list", **params)
    assert response.status_code == 200
    return {e.number for e in response.context["page"]}


def listed_in_order(client, user, **params) -> list[str]:
    response = get(client, user, "entrustment-list", **params)
    assert response.status_code == 200
    return [e.number for e in response.context["page"]]


def content_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def csv_rows(client, user, **params) -> list[list[str]]:
    response = get(client, user, "entrustment-export", "csv", **params)
    assert response.status_code == 200
    body = content_of(response)
    assert body.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def xlsx_rows(client, user, **params) -> list[list]:
    response = get(client, user, "entrustment-export", "xlsx", **params)
    assert response.status_code == 200
    workbook = openpyxl.load_workbook(io.BytesIO(content_of(response)), read_only=True)
    return [list(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]


def exported_numbers(rows) -> set[str]:
    return {row[0] for row in rows[1:]}


def submit(world, entrustment):
    approver = world.shunyi_approver if entrustment.bureau == world.shunyi else world.chaoyang_approver
    return services.entrustment_submit(actor=approver, entrustment=entrustment)


def start_clock(entrustment, *, hours_ago: float, stopped_hours_ago: float | None = None):
    """The clock is a pair of timestamps, not state: tests move it with a plain update."""
    now = timezone.now()
    Entrustment.objects.filter(pk=entrustment.pk).update(
        sla_started_at=now - timedelta(hours=hours_ago),
        sla_stopped_at=None if stopped_hours_ago is None else now - timedelta(hours=stopped_hours_ago),
    )


# --------------------------------------------------------------------------- who sees what


@pytest.fixture
def scene(world):
    """A Shunyi draft, a Shunyi and a Chaoyang submission, and a Shunyi entrustment appointed to agency A."""
    shunyi = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕501号", holdings=(
        ("BTC", "0.5"), ("BTC", "0.25")))
    draft, submitted = entrust_each_holding(world, world.shunyi_officer, shunyi)
    submit(world, submitted)
    chaoyang = register(world, world.chaoyang_officer, world.chaoyang, "朝公立字〔2025〕601号")
    chaoyang_submitted = entrust(world, world.chaoyang_officer, chaoyang)
    submit(world, chaoyang_submitted)
    appointed = Flow(world, case_number="顺公立字〔2025〕502号").to("agency_appointed")
    return {"draft": draft.number, "submitted": submitted.number, "chaoyang": chaoyang_submitted.number,
            "appointed": appointed.number}


SEES = {
    "shunyi_officer": {"draft", "submitted", "appointed"},
    "chaoyang_officer": {"chaoyang"},
    "bce_officer": {"submitted", "chaoyang", "appointed"},  # submitted ones; never a bureau's draft
    "agency_officer": {"appointed"},
    "agency_b_officer": set(),  # nothing until appointed
    "supervisor": {"draft", "submitted", "chaoyang", "appointed"},
    "stranger": set(),
}


@security
@pytest.mark.parametrize("persona", list(SEES))
def test_each_person_sees_only_their_entrustments_on_every_page_and_export(client, world, scene, persona):
    user = getattr(world, persona)
    expected = {scene[key] for key in SEES[persona]}
    hidden = set(scene.values()) - expected

    assert listed(client, user) == expected
    assert exported_numbers(csv_rows(client, user)) == expected
    assert exported_numbers(xlsx_rows(client, user)) == expected

    home = get(client, user, "home")
    assert home.status_code == 200
    assert {e.number for e in home.context["recent"]} == expected
    assert {e.number for e in home.context.get("queue", [])} <= expected

    dashboard = get(client, user, "dashboard")
    assert dashboard.status_code == 200
    assert dashboard.context["total"] == len(expected)

    for page in (home, dashboard, get(client, user, "entrustment-list")):
        html = page.content.decode()
        assert not any(number in html for number in hidden), persona
    if "chaoyang" not in SEES[persona]:
        # Not even the other bureau's name, in the bureau filter's choices or the dashboard's table.
        assert "朝阳分局" not in get(client, user, "entrustment-list").content.decode()
        assert "朝阳分局" not in dashboard.content.decode()


@security
def test_agency_b_sees_an_entrustment_once_appointed_to_it_and_only_that(client, world, scene):
    for_b = Flow(world, case_number="顺公立字〔2025〕503号").to("accepted")
    assert listed(client, world.agency_b_officer) == set()
    services.agency_appoint(actor=world.bce_officer, entrustment=for_b, agency=world.agency_b,
                            valuation_cny=VALUATION, valuation_source="CMC", qualification_note="licensed",
                            capacity_note="HSM", conflicts_declared="none")
    assert listed(client, world.agency_b_officer) == {for_b.number}
    assert exported_numbers(csv_rows(client, world.agency_b_officer)) == {for_b.number}
    assert listed(client, world.agency_officer) == {scene["appointed"]}


@security
def test_a_former_member_sees_nothing_anywhere(client, world, scene):
    Membership.objects.filter(user=world.shunyi_officer).update(is_active=False)
    assert listed(client, world.shunyi_officer) == set()
    assert exported_numbers(csv_rows(client, world.shunyi_officer)) == set()
    assert get(client, world.shunyi_officer, "dashboard").context["total"] == 0


@security
def test_filtering_by_another_bureau_shows_nothing_of_it(client, world, scene):
    response = get(client, world.shunyi_officer, "entrustment-list", bureau=world.chaoyang.pk)
    assert response.status_code == 200
    assert {e.number for e in response.context["page"]} == {scene["draft"], scene["submitted"], scene["appointed"]}
    assert "Bureau" in " ".join(response.context["problems"])  # not a choice for this person: ignored
    assert exported_numbers(csv_rows(client, world.shunyi_officer, bureau=world.chaoyang.pk)) == {
        scene["draft"], scene["submitted"], scene["appointed"]}


@security
def test_an_anonymous_visitor_is_sent_to_log_in_from_every_page(client):
    for url in (reverse("home"), reverse("entrustment-list"), reverse("dashboard"), reverse("notifications"),
                reverse("entrustment-export", args=["csv"]), reverse("entrustment-export", args=["xlsx"])):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


# --------------------------------------------------------------------------- landing page


def test_the_landing_page_lists_what_waits_for_me_with_counts_by_state(client, world, scene):
    home = get(client, world.bce_officer, "home")
    assert {e.number for e in home.context["queue"]} == {scene["submitted"], scene["chaoyang"], scene["appointed"]}
    assert {state: n for state, _label, n in home.context["queue_counts"]} == {"submitted": 2, "agency_appointed": 1}
    html = home.content.decode()
    assert reverse("entrustment-detail", args=[Entrustment.objects.get(number=scene["chaoyang"]).pk]) in html

    # The draft waits on Shunyi; the submission now waits on BCE, not on Shunyi.
    shunyi_queue = {e.number for e in get(client, world.shunyi_officer, "home").context["queue"]}
    assert shunyi_queue == {scene["draft"]}


@security
def test_a_supervisor_gets_a_summary_instead_of_a_work_queue(client, world, scene):
    home = get(client, world.supervisor, "home")
    assert home.context["read_only"] is True
    assert "queue" not in home.context
    assert home.context["summary"]["total"] == 4
    assert home.context["summary"]["open"] == 4
    assert "Waiting for me" not in home.content.decode()


def test_times_are_shown_in_shanghai_time(client, world, scene):
    # 16:30 UTC on 1 June is 00:30 on 2 June in Beijing.
    Entrustment.objects.filter(number=scene["draft"]).update(
        state_changed_at=datetime(2025, 6, 1, 16, 30, tzinfo=dt_timezone.utc))
    assert "2025-06-02 00:30" in get(client, world.shunyi_officer, "home").content.decode()
    assert "2025-06-02 00:30" in get(client, world.shunyi_officer, "entrustment-list").content.decode()
    row = next(r for r in csv_rows(client, world.shunyi_officer) if r[0] == scene["draft"])
    assert row[6] == "2025-06-02 00:30"


def test_the_24_hour_clock_shows_on_time_warning_breached_and_stopped(client, world):
    detected = Flow(world, case_number="顺公立字〔2025〕510号").to("detected")  # the clock starts at detection
    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕511号",
                    holdings=(("BTC", "1"), ("BTC", "2"), ("BTC", "3")))
    on_time, breached, stopped = entrust_each_holding(world, world.shunyi_officer, case)
    start_clock(detected, hours_ago=21)  # 3 h left of 24, warned 4 h ahead
    start_clock(on_time, hours_ago=1)
    start_clock(breached, hours_ago=25)
    start_clock(stopped, hours_ago=30, stopped_hours_ago=10)  # stopped 4 h before its deadline

    agency_home = get(client, world.agency_officer, "home")
    (row,) = agency_home.context["queue"]
    assert row.number == detected.number and row.sla.status == "warning"
    assert "Nearing deadline" in agency_home.content.decode()
    assert "2 h 59 min left" in agency_home.content.decode()

    shunyi_home = get(client, world.shunyi_officer, "home")
    clocks = {e.number: e.sla for e in shunyi_home.context["queue"]}
    assert clocks[on_time.number].status == "running"
    assert clocks[breached.number].status == "breached"
    assert clocks[stopped.number].status == "stopped" and clocks[stopped.number].met
    html = shunyi_home.content.decode()
    assert "Breached" in html and "1 h 00 min past the deadline" in html and "deadline met" in html
    # The breached one comes first: running clocks by deadline, then the rest.
    assert shunyi_home.context["queue"][0].number == breached.number

    assert listed(client, world.supervisor, overdue="on") == {detected.number, breached.number}
    assert get(client, world.supervisor, "dashboard").context["overdue"] == {"overdue": 2, "breached": 1}
    assert get(client, world.supervisor, "home").context["summary"]["breached"] == 1


# --------------------------------------------------------------------------- the list: filters, search, sort, pages


@pytest.fixture
def many(world):
    """Twelve Shunyi entrustments (BTC) and one Chaoyang one; one Shunyi flow with BTC and ETH."""
    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕700号",
                    holdings=[("BTC", str(i + 1)) for i in range(12)])
    shunyi = entrust_each_holding(world, world.shunyi_officer, case)
    chaoyang = entrust(world, world.chaoyang_officer,
                       register(world, world.chaoyang_officer, world.chaoyang, "朝公立字〔2025〕700号"))
    flow = Flow(world, case_number="顺公立字〔2025〕701号", holdings=(("BTC", "1"), ("ETH", "2"), ("ETH", "3")))
    both = flow.to("submitted")
    return {"shunyi": shunyi, "chaoyang": chaoyang, "both": both}


def test_it_filters_by_several_states(client, world, many):
    submit(world, many["shunyi"][0])
    assert listed(client, world.supervisor, state=["submitted"]) == {many["shunyi"][0].number, many["both"].number}
    assert listed(client, world.supervisor, state=["submitted", "draft"]) == {
        e.number for e in Entrustment.objects.all()}


def test_it_filters_by_bureau_and_by_asset_listing_each_entrustment_once(client, world, many):
    assert listed(client, world.supervisor, bureau=world.chaoyang.pk) == {many["chaoyang"].number}
    by_eth = get(client, world.supervisor, "entrustment-list", asset=world.eth.pk)
    assert [e.number for e in by_eth.context["page"]] == [many["both"].number]  # two ETH holdings, one row
    assert "5.000000000000000000</span> ETH" in by_eth.content.decode()  # the holdings summed per asset


def test_it_filters_by_created_date_in_shanghai_time(client, world, many):
    first = many["shunyi"][0]
    Entrustment.objects.filter(pk=first.pk).update(created_at=datetime(2025, 6, 1, 17, 0, tzinfo=dt_timezone.utc))
    assert listed(client, world.shunyi_officer, created_from="2025-06-02", created_to="2025-06-02") == {first.number}
    assert listed(client, world.shunyi_officer, created_to="2025-06-01") == set()


def test_it_searches_case_and_entrustment_numbers(client, world, many):
    assert listed(client, world.supervisor, q="朝公立字") == {many["chaoyang"].number}
    assert listed(client, world.supervisor, q="701号") == {many["both"].number}
    number = many["shunyi"][3].number
    assert listed(client, world.supervisor, q=number[-6:].lower()) == {number}  # case-insensitive


def test_it_sorts_by_number_state_and_dates(client, world, many):
    numbers = sorted(e.number for e in Entrustment.objects.all())
    assert listed_in_order(client, world.supervisor, sort="number") == numbers
    assert listed_in_order(client, world.supervisor, sort="-number") == numbers[::-1]
    by_state = listed_in_order(client, world.supervisor, sort="state")
    assert by_state[-1] == many["both"].number  # submitted comes after every draft
    assert listed_in_order(client, world.supervisor, sort="-state")[0] == many["both"].number
    created = listed_in_order(client, world.supervisor, sort="created")
    assert created[0] == many["shunyi"][0].number
    assert listed_in_order(client, world.supervisor, sort="-created") == created[::-1]


def test_it_pages_fifty_at_a_time(client, world):
    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕800号",
                    holdings=[("BTC", f"0.{i + 1:02d}") for i in range(53)])
    entrust_each_holding(world, world.shunyi_officer, case)
    first = get(client, world.shunyi_officer, "entrustment-list")
    assert len(first.context["page"]) == 50 and first.context["page"].paginator.count == 53
    second = listed(client, world.shunyi_officer, page=2)
    assert len(second) == 3 and not second & {e.number for e in first.context["page"]}
    assert "page=2" in first.content.decode()
    assert len(listed(client, world.shunyi_officer, page="not-a-number")) == 50
    assert listed(client, world.shunyi_officer, page=99) == second


@pytest.mark.parametrize("params", [
    {"created_from": "not-a-date"},
    {"created_from": "2025-13-45"},
    {"created_from": "2025-06-10", "created_to": "2025-06-01"},
    {"state": ["draft", "no-such-state"]},
    {"sort": "number; DROP TABLE cases_entrustment"},
    {"sort": "case__bureau__memberships__user__password"},
    {"bureau": "abc"},
    {"asset": "999999"},
    {"q": "a" * 500},
    {"q": "null\x00byte"},
])
def test_bad_filter_values_are_named_and_ignored_never_a_500(client, world, many, params):
    everything = {e.number for e in Entrustment.objects.filter(bureau=world.shunyi)}
    response = get(client, world.shunyi_officer, "entrustment-list", **params)
    assert response.status_code == 200
    assert response.context["problems"]
    assert "Some filters could not be used and are ignored" in response.content.decode()
    shown = {e.number for e in response.context["page"]}
    assert shown == everything
    for fmt in ("csv", "xlsx"):
        assert get(client, world.shunyi_officer, "entrustment-export", fmt, **params).status_code == 200


def test_an_unknown_export_format_is_not_found(client, world):
    assert get(client, world.shunyi_officer, "entrustment-export", "pdf").status_code == 404


def test_htmx_gets_only_the_results_and_a_browser_gets_the_page(client, world, many):
    sign_in(client, world.shunyi_officer)
    partial = client.get(reverse("entrustment-list"), {"q": "700号"}, headers={"HX-Request": "true"})
    assert partial.status_code == 200
    html = partial.content.decode()
    assert "<html" not in html and "<table>" in html and many["shunyi"][0].number in html
    assert "HX-Request" in partial["Vary"]
    # A sort chosen by a column heading is mirrored into the form's sort field, out of band.
    sorted_partial = client.get(reverse("entrustment-list"), {"sort": "number"}, headers={"HX-Request": "true"})
    assert 'hx-swap-oob="true"' in sorted_partial.content.decode()
    assert '<option value="number" selected>' in sorted_partial.content.decode()
    restore = client.get(reverse("entrustment-list"), headers={"HX-Request": "true",
                                                               "HX-History-Restore-Request": "true"})
    assert "<html" in restore.content.decode()
    page = client.get(reverse("entrustment-list")).content.decode()
    assert 'hx-get="/entrustments/"' in page and 'hx-target="#list-results"' in page and 'hx-push-url="true"' in page
    assert 'method="get" action="/entrustments/"' in page  # and it still works without JavaScript


# --------------------------------------------------------------------------- exports


def test_csv_has_a_bom_chinese_text_and_the_same_rows_as_xlsx(client, world, many):
    rows = csv_rows(client, world.shunyi_officer, sort="number")
    assert rows[0][:2] == ["Number", "Case number"]
    assert len(rows) == 1 + 13
    both = next(r for r in rows if r[0] == many["both"].number)
    assert both[1] == "顺公立字〔2025〕701号" and both[2] == "顺义分局"
    assert both[8] == "1.00000000 BTC; 5.000000000000000000 ETH"

    sheet = xlsx_rows(client, world.shunyi_officer, sort="number")

    def as_text(value):
        return "" if value is None else value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else value

    assert [[as_text(v) for v in row] for row in sheet] == rows


def test_exports_follow_the_lists_filters(client, world, many):
    assert exported_numbers(csv_rows(client, world.supervisor, asset=world.eth.pk)) == {many["both"].number}
    assert exported_numbers(xlsx_rows(client, world.supervisor, bureau=world.chaoyang.pk)) == {
        many["chaoyang"].number}


def test_a_cell_that_looks_like_a_formula_stays_text(client, world):
    case = register(world, world.shunyi_officer, world.shunyi, "=HYPERLINK(\"http://x\")")
    entrust(world, world.shunyi_officer, case)
    (row,) = csv_rows(client, world.shunyi_officer)[1:]
    assert row[1] == "'=HYPERLINK(\"http://x\")"
    response = get(client, world.shunyi_officer, "entrustment-export", "xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(content_of(response))).worksheets[0]
    assert sheet["B2"].data_type == "s" and sheet["B2"].value == "=HYPERLINK(\"http://x\")"


def test_an_export_over_the_cap_is_refused_with_a_message(client, world, many, settings):
    settings.PORTAL_EXPORT_MAX_ROWS = 5
    sign_in(client, world.shunyi_officer)
    response = client.get(reverse("entrustment-export", args=["csv"]), {"q": "700号"}, follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("entrustment-list") + "?q=700")
    assert "An export holds at most 5 rows and this list has 12" in response.content.decode()
    assert exported_numbers(csv_rows(client, world.shunyi_officer, q="701号")) == {many["both"].number}


# --------------------------------------------------------------------------- dashboard


@pytest.fixture
def disposed(world):
    """A Shunyi entrustment sold, credited, partly returned to victims and remitted."""
    flow = Flow(world, case_number="顺公立字〔2025〕900号")
    entrustment = flow.to("credited")
    victim_return = money.victim_return_prepare(actor=world.shunyi_officer, entrustment=entrustment, recipient="张三",
                                                recipient_account="6222000000000001", amount_cny="1000.00",
                                                basis="判决第二项")
    money.victim_return_approve(actor=world.shunyi_approver, victim_return=victim_return)
    return flow.to("remitted")


def test_the_dashboard_shows_sold_remitted_and_returned_amounts(client, world, disposed):
    response = get(client, world.shunyi_officer, "dashboard")
    assert response.status_code == 200
    html = response.content.decode()
    sold_btc = sum(Fill.objects.filter(lot__entrustment=disposed, lot__asset=world.btc).values_list(
        "quantity", flat=True))
    sold_eth = sum(Fill.objects.filter(lot__entrustment=disposed, lot__asset=world.eth).values_list(
        "quantity", flat=True))
    totals = {chart.value_heading: total for chart, total in response.context["sold_charts"]}
    assert totals == {"BTC": world.btc.format_amount(sold_btc), "ETH": world.eth.format_amount(sold_eth)}
    remitted = disposed.remittance.amount_cny
    assert [total for _chart, total in response.context["remitted_charts"]] == [f"{remitted:,.2f}"]
    assert [total for _chart, total in response.context["returned_charts"]] == ["1,000.00"]
    assert f"{remitted:,.2f}" in html and "1,000.00" in html
    this_month = timezone.localtime().strftime("%Y-%m")
    ((remitted_chart, _total),) = response.context["remitted_charts"]
    assert remitted_chart.bars[-1].label == this_month and remitted_chart.bars[-1].value == remitted
    assert len(remitted_chart.bars) == 12
    # Inline SVG with titles for the chart and each bar, and the figures again in a table.
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in html and "<title" in html
    assert f"<title>{this_month}: {remitted:,.2f}</title>" in html
    assert f'<th scope="row">{this_month}</th><td class="num">{remitted:,.2f}</td>' in html


@security
@pytest.mark.parametrize("persona, sees", [("shunyi_officer", True), ("bce_officer", True),
                                           ("agency_officer", True), ("supervisor", True),
                                           ("chaoyang_officer", False), ("agency_b_officer", False),
                                           ("stranger", False)])
def test_the_dashboard_counts_only_visible_money(client, world, disposed, persona, sees):
    response = get(client, getattr(world, persona), "dashboard")
    context = response.context
    assert bool(context["sold_charts"]) is sees
    assert bool(context["remitted_charts"]) is sees
    assert bool(context["returned_charts"]) is sees
    assert bool(context["net_charts"]) is sees
    assert (f"{disposed.remittance.amount_cny:,.2f}" in response.content.decode()) is sees


def test_a_bar_chart_escapes_its_labels_and_scales_to_the_largest_value():
    svg = bar_chart([Bar("<b>x</b>", 10, "10"), Bar("y", 5, "5"), Bar("z", 0, "0")], chart_id="t", title="T & U")
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "T &amp; U" in svg
    assert 'width="264.0"' in svg and 'width="132.0"' in svg and 'width="0.0"' in svg
    assert svg.count("<title>") == 3  # one per bar; the chart's own title carries an id
    assert bar_chart([], chart_id="empty", title="nothing").startswith("<svg")


# --------------------------------------------------------------------------- notifications


@pytest.fixture
def notified(world):
    """Shunyi's approver submits; the task notifies Shunyi's officer and BCE's people."""
    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕950号")
    entrustment = entrust(world, world.shunyi_officer, case)
    submit(world, entrustment)
    event = Event.objects.get(entrustment=entrustment, type=EventType.TRANSITION, to_state="submitted")
    notify_event(event.pk)
    return entrustment


def test_notifications_show_event_entrustment_and_time_and_can_be_marked_read(client, world, notified):
    page = get(client, world.shunyi_officer, "notifications")
    assert page.status_code == 200 and page.context["unread"] == 1
    html = page.content.decode()
    assert notified.number in html and "State changed" in html and "Entrustment drafted" not in html
    assert "Draft → Entrusted, awaiting BCE" in html
    (notification,) = page.context["page"]

    home = get(client, world.shunyi_officer, "home")
    assert home.context["unread"] == 1 and [n.pk for n in home.context["notifications"]] == [notification.pk]

    response = client.post(reverse("notification-read", args=[notification.pk]), headers={"HX-Request": "true"})
    assert response.status_code == 200
    fragment = response.content.decode()
    assert f'id="notification-{notification.pk}"' in fragment and "Read" in fragment
    assert 'hx-swap-oob="true"' in fragment and "0 unread" in fragment
    assert Notification.objects.get(pk=notification.pk).read_at is not None
    assert get(client, world.shunyi_officer, "home").context["unread"] == 0


def test_mark_all_read_without_javascript_returns_to_the_page(client, world, notified):
    sign_in(client, world.bce_officer)
    response = client.post(reverse("notification-read-all"), {"next": reverse("notifications") + "?unread=1"})
    assert response.status_code == 302 and response["Location"] == reverse("notifications") + "?unread=1"
    assert not Notification.objects.filter(user=world.bce_officer, read_at__isnull=True).exists()
    assert Notification.objects.filter(user=world.bce_approver, read_at__isnull=True).exists()  # theirs stays


@security
def test_nobody_reads_or_marks_someone_elses_notifications(client, world, notified):
    theirs = Notification.objects.get(user=world.shunyi_officer)
    assert get(client, world.chaoyang_officer, "notifications").context["unread"] == 0
    assert notified.number not in get(client, world.chaoyang_officer, "notifications").content.decode()
    assert client.post(reverse("notification-read", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("notification-read", args=[theirs.pk])).status_code == 405
    assert Notification.objects.get(pk=theirs.pk).read_at is None
    sign_in(client, world.shunyi_officer)
    offsite = client.post(reverse("notification-read", args=[theirs.pk]), {"next": "https://evil.example/"})
    assert offsite["Location"] == reverse("notifications")


@security
def test_a_notification_about_an_entrustment_no_longer_visible_is_hidden(client, world, notified):
    Membership.objects.filter(user=world.shunyi_officer).update(is_active=False)
    assert get(client, world.shunyi_officer, "notifications").context["unread"] == 0
    assert get(client, world.shunyi_officer, "home").context["unread"] == 0


# --------------------------------------------------------------------------- query counts


def count_queries(client, user, url, **params) -> int:
    sign_in(client, user)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params)
        assert response.status_code == 200
        content_of(response)
    return len(ctx.captured_queries)


def grow_to(world, case, count):
    """Entrust more of the case's holdings until the bureau has `count` entrustments: half of them
    submitted (waiting on BCE, with a notice to Shunyi), half drafts (waiting on Shunyi), all with a running clock."""
    free = list(case.holdings.filter(entrustment__isnull=True, asset=world.btc))
    while (existing := Entrustment.objects.filter(bureau=world.shunyi).count()) < count:
        e = entrust(world, world.shunyi_officer, case, [free.pop()] + (
            list(case.holdings.filter(asset=world.eth)) if existing == 0 else []))
        start_clock(e, hours_ago=22)
        if existing % 2:
            submit(world, e)
            notify_event(Event.objects.get(entrustment=e, to_state="submitted").pk)


@pytest.mark.parametrize("persona, name, params", [
    ("shunyi_officer", "home", {}),
    ("bce_officer", "home", {}),
    ("supervisor", "home", {}),
    ("shunyi_officer", "entrustment-list", {}),
    ("shunyi_officer", "entrustment-list", {"overdue": "on", "asset": "BTC", "q": "WT", "sort": "state",
                                            "state": ["submitted", "draft"]}),
    ("bce_officer", "entrustment-list", {"waiting": "on", "created_from": "2020-01-01", "sort": "-number"}),
    ("supervisor", "entrustment-list", {"bureau": "shunyi"}),
    ("shunyi_officer", "dashboard", {}),
    ("shunyi_officer", "notifications", {}),
    ("shunyi_officer", "csv", {}),
    ("shunyi_officer", "xlsx", {}),
])
def test_pages_cost_the_same_queries_for_2_or_30_entrustments(client, world, persona, name, params):
    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕990号",
                    holdings=[("BTC", f"0.{i + 1:02d}") for i in range(30)] + [("ETH", "1")])
    params = {**params, **({"asset": world.btc.pk} if params.get("asset") else {}),
              **({"bureau": world.shunyi.pk} if params.get("bureau") else {})}
    url = reverse("entrustment-export", args=[name]) if name in ("csv", "xlsx") else reverse(name)
    user = getattr(world, persona)
    grow_to(world, case, 2)
    with_two = count_queries(client, user, url, **params)
    grow_to(world, case, 30)
    assert count_queries(client, user, url, **params) == with_two
    print(f"{persona} {name} {params}: {with_two} queries")
