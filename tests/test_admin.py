"""The admin back office: history to read, no revert, states only through services,
and the business record beyond the reach of the admin, the ORM and raw SQL."""

import pytest
from django.contrib import admin
from django.contrib.messages import constants as message_levels
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory

from agencies.models import Membership, Role
from cases.models import Entrustment, Event, EventType

from .factories import UserFactory, sign_in

pytestmark = pytest.mark.security

CHANGELIST = "/admin/cases/entrustment/"


@pytest.fixture
def root(world):
    """A superuser who is also an approver at BCE: the admin acts as BCE through the services."""
    user = UserFactory(username="root", is_staff=True, is_superuser=True)
    Membership.objects.create(user=user, organisation=world.bce, role=Role.APPROVER)
    return user


@pytest.fixture
def admin_client(client, root):
    sign_in(client, root)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def state_of(entrustment) -> str:
    return Entrustment.objects.get(pk=entrustment.pk).state


def messages_of(response) -> list[tuple[int, str]]:
    return [(m.level, m.message) for m in response.context["messages"]]


# --------------------------------------------------------------------------- pages


def test_the_admin_opens_the_entrustment_list_change_page_and_history(admin_client, flow):
    entrustment = flow.to("accepted")
    assert admin_client.get(CHANGELIST).status_code == 200
    assert entrustment.number in admin_client.get(CHANGELIST).content.decode()
    assert admin_client.get(f"{CHANGELIST}{entrustment.pk}/change/").status_code == 200

    history = admin_client.get(f"{CHANGELIST}{entrustment.pk}/history/")
    assert history.status_code == 200
    rows = entrustment.history.all()
    assert len(history.context["page_obj"].object_list) == rows.count() == 3
    assert history.context["revert_disabled"]
    page = history.content.decode()
    assert flow.w.shunyi_approver.username in page and flow.w.bce_approver.username in page


def test_a_revert_posted_to_the_history_is_refused_and_changes_nothing(admin_client, flow):
    entrustment = flow.to("accepted")
    draft_row = entrustment.history.order_by("history_date").first()
    assert draft_row.state == "draft"
    rows_before, events_before = entrustment.history.count(), Event.objects.count()

    response = admin_client.post(f"{CHANGELIST}{entrustment.pk}/history/{draft_row.history_id}/",
                                 {"channel": "bce_hk", "state": "draft"})
    assert response.status_code == 403
    assert state_of(entrustment) == "accepted"
    assert entrustment.history.count() == rows_before
    assert Event.objects.count() == events_before


def test_the_change_form_cannot_set_the_state(admin_client, root, flow):
    entrustment = flow.to("submitted")
    model_admin = admin.site._registry[Entrustment]
    request = RequestFactory().get("/")
    request.user = root
    assert "state" in model_admin.get_readonly_fields(request, entrustment)

    response = admin_client.post(f"{CHANGELIST}{entrustment.pk}/change/",
                                 {"channel": "bce_hk", "state": "closed", "number": "HACKED"})
    assert response.status_code in (200, 302)
    fresh = Entrustment.objects.get(pk=entrustment.pk)
    assert fresh.state == "submitted"
    assert fresh.number == entrustment.number
    assert not Event.objects.filter(entrustment=entrustment, to_state="closed").exists()


def test_saving_an_unchanged_change_form_adds_no_empty_history_row(admin_client, root, flow):
    entrustment = flow.to("submitted")
    rows = entrustment.history.count()
    response = admin_client.post(f"{CHANGELIST}{entrustment.pk}/change/", {"channel": "bce_hk"})
    assert response.status_code == 302
    assert entrustment.history.count() == rows

    admin_client.post(f"{CHANGELIST}{entrustment.pk}/change/", {"channel": "court_offshore"})
    assert entrustment.history.count() == rows + 1
    latest = entrustment.history.first()
    assert (latest.channel, latest.state, latest.history_user) == ("court_offshore", "submitted", root)


def test_entrustments_are_neither_added_nor_deleted_in_the_admin(admin_client, flow):
    entrustment = flow.to("draft")
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}{entrustment.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Entrustment.objects.filter(pk=entrustment.pk).exists()


# --------------------------------------------------------------------------- actions through the services


def test_returning_an_entrustment_asks_for_a_reason_and_goes_through_the_service(admin_client, root, flow):
    entrustment = flow.to("submitted")
    chosen = {"action": "entrustment_return", "_selected_action": [entrustment.pk]}

    form = admin_client.post(CHANGELIST, chosen)
    assert form.status_code == 200
    assert 'name="reason"' in form.content.decode()
    assert state_of(entrustment) == "submitted"  # nothing happens before the reason is given

    done = admin_client.post(CHANGELIST, {**chosen, "apply": "1", "reason": "扣押清单缺页，请补正"}, follow=True)
    assert done.status_code == 200
    assert state_of(entrustment) == "returned"
    event = Event.objects.get(entrustment=entrustment, type=EventType.TRANSITION, to_state="returned")
    assert event.reason == "扣押清单缺页，请补正"
    assert event.actor == root and event.actor_organisation == flow.w.bce
    assert [level for level, _ in messages_of(done)] == [message_levels.SUCCESS]
    row = Entrustment.objects.get(pk=entrustment.pk).history.first()
    assert (row.state, row.history_user, row.history_change_reason) == ("returned", root, "扣押清单缺页，请补正")


def test_an_action_refused_by_a_guard_shows_an_error_not_a_server_error(admin_client, flow):
    entrustment = flow.to("draft")
    events_before = Event.objects.count()
    response = admin_client.post(CHANGELIST, {"action": "entrustment_accept",
                                              "_selected_action": [entrustment.pk]}, follow=True)
    assert response.status_code == 200
    [(level, text)] = messages_of(response)
    assert level == message_levels.ERROR
    assert entrustment.number in text and "submitted" in text
    assert state_of(entrustment) == "draft"
    assert Event.objects.count() == events_before


def test_an_action_the_admin_is_not_entitled_to_is_refused_by_role(admin_client, flow):
    entrustment = flow.to("draft")
    # Being a superuser does not make one the bureau's approver.
    response = admin_client.post(CHANGELIST, {"action": "entrustment_submit",
                                              "_selected_action": [entrustment.pk]}, follow=True)
    [(level, text)] = messages_of(response)
    assert level == message_levels.ERROR and "Only" in text
    assert state_of(entrustment) == "draft"


# --------------------------------------------------------------------------- the business record


def test_events_cannot_be_added_changed_or_deleted_in_the_admin(admin_client, root, flow):
    flow.to("submitted")
    event = Event.objects.first()
    model_admin = admin.site._registry[Event]
    request = RequestFactory().get("/")
    request.user = root
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, event)
    assert not model_admin.has_delete_permission(request, event)

    assert admin_client.get("/admin/cases/event/").status_code == 200
    assert admin_client.get("/admin/cases/event/add/").status_code == 403
    assert admin_client.post(f"/admin/cases/event/{event.pk}/change/", {"reason": "edited"}).status_code == 403
    assert admin_client.post(f"/admin/cases/event/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post("/admin/cases/event/", {"action": "delete_selected", "_selected_action": [event.pk],
                                                     "post": "yes"}).status_code in (200, 302)
    assert Event.objects.get(pk=event.pk).reason == event.reason


def test_the_orm_refuses_to_change_or_delete_events(flow):
    flow.to("submitted")
    event = Event.objects.first()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        Event.objects.filter(pk=event.pk).delete()
    with pytest.raises(PermissionError):
        Event.objects.all().update(reason="rewritten")
    event.reason = "rewritten"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError), transaction.atomic():
        Event.objects.bulk_update([event], ["reason"])
    assert Event.objects.get(pk=event.pk).reason == ""


@pytest.mark.parametrize("sql", ["DELETE FROM cases_event",
                                 "UPDATE cases_event SET reason = 'rewritten'",
                                 "UPDATE cases_event SET to_state = 'closed' WHERE to_state = 'submitted'"])
def test_the_database_refuses_raw_sql_that_changes_events(flow, sql):
    flow.to("submitted")
    before = list(Event.objects.values_list("pk", "reason", "to_state"))
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert list(Event.objects.values_list("pk", "reason", "to_state")) == before
