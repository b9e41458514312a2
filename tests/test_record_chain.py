"""The tamper-evident record: every business event and every history row is chained by hash, and
changing, deleting or inserting any of them behind the application's back is found by the check."""

import hashlib
import re
import subprocess
import threading
from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction

from audit import chain
from audit.models import GENESIS, ChainHead, ChainLink
from audit.signals import paused
from cases import services
from cases.models import Case, Event, EventType
from cases.workflow import emit, save_tracked

from .factories import SEIZED_AT, World
from .flow import Flow


def chained_row_count() -> int:
    return sum(model._base_manager.count() for model in chain.chained_models())


@contextmanager
def triggers_off(table: str):
    """Let this test connection write past a table's append-only trigger, as an attacker with database
    access would. PostgreSQL: replica mode skips ordinary triggers; SQLite: drop them (DDL is undone
    with the test's transaction)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table])
            for (name,) in cursor.fetchall():
                cursor.execute(f'DROP TRIGGER "{name}"')
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = origin")


def raw(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


# --------------------------------------------------------------------------- the chain as written


def test_a_lifecycle_to_remitted_is_chained_link_by_link_and_verifies(flow):
    flow.to("remitted")
    result = chain.verify(chunk=50)  # small pages, so the walk crosses page boundaries
    assert result.ok, result.first_break
    assert result.count == chained_row_count() == Event.objects.count() + sum(
        m._base_manager.count() for m in chain.chained_models() if m is not Event)
    assert chain.head() == (result.count, result.head_hash)
    assert list(ChainLink.objects.values_list("seq", flat=True)) == list(range(1, result.count + 1))
    labels = set(ChainLink.objects.values_list("label", flat=True))
    assert {"cases.event", "cases.historicalentrustment", "cases.historicalholding",
            "agencies.historicalappointment", "settlements.historicaltreasuryremittance"} <= labels


def test_the_link_hash_is_the_documented_formula(flow):
    flow.to("draft")
    first, second = ChainLink.objects.order_by("seq")[:2]
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert second.hash == hashlib.sha256(
        f"{first.hash}|2|{second.label}|{second.object_pk}|{second.row_digest}".encode()).hexdigest()


def test_a_rolled_back_write_leaves_no_link_and_no_gap(flow):
    flow.to("draft")
    before = chain.head()
    with pytest.raises(RuntimeError), transaction.atomic():
        emit(case=flow.case, type=EventType.CASE_REGISTERED, reason="rolled back")
        raise RuntimeError
    assert chain.head() == before
    emit(case=flow.case, type=EventType.CASE_REGISTERED, reason="kept")
    assert chain.head()[0] == before[0] + 1
    assert chain.verify().ok


def test_links_cannot_be_rewritten_through_the_orm_or_the_database(flow):
    flow.to("draft")
    link = ChainLink.objects.first()
    with pytest.raises(PermissionError):
        ChainLink.objects.update(hash=GENESIS)
    with pytest.raises(PermissionError):
        ChainLink.objects.filter(seq=1).delete()
    with pytest.raises(PermissionError):
        link.save()
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        ChainLink._base_manager.update(hash=GENESIS)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        ChainLink._base_manager.all()._raw_delete(ChainLink._base_manager.db)
    assert chain.verify().ok


# --------------------------------------------------------------------------- tampering is found


def test_a_history_row_changed_with_raw_sql_is_named_by_the_check(flow):
    entrustment = flow.to("remitted")
    row = entrustment.history.order_by("history_id")[2]
    assert raw("UPDATE cases_historicalentrustment SET history_change_reason = %s WHERE history_id = %s",
               ["nothing happened", row.history_id]) == 1
    result = chain.verify()
    brk = result.first_break
    assert (brk.what, brk.label, brk.object_pk) == (chain.ROW_CHANGED, "cases.historicalentrustment",
                                                    str(row.history_id))
    link = ChainLink.objects.get(label="cases.historicalentrustment", object_pk=str(row.history_id))
    assert brk.seq == link.seq and result.count == link.seq - 1


def test_a_history_row_changed_by_one_digit_of_an_amount_is_found(flow):
    flow.to("remitted")
    row = flow.entrustment.remittance.history.first()
    raw("UPDATE settlements_historicaltreasuryremittance SET amount_cny = amount_cny + 0.01 WHERE history_id = %s",
        [row.history_id])
    brk = chain.verify().first_break
    assert (brk.what, brk.label, brk.object_pk) == (chain.ROW_CHANGED, "settlements.historicaltreasuryremittance",
                                                    str(row.history_id))


def test_an_event_changed_behind_its_append_only_trigger_is_found(flow):
    flow.to("remitted")
    event = Event.objects.filter(type=EventType.TRANSITION, to_state="remitted").get()
    with triggers_off("cases_event") as cursor:
        cursor.execute("UPDATE cases_event SET reason = %s WHERE id = %s", ["rewritten", event.pk])
    brk = chain.verify().first_break
    assert (brk.what, brk.label, brk.object_pk) == (chain.ROW_CHANGED, "cases.event", str(event.pk))


def test_a_deleted_event_is_found(flow):
    flow.to("remitted")
    event = Event.objects.filter(type=EventType.TRANSITION).order_by("id")[3]
    with triggers_off("cases_event") as cursor:
        cursor.execute("DELETE FROM cases_event WHERE id = %s", [event.pk])
    brk = chain.verify().first_break
    assert (brk.what, brk.label, brk.object_pk) == (chain.ROW_MISSING, "cases.event", str(event.pk))


def test_a_deleted_history_row_is_found(flow):
    entrustment = flow.to("remitted")
    row = entrustment.history.order_by("history_id").last()
    raw("DELETE FROM cases_historicalentrustment WHERE history_id = %s", [row.history_id])
    brk = chain.verify().first_break
    assert (brk.what, brk.object_pk) == (chain.ROW_MISSING, str(row.history_id))


def test_an_altered_link_is_found_even_when_its_hash_is_recomputed(flow):
    entrustment = flow.to("remitted")
    row = entrustment.history.order_by("history_id").first()
    link = ChainLink.objects.get(label="cases.historicalentrustment", object_pk=str(row.history_id))
    raw("UPDATE cases_historicalentrustment SET history_change_reason = 'forged' WHERE history_id = %s",
        [row.history_id])
    # The forger fixes the link's digest of the row and its hash: the next link no longer follows it.
    model = type(row)
    changed = model._base_manager.filter(pk=row.pk).values_list(*[f.attname for f in model._meta.concrete_fields])
    new_digest = chain.digest(model, changed.get())
    new_hash = chain.link_hash(link.prev_hash, link.seq, link.label, link.object_pk, new_digest)
    with triggers_off("audit_chainlink") as cursor:
        cursor.execute("UPDATE audit_chainlink SET row_digest = %s, hash = %s WHERE seq = %s",
                       [new_digest, new_hash, link.seq])
    brk = chain.verify().first_break
    assert (brk.what, brk.seq) == (chain.LINK_ALTERED, link.seq + 1)


def test_a_link_whose_digest_alone_is_altered_is_found_at_that_link(flow):
    flow.to("draft")
    with triggers_off("audit_chainlink") as cursor:
        cursor.execute("UPDATE audit_chainlink SET row_digest = %s WHERE seq = 3", ["0" * 64])
    brk = chain.verify().first_break
    assert (brk.what, brk.seq) == (chain.LINK_ALTERED, 3)


def test_a_link_cut_out_of_the_middle_is_a_gap(flow):
    flow.to("draft")
    with triggers_off("audit_chainlink") as cursor:
        cursor.execute("DELETE FROM audit_chainlink WHERE seq = 5")
    brk = chain.verify().first_break
    assert (brk.what, brk.seq) == (chain.GAP, 6)


def test_links_cut_off_the_end_disagree_with_the_head(flow):
    flow.to("draft")
    last = chain.head()[0]
    with triggers_off("audit_chainlink") as cursor:
        cursor.execute("DELETE FROM audit_chainlink WHERE seq = %s", [last])
    result = chain.verify()
    assert result.first_break.what == chain.HEAD_MISMATCH and result.count == last - 1


def test_a_head_moved_back_to_hide_the_last_links_is_found(flow):
    flow.to("draft")
    third = ChainLink.objects.get(seq=3)
    ChainHead.objects.filter(pk=1).update(seq=3, hash=third.hash)
    assert chain.verify().first_break.what == chain.HEAD_MISMATCH


def test_a_row_inserted_around_the_application_is_not_chained(flow):
    flow.to("draft")
    # bulk_create sends no signals: a forged event written this way has no link.
    [forged] = Event.objects.bulk_create([Event(case=flow.case, type=EventType.CASE_REGISTERED, reason="forged")])
    brk = chain.verify().first_break
    assert (brk.what, brk.label, brk.object_pk, brk.seq) == (chain.NOT_CHAINED, "cases.event", str(forged.pk), None)


def test_a_printed_head_can_be_checked_later(flow):
    flow.to("draft")
    printed = chain.head()
    flow.to("accepted")
    assert chain.verify(expect=printed).ok
    assert chain.verify(expect=(printed[0], "f" * 64)).first_break.what == chain.EXPECTED_HEAD_MISSING
    assert chain.verify(expect=(10**9, printed[1])).first_break.what == chain.EXPECTED_HEAD_MISSING


# --------------------------------------------------------------------------- the command


def test_the_command_prints_ok_with_the_count_and_head_and_fails_with_exit_status_1_on_a_break(flow, capsys):
    entrustment = flow.to("submitted")
    seq, digest = chain.head()
    call_command("verify_record", "--chunk", "7", "--expect", f"{seq}:{digest}")
    assert f"OK: {seq} links, head #{seq} {digest}" in capsys.readouterr().out
    row = entrustment.history.order_by("history_id").first()
    raw("UPDATE cases_historicalentrustment SET history_change_reason = 'x' WHERE history_id = %s", [row.history_id])
    with pytest.raises(CommandError) as error:
        call_command("verify_record")
    assert error.value.returncode == 1
    assert re.search(rf"seq \d+: cases.historicalentrustment pk={row.history_id}: row changed", str(error.value))


def test_the_command_rejects_a_malformed_expected_head(db):
    with pytest.raises(CommandError, match="SEQ:HASH"):
        call_command("verify_record", "--expect", "12:abc")


# --------------------------------------------------------------------------- an existing database


def test_a_database_written_before_the_chain_is_adopted_in_a_deterministic_order(db):
    with paused():
        world = World()
        services.case_register(actor=world.shunyi_officer, bureau=world.shunyi, case_number="顺公立字〔2025〕900号",
                               title="旧案", seized_at=SEIZED_AT, seizure_decision_no="顺扣〔2025〕9号",
                               custodian="涉案财物管理中心")
    assert not ChainLink.objects.exists()
    total = chained_row_count()
    assert chain.adopt_existing(batch=7) == total > 0
    assert chain.verify().ok and chain.head()[0] == total
    keys = list(ChainLink.objects.values_list("label", "object_pk"))
    assert keys == sorted(keys, key=lambda k: (k[0], int(k[1])))
    assert chain.adopt_existing() == 0  # once started, unchained rows are evidence, never adopted


# --------------------------------------------------------------------------- concurrency (PostgreSQL)


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_many_writers_at_once_leave_one_gap_free_valid_chain():
    # Like tests/test_concurrency.py: without PostgreSQL the run fails here rather than skipping the proof.
    assert connection.vendor == "postgresql", "row locks are proven on PostgreSQL; set DATABASE_URL"
    world = World()
    cases = [services.case_register(actor=world.shunyi_officer, bureau=world.shunyi,
                                    case_number=f"顺公立字〔2025〕{950 + i}号", title="并发", seized_at=SEIZED_AT,
                                    seizure_decision_no=f"顺扣〔2025〕{950 + i}号", custodian="中心")
             for i in range(8)]
    start = chain.head()[0]
    barrier, errors, rounds = threading.Barrier(len(cases)), [], 5

    def writer(case):
        try:
            barrier.wait()
            for n in range(rounds):
                with transaction.atomic():
                    case = Case.objects.get(pk=case.pk)
                    case.custodian = f"中心 {n}"
                    save_tracked(case, actor=world.shunyi_officer, reason=f"round {n}")  # a history row
                    emit(case=case, type=EventType.CASE_REGISTERED, reason=f"round {n}")  # an event
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(c,)) for c in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    result = chain.verify()
    assert result.ok, result.first_break
    assert result.count == start + len(cases) * rounds * 2 == chained_row_count()
    assert list(ChainLink.objects.values_list("seq", flat=True)) == list(range(1, result.count + 1))


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_whole_lifecycles_in_parallel_do_not_deadlock_on_the_chain_head():
    """Every writer holds the head lock from its first chained row to its commit, so no service may,
    after that, wait for a lock another writer holds while it waits for the head. PostgreSQL checks
    foreign keys at COMMIT (Django makes them deferred): a row pointing at an asset waits there for
    anyone holding that asset FOR UPDATE. `select_for_update()` on holdings without of=("self",)
    locks the shared asset rows too (Holding orders by asset__symbol, a join): that is a deadlock."""
    # Like tests/test_concurrency.py: without PostgreSQL the run fails here rather than skipping the proof.
    assert connection.vendor == "postgresql", "row locks are proven on PostgreSQL; set DATABASE_URL"
    world, errors = World(), []
    flows = [Flow(world, case_number=f"顺公立字〔2025〕{970 + i}号") for i in range(4)]
    barrier = threading.Barrier(len(flows))

    def run(flow):
        try:
            barrier.wait()
            flow.to("remitted")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(f,)) for f in flows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, "\n".join(errors)
    result = chain.verify()
    assert result.ok and result.count == chained_row_count(), result.first_break


# --------------------------------------------------------------------------- the final disposal report


@pytest.mark.documents
def test_the_final_report_prints_the_chain_head_a_reader_can_check_later(flow, tmp_path):
    from datetime import datetime
    from datetime import timezone as dt_timezone

    from documents.facts import build_context
    from documents.models import DocumentType
    from documents.rendering import render_pdf

    flow.to("closed")
    seq, digest = chain.head()
    context = build_context(DocumentType.FINAL_REPORT, flow.entrustment)
    assert context["facts"]["记录链头"] == f"#{seq} {digest}"
    pdf = render_pdf(DocumentType.FINAL_REPORT, context, number="BG-2026-000001", version=1,
                     issued_at=datetime(2026, 1, 5, 8, tzinfo=dt_timezone.utc), verify_url="http://127.0.0.1/verify/t")
    path = tmp_path / "final_report.pdf"
    path.write_bytes(pdf)
    text = re.sub(r"\s+", "", subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                                             check=True).stdout.decode())
    assert "记录完整性" in text and "Recordintegrity" in text
    assert f"#{seq}{digest}" in text
    assert f"verify_record--expect{seq}:{digest}" in text
    # What happens after the report does not disturb what it certified.
    emit(case=flow.case, type=EventType.CASE_REGISTERED, reason="after the report")
    assert chain.verify(expect=(seq, digest)).ok
