"""The full-process record: every change of a record is kept with who and why, and the
business events cannot be rewritten."""

import pytest
from django.db import transaction

from cases import services
from cases.models import Case, Entrustment, Event, EventType, Holding, Lot

from .factories import SEIZED_AT


def test_a_registered_case_has_one_history_row_with_the_officer_and_the_reason(world):
    case = services.case_register(actor=world.shunyi_officer, bureau=world.shunyi, case_number="顺公立字〔2025〕400号",
                                  title="网络传销案", seized_at=SEIZED_AT, seizure_decision_no="顺扣〔2025〕4号",
                                  custodian="涉案财物管理中心")
    [row] = case.history.all()
    assert (row.history_type, row.history_user, row.history_change_reason) == ("+", world.shunyi_officer,
                                                                               "registered")
    event = Event.objects.get(case=case, type=EventType.CASE_REGISTERED)
    assert (event.actor, event.actor_organisation) == (world.shunyi_officer, world.shunyi)


def test_drafting_records_who_drafted_and_which_holdings_were_entrusted(flow):
    entrustment = flow.to("draft")
    [row] = entrustment.history.all()
    assert (row.state, row.history_user, row.history_change_reason) == ("draft", flow.w.shunyi_officer, "drafted")
    for holding in Holding.objects.filter(entrustment=entrustment):
        reasons = list(holding.history.order_by("history_date").values_list("history_change_reason", flat=True))
        assert reasons == ["holding declared", f"entrusted in {entrustment.number}"]
        assert {h.history_user for h in holding.history.all()} == {flow.w.shunyi_officer}


def test_a_transition_with_a_reason_keeps_the_reason_on_the_history_row_and_the_event(flow):
    entrustment = flow.to("submitted")
    services.entrustment_return(actor=flow.w.bce_officer, entrustment=entrustment, reason="  缺少扣押清单  ")
    latest = Entrustment.objects.get(pk=entrustment.pk).history.first()
    assert (latest.state, latest.history_user, latest.history_change_reason) == ("returned", flow.w.bce_officer,
                                                                                 "缺少扣押清单")
    event = Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION).last()
    assert (event.from_state, event.to_state, event.reason) == ("submitted", "returned", "缺少扣押清单")
    assert event.actor_organisation == flow.w.bce


def test_every_state_of_the_path_is_one_history_row_by_the_person_who_acted(flow):
    entrustment = flow.to("bonded")
    rows = list(entrustment.history.order_by("history_date", "history_id"))
    assert [r.state for r in rows] == ["draft", "submitted", "accepted", "agency_appointed", "bonded"]
    assert [r.history_user for r in rows] == [flow.w.shunyi_officer, flow.w.shunyi_approver, flow.w.bce_approver,
                                              flow.w.bce_officer, flow.w.bce_officer]
    transitions = Event.objects.filter(entrustment=entrustment, type=EventType.TRANSITION)
    assert [(e.from_state, e.to_state) for e in transitions] == [
        ("draft", "submitted"), ("submitted", "accepted"), ("accepted", "agency_appointed"),
        ("agency_appointed", "bonded")]


def test_lot_history_rows_carry_the_acting_user(flow):
    entrustment = flow.to("reserve_set")
    lot = Lot.objects.filter(entrustment=entrustment).first()
    states = [(r.state, r.history_user) for r in lot.history.order_by("history_date", "history_id")]
    assert states[0][0] == "planned"
    assert states[-1] == ("reserve_set", flow.w.bce_approver)
    lot.refresh_from_db()  # a protected FSM field still refreshes (FSMModelMixin)


def test_the_state_cannot_be_assigned_directly(flow):
    entrustment = flow.to("draft")
    with pytest.raises(AttributeError):
        entrustment.state = "closed"
    assert Entrustment.objects.get(pk=entrustment.pk).state == "draft"


def test_a_saved_event_cannot_be_saved_again(flow):
    flow.to("draft")
    event = Event.objects.filter(type=EventType.ENTRUSTMENT_CREATED).get()
    event.reason = "rewritten afterwards"
    with pytest.raises(PermissionError, match="append-only"):
        event.save()
    assert Event.objects.get(pk=event.pk).reason == ""


def test_events_cannot_be_updated_or_deleted_through_querysets(flow):
    flow.to("draft")
    total = Event.objects.count()
    with pytest.raises(PermissionError):
        Event.objects.update(reason="rewritten")
    with pytest.raises(PermissionError):
        Event.objects.filter(type=EventType.CASE_REGISTERED).delete()
    with pytest.raises(PermissionError):
        Event.objects.first().delete()
    with pytest.raises(PermissionError), transaction.atomic():
        Case.objects.first().events.update(reason="rewritten")
    assert Event.objects.count() == total
    assert not Event.objects.exclude(reason="").exists()


def test_the_database_stops_what_bypasses_the_orm_guard(flow):
    flow.to("draft")
    # _base_manager is a plain manager (Django uses it internally); only the trigger stands in its way.
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        Event._base_manager.update(reason="rewritten")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        Event._base_manager.all()._raw_delete(Event._base_manager.db)
    assert not Event.objects.exclude(reason="").exists()
