"""People see only what their organisation may see; everyone else gets the same 404.

Pages are fetched with the Django test client and `sign_in` (django-axes makes
`Client.login()` raise), as the personas of the World.
"""

import pytest
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agencies.models import Membership
from cases import services
from cases.access import case_for_user, entrustment_for_user, lot_for_user
from cases.demo import demo_address
from cases.models import Entrustment, Lot
from cases.selectors import visible_cases, visible_entrustments

from .factories import BASIS_DATE, SEIZED_AT, VALUATION, sign_in
from .flow import Flow

pytestmark = pytest.mark.security


def register(world, officer, bureau, number, holdings=1):
    """A case of `bureau` with a recorded legal basis and `holdings` BTC holdings."""
    case = services.case_register(actor=officer, bureau=bureau, case_number=number, title="诈骗案",
                                  seized_at=SEIZED_AT, seizure_decision_no=f"{number}-扣", custodian="财物中心")
    services.case_record_legal_basis(actor=officer, case=case, kind="judgment", document_no=f"{number}-判",
                                     basis_date=BASIS_DATE, authority="人民法院")
    for i in range(holdings):
        services.holding_register(actor=officer, case=case, asset=world.btc,
                                  address=demo_address("btc", f"{number}-{i}"), amount="0.5", location="钱包")
    return case


def entrust_each_holding(world, officer, case) -> list[Entrustment]:
    return [services.entrustment_create(actor=officer, case=case, holdings=[h], bce=world.bce)
            for h in case.holdings.all()]


@pytest.fixture
def shunyi_entrustment(world):
    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕201号")
    return entrust_each_holding(world, world.shunyi_officer, case)[0]


@pytest.fixture
def chaoyang_entrustment(world):
    case = register(world, world.chaoyang_officer, world.chaoyang, "朝公立字〔2025〕301号")
    return entrust_each_holding(world, world.chaoyang_officer, case)[0]


def home_numbers(client, user) -> set[str]:
    sign_in(client, user)
    response = client.get(reverse("home"))
    assert response.status_code == 200
    return {e.number for e in response.context["page"]}


# --------------------------------------------------------------------------- the home page


def test_a_bureau_officer_sees_only_their_bureaus_entrustments(client, world, shunyi_entrustment,
                                                               chaoyang_entrustment):
    assert home_numbers(client, world.shunyi_officer) == {shunyi_entrustment.number}
    assert home_numbers(client, world.chaoyang_officer) == {chaoyang_entrustment.number}
    sign_in(client, world.shunyi_officer)
    page = client.get(reverse("home")).content.decode()
    assert shunyi_entrustment.number in page and chaoyang_entrustment.number not in page


def test_an_agency_sees_only_the_entrustments_it_is_appointed_to(client, world, chaoyang_entrustment):
    flow_a = Flow(world, case_number="顺公立字〔2025〕202号")
    appointed_to_a = flow_a.to("agency_appointed")
    flow_b = Flow(world, case_number="顺公立字〔2025〕203号")
    for_b = flow_b.to("accepted")

    assert home_numbers(client, world.agency_officer) == {appointed_to_a.number}
    assert home_numbers(client, world.agency_b_officer) == set()  # nothing until appointed

    services.agency_appoint(actor=world.bce_officer, entrustment=for_b, agency=world.agency_b,
                            valuation_cny=VALUATION, valuation_source="CMC", qualification_note="licensed",
                            capacity_note="HSM", conflicts_declared="none")
    assert home_numbers(client, world.agency_b_officer) == {for_b.number}
    assert home_numbers(client, world.agency_officer) == {appointed_to_a.number}


def test_supervisors_see_every_bureaus_entrustments(client, world, shunyi_entrustment, chaoyang_entrustment):
    everything = {shunyi_entrustment.number, chaoyang_entrustment.number}
    assert home_numbers(client, world.supervisor) == everything


def test_bce_sees_what_is_entrusted_to_it_but_not_drafts(client, world, shunyi_entrustment, chaoyang_entrustment):
    assert home_numbers(client, world.bce_officer) == set()
    services.entrustment_submit(actor=world.shunyi_approver, entrustment=shunyi_entrustment)
    services.entrustment_submit(actor=world.chaoyang_approver, entrustment=chaoyang_entrustment)
    assert home_numbers(client, world.bce_officer) == {shunyi_entrustment.number, chaoyang_entrustment.number}


def test_a_stranger_and_a_former_member_see_nothing(client, world, shunyi_entrustment, chaoyang_entrustment):
    assert home_numbers(client, world.stranger) == set()
    Membership.objects.filter(user=world.shunyi_officer).update(is_active=False)
    assert home_numbers(client, world.shunyi_officer) == set()


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, shunyi_entrustment):
    for url in (reverse("home"), reverse("entrustment-detail", args=[shunyi_entrustment.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
        assert "next=" in response["Location"]


def test_the_home_page_needs_the_same_number_of_queries_for_2_or_10_entrustments(client, world):
    def queries_for_home() -> int:
        sign_in(client, world.shunyi_officer)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("home")).status_code == 200
        return len(ctx.captured_queries)

    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕210号", holdings=10)
    holdings = list(case.holdings.all())
    for h in holdings[:2]:
        services.entrustment_create(actor=world.shunyi_officer, case=case, holdings=[h], bce=world.bce)
    with_two = queries_for_home()
    for h in holdings[2:]:
        services.entrustment_create(actor=world.shunyi_officer, case=case, holdings=[h], bce=world.bce)
    assert Entrustment.objects.count() == 10
    assert queries_for_home() == with_two
    assert with_two <= 14  # 2FA rule + session saved on every request (idle timeout)


def test_the_home_page_query_count_has_a_fixed_ceiling(client, world, django_assert_max_num_queries):
    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕211号", holdings=5)
    entrust_each_holding(world, world.shunyi_officer, case)
    sign_in(client, world.shunyi_officer)
    with django_assert_max_num_queries(14):
        client.get(reverse("home"))


# --------------------------------------------------------------------------- the entrustment page


def detail(client, user, pk):
    sign_in(client, user)
    return client.get(reverse("entrustment-detail", args=[pk]))


def test_an_officer_opens_their_own_entrustment(client, world, shunyi_entrustment):
    response = detail(client, world.shunyi_officer, shunyi_entrustment.pk)
    assert response.status_code == 200
    assert shunyi_entrustment.number in response.content.decode()


def test_another_bureaus_entrustment_looks_exactly_like_a_missing_one(client, world, chaoyang_entrustment):
    missing_pk = Entrustment.objects.order_by("-pk").first().pk + 1000
    other = detail(client, world.shunyi_officer, chaoyang_entrustment.pk)
    missing = detail(client, world.shunyi_officer, missing_pk)
    assert other.status_code == missing.status_code == 404
    assert chaoyang_entrustment.number not in other.content.decode()


def test_agencies_and_strangers_cannot_open_entrustments_they_are_not_part_of(client, world, shunyi_entrustment):
    for outsider in (world.agency_officer, world.agency_b_officer, world.stranger, world.chaoyang_approver):
        assert detail(client, outsider, shunyi_entrustment.pk).status_code == 404
    assert detail(client, world.supervisor, shunyi_entrustment.pk).status_code == 200


# --------------------------------------------------------------------------- the access helpers


def test_case_for_user_answers_missing_and_not_yours_alike(world, shunyi_entrustment, chaoyang_entrustment):
    shunyi_case = shunyi_entrustment.case
    services.entrustment_submit(actor=world.shunyi_approver, entrustment=shunyi_entrustment)
    assert case_for_user(world.shunyi_officer, shunyi_case.pk) == shunyi_case
    assert case_for_user(world.supervisor, shunyi_case.pk) == shunyi_case
    assert case_for_user(world.bce_officer, shunyi_case.pk) == shunyi_case  # entrusted to BCE
    for user, pk in ((world.chaoyang_officer, shunyi_case.pk), (world.stranger, shunyi_case.pk),
                     (world.agency_officer, shunyi_case.pk), (world.shunyi_officer, shunyi_case.pk + 1000)):
        with pytest.raises(Http404):
            case_for_user(user, pk)


def test_a_case_shared_by_several_entrustments_is_listed_once(world):
    case = register(world, world.shunyi_officer, world.shunyi, "顺公立字〔2025〕212号", holdings=3)
    for entrustment in entrust_each_holding(world, world.shunyi_officer, case):
        services.entrustment_submit(actor=world.shunyi_approver, entrustment=entrustment)
    assert list(visible_cases(world.shunyi_officer)) == [case]
    assert list(visible_cases(world.bce_officer)) == [case]


def test_entrustment_for_user_follows_visible_entrustments(world, shunyi_entrustment):
    assert entrustment_for_user(world.shunyi_approver, shunyi_entrustment.pk) == shunyi_entrustment
    with pytest.raises(Http404):
        entrustment_for_user(world.chaoyang_officer, shunyi_entrustment.pk)


def test_lot_for_user_lets_in_only_the_parties_of_the_lots_entrustment(world, flow):
    entrustment = flow.to("reserve_set")
    lot = Lot.objects.filter(entrustment=entrustment).first()
    for party in (world.shunyi_officer, world.bce_approver, world.agency_officer, world.supervisor):
        assert lot_for_user(party, lot.pk) == lot
    missing_pk = Lot.objects.order_by("-pk").first().pk + 1000
    for outsider, pk in ((world.chaoyang_officer, lot.pk), (world.agency_b_officer, lot.pk),
                         (world.stranger, lot.pk), (world.shunyi_officer, missing_pk)):
        with pytest.raises(Http404):
            lot_for_user(outsider, pk)


def test_visible_entrustments_is_empty_for_anonymous_users(world, shunyi_entrustment):
    from django.contrib.auth.models import AnonymousUser

    assert not visible_entrustments(AnonymousUser()).exists()
    assert not visible_cases(AnonymousUser()).exists()


def test_evidence_is_downloaded_only_by_those_who_may_see_it(client, world, flow, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MEDIA_ROOT = tmp_path
    entrustment = flow.to("submitted")
    pdf = b"%PDF-1.7 seizure list"
    case_level = services.evidence_add(actor=world.shunyi_officer, case=entrustment.case, kind="seizure",
                                       upload=SimpleUploadedFile("list.pdf", pdf))
    on_entrustment = services.evidence_add(actor=world.shunyi_officer, case=entrustment.case, kind="basis",
                                           entrustment=entrustment, upload=SimpleUploadedFile("basis.pdf", pdf))
    for user, expected in ((world.shunyi_officer, 200), (world.bce_approver, 200), (world.supervisor, 200),
                           (world.chaoyang_officer, 404), (world.agency_b_officer, 404), (world.stranger, 404)):
        sign_in(client, user)
        for evidence in (case_level, on_entrustment):
            response = client.get(reverse("evidence-download", args=[evidence.pk]))
            assert response.status_code == expected, (user.username, evidence.pk)
            if expected == 200:
                assert b"".join(response.streaming_content) == pdf
    sign_in(client, world.shunyi_officer)
    assert client.get(reverse("evidence-download", args=[on_entrustment.pk + 1000])).status_code == 404
