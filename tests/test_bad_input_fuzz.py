"""Over 10,000 generated bad inputs, over HTTP and into the services: never a server error, never half saved.

(a) Portal forms posted by the person whose job it is, with hypothesis-generated text (unicode, huge,
empty, control characters, exponents, negatives, NaN/Infinity, SQL and HTML fragments, wrong dates):
the answer is below 500, a refusal names the field and saves nothing. (b) Service functions called with
bad values raise only ValidationError/DisposalError and save nothing.

Reproducible: `derandomize=True`. Each test counts what it tried and asserts its quota; the quotas add up
to at least 10,000 (asserted too).
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cases import actions
from cases.models import Case, Entrustment, Event, Holding
from cases.services import parse_amount, parse_money
from cases import services
from cases.workflow import DisposalError
from agencies.models import PerformanceBond

from .factories import SEIZED_AT, sign_in

QUOTA = {"case_form": 400, "holding_form": 400, "bond_form": 300, "list_query": 300, "verify": 300,
         "parse_amount": 3000, "parse_money": 2500, "holding_service": 2000, "case_service": 1200}
FRAGMENTS = ["", " ", "\x00", "\x1b[2J", "\u202e", "\ufeff", "NaN", "nan", "Infinity", "-Infinity", "inf",
             "1e308", "1E-400", "-1", "-0", "0", "0.000", "1,5", "1__0", "٣", "１２", "12e3", "0x1F", "1/2",
             "'; DROP TABLE cases_case; --", "\" OR 1=1 --", "<script>alert(1)</script>", "{{ 7*7 }}", "%s%s%n",
             "2025-02-30", "2025-13-01", "9999-99-99 99:99", "0000-00-00", "𠮷" * 50, "9" * 120, "1." + "0" * 90 + "1"]
BAD_TEXT = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=40), st.from_regex(r"-?\d{0,30}(\.\d{0,30})?([eE][+-]?\d{1,4})?", fullmatch=True),
                     st.builds(lambda a, b: a + b, st.sampled_from(FRAGMENTS), st.text(max_size=10)),
                     st.integers(-10**40, 10**40).map(str), st.just("x" * 6000))
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])


def test_the_quotas_add_up_to_ten_thousand_bad_inputs():
    assert sum(QUOTA.values()) >= 10_000


def counts():
    return (Case.objects.count(), Holding.objects.count(), Entrustment.objects.count(), Event.objects.count(),
            PerformanceBond.objects.count())


def clean_text(value: str) -> str:
    # What a browser can send in a form field (the test client cannot encode lone surrogates).
    return value.encode("utf-8", "replace").decode("utf-8")


def client_for(user):
    client = Client(raise_request_exception=False, headers={"accept-language": "en"})
    return sign_in(client, user)


def assert_refused_or_saved(response, before, fields, *, saved_ok=False):
    assert response.status_code < 500, response.status_code
    if response.status_code in (200, 400) and response.context and "form" in response.context:
        form = response.context["form"]
        if form.is_bound and form.errors:
            assert set(form.errors) & set(fields) or "__all__" in form.errors, form.errors
            assert counts() == before, "a refused form saved something"
            return
    assert saved_ok or counts() == before


# --------------------------------------------------------------------------- (a) over HTTP


def test_case_intake_never_errs_on_bad_text(world):
    client, tried = client_for(world.shunyi_officer), []

    @settings(FUZZ, max_examples=QUOTA["case_form"])
    @given(field=st.sampled_from(["case_number", "title", "seized_at", "seizure_decision_no", "custodian", "bureau"]),
           value=BAD_TEXT)
    def run(field, value):
        tried.append(1)
        data = {"bureau": world.shunyi.pk, "case_number": "顺公立字〔2025〕1号", "title": "案",
                "seized_at": "2025-06-01 08:00", "seizure_decision_no": "扣1", "custodian": "中心"}
        data[field] = clean_text(value)
        with transaction.atomic():
            before = counts()
            response = client.post(reverse("case-intake"), data)
            assert_refused_or_saved(response, before, [field], saved_ok=True)
            transaction.set_rollback(True)

    run()
    assert len(tried) >= QUOTA["case_form"]


def test_holding_registration_never_errs_on_bad_amounts_addresses_or_locations(world):
    case = services.case_register(actor=world.shunyi_officer, bureau=world.shunyi, case_number="顺公立字〔2025〕9001号",
                                  title="案", seized_at=SEIZED_AT, seizure_decision_no="扣", custodian="中心")
    client, tried = client_for(world.shunyi_officer), []

    @settings(FUZZ, max_examples=QUOTA["holding_form"])
    @given(field=st.sampled_from(["amount", "address", "location", "asset"]), value=BAD_TEXT)
    def run(field, value):
        tried.append(1)
        data = {"asset": world.btc.pk, "address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "amount": "1.5",
                "location": "钱包"}
        data[field] = clean_text(value)
        with transaction.atomic():
            before = counts()
            response = client.post(reverse("case-holdings", args=[case.pk]), data)
            assert_refused_or_saved(response, before, [field, "__all__"], saved_ok=True)
            transaction.set_rollback(True)

    run()
    assert len(tried) >= QUOTA["holding_form"]


def test_the_bond_form_of_the_entrustment_page_never_errs(world, flow):
    entrustment = flow.to("agency_appointed")
    client, tried = client_for(world.bce_officer), []
    url = reverse("entrustment-action", args=[entrustment.pk, "post_bond"])

    @settings(FUZZ, max_examples=QUOTA["bond_form"])
    @given(posted=BAD_TEXT, reference=st.one_of(st.just("BG-1"), BAD_TEXT))
    def run(posted, reference):
        tried.append(1)
        with transaction.atomic():
            before = counts()
            e = Entrustment.objects.get(pk=entrustment.pk)
            response = client.post(url, {"posted_cny": clean_text(posted), "reference": clean_text(reference),
                                         "state_token": actions.state_token(e)})
            assert response.status_code < 500
            if response.status_code == 400:
                assert counts() == before
                page = response.content.decode()
                assert "posted_cny" in page or "reference" in page
            transaction.set_rollback(True)

    run()
    assert len(tried) >= QUOTA["bond_form"]


def test_list_filters_and_search_never_err(world, flow):
    flow.to("submitted")
    client, tried = client_for(world.bce_approver), []

    @settings(FUZZ, max_examples=QUOTA["list_query"])
    @given(params=st.dictionaries(st.sampled_from(["q", "state", "bureau", "asset", "created_from", "created_to",
                                                   "overdue", "waiting", "sort", "page"]), BAD_TEXT, max_size=4),
           export=st.booleans())
    def run(params, export):
        tried.append(1)
        url = reverse("entrustment-export", args=["csv"]) if export else reverse("entrustment-list")
        response = client.get(url, {k: clean_text(v)[:2000] for k, v in params.items()})
        assert response.status_code < 500

    run()
    assert len(tried) >= QUOTA["list_query"]


def test_the_verify_page_never_errs_on_bad_tokens_or_uploads(world):
    client, tried = Client(raise_request_exception=False), []

    @settings(FUZZ, max_examples=QUOTA["verify"])
    @given(token=BAD_TEXT, upload=st.binary(max_size=200), as_pdf=st.booleans())
    def run(token, upload, as_pdf):
        from django.core.files.uploadedfile import SimpleUploadedFile

        tried.append(1)
        token = clean_text(token).replace("/", "").replace("\x00", "") or "x"
        assert client.get(reverse("documents:verify", args=[token])).status_code in (404, 200)
        body = (b"%PDF-" + upload) if as_pdf else upload
        response = client.post(reverse("documents:verify-upload"), {"file": SimpleUploadedFile("x.pdf", body)})
        assert response.status_code in (200, 400, 413), response.status_code

    run()
    assert len(tried) >= QUOTA["verify"]


# --------------------------------------------------------------------------- (b) into the services


def test_parse_amount_raises_only_validation_errors(world):
    tried = []

    @settings(FUZZ, max_examples=QUOTA["parse_amount"])
    @given(text=BAD_TEXT, asset=st.sampled_from(["btc", "eth", "usdt"]))
    def run(text, asset):
        tried.append(1)
        try:
            value = parse_amount(text, asset=getattr(world, asset))
        except ValidationError as exc:
            assert "amount" in exc.message_dict
        else:
            assert isinstance(value, int) and value > 0

    run()
    assert len(tried) >= QUOTA["parse_amount"]


def test_parse_money_raises_only_validation_errors():
    tried = []

    @settings(FUZZ, max_examples=QUOTA["parse_money"])
    @given(text=st.one_of(BAD_TEXT, st.decimals(allow_nan=True, allow_infinity=True)), places=st.sampled_from([2, 6]))
    def run(text, places):
        tried.append(1)
        try:
            value = parse_money(text, field="amount_cny", places=places)
        except ValidationError as exc:
            assert "amount_cny" in exc.message_dict
        else:
            assert isinstance(value, Decimal) and value > 0 and value.is_finite()

    run()
    assert len(tried) >= QUOTA["parse_money"]


def test_holding_register_raises_only_domain_errors_and_saves_nothing_when_refusing(world):
    case = services.case_register(actor=world.shunyi_officer, bureau=world.shunyi, case_number="顺公立字〔2025〕9002号",
                                  title="案", seized_at=SEIZED_AT, seizure_decision_no="扣", custodian="中心")
    tried = []

    @settings(FUZZ, max_examples=QUOTA["holding_service"])
    @given(amount=BAD_TEXT, address=st.one_of(st.just("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"), BAD_TEXT),
           location=st.one_of(st.just("钱包"), BAD_TEXT), actor=st.sampled_from(["shunyi_officer", "chaoyang_officer",
                                                                              "supervisor"]))
    def run(amount, address, location, actor):
        tried.append(1)
        with transaction.atomic():
            before = counts()
            try:
                services.holding_register(actor=getattr(world, actor), case=case, asset=world.btc, address=address,
                                          amount=amount, location=location)
            except (ValidationError, DisposalError):
                assert counts() == before
            transaction.set_rollback(True)

    run()
    assert len(tried) >= QUOTA["holding_service"]


def test_case_register_raises_only_domain_errors(world):
    tried = []

    @settings(FUZZ, max_examples=QUOTA["case_service"])
    @given(number=BAD_TEXT, title=st.one_of(st.just("案"), BAD_TEXT), custodian=st.one_of(st.just("中心"), BAD_TEXT))
    def run(number, title, custodian):
        tried.append(1)
        with transaction.atomic():
            before = counts()
            try:
                services.case_register(actor=world.shunyi_officer, bureau=world.shunyi, case_number=number,
                                       title=title, seized_at=SEIZED_AT, seizure_decision_no="扣", custodian=custodian)
            except (ValidationError, DisposalError):
                assert counts() == before
            transaction.set_rollback(True)

    run()
    assert len(tried) >= QUOTA["case_service"]
