"""How long one entrustment takes from "bonded" to "remitted" when the workers carry it, and how much of that
time is the portal's own.

    .venv/bin/python bench/lifecycle.py [--runs 3] [--poll 0.5]
        [--pg postgres://postgres@127.0.0.1:5432/portal_bench] [--broker redis://127.0.0.1:6379/15]

Needs PostgreSQL and Redis (as `make test` does), and litecoind for the Litecoin regtest node.

What runs
---------
* A fresh throwaway PostgreSQL database (Django's test-database creation, migrated, dropped at the end; its
  name carries this process's id so that nobody else's benchmark database is touched).
* The outside world, ``emulators.world.start_world()`` (Litecoin regtest node, EVM node, custody, the HashKey/OSL
  exchange emulator, the bank), in a **separate process**, so that the emulators' threads (the EVM node mines in
  Python) do not compete for this process's interpreter lock and inflate the portal's figures. A new world is
  started for each setting; holdings are LTC 2.5 and ETH 10 at seizure addresses that really hold the coins,
  as in tests/test_e2e_counterparties.py (whose ``LiveFlow`` and ``approving_whitelist`` are used here).
* The workers **in this process**: a loop that plays beat and a solo worker. At each tick (every ``--poll``
  seconds, fixed rate like beat; the next tick starts at once when a round overran) it does what
  ``counterparties.tasks.dispatch`` enqueues — the step each entrustment or lot waits for (detect, hand_over,
  deposit, watch_deposits, run_inquiry, execute) and the bank's due FX orders and treasury payments
  (``request_fx``, ``pay_treasury``) — then ``poll_bank_statements``, calling the functions of
  counterparties/operations.py and counterparties/settling.py directly, one after the other. Before each of
  them the database connection is closed, as Celery's Django fix-up does before every task, so each step pays
  for its own connection. A transient error is retried at the next tick (a Celery task would back off 1, 2, 4 s
  …; the table counts them). Documents and notifications are enqueued after commit on a throwaway
  Redis queue that nobody consumes: rendering them is another worker's job, off the lifecycle's path.
* People: after every step the script gives whatever approval is due, through the services: BCE's approver
  approves the whitelist proposals of the agency's worker; BCE plans the lots and proposes/approves the reserves
  once the coins are in custody; BCE approves each award; the agency's approver approves the FX application
  (if ``settlements.services.fx_application_approve`` exists) in ``proceeds_received``; the bureau's officer
  prepares and its approver authorises the treasury remittance once ``credited``. Between runs the agency's
  whitelist entries are revoked, so every run is a first disposal that needs its addresses approved.
* One warm-up lifecycle, not counted, before the first setting's runs (the first one pays for imports such as
  web3's and for first queries; ``--no-warmup`` counts it).

Settings
--------
* **instant**: blocks every 0.2 s, 1 confirmation (portal and platform), no exchange latency.
* **realistic**: blocks every 2 s, 3 confirmations (portal and platform), 0.3 s latency on every exchange call.
The world's glue (the platform crediting confirmed deposits, settling sales into the offshore account, the bank
booking payment orders) runs every 0.1 s in both. Production beat ticks every 5 s (PORTAL_WORKER_POLL_SECONDS);
the e2e test ticks every 0.5 s, and so does this benchmark unless ``--poll`` says otherwise.

Stages and how time is split
----------------------------
Stage *X* lasts from the moment the previous stage was reached (the run's start, right after "bonded", for
"detected") to the ``created_at`` of the transition event into *X* — the timestamp the service writes in the
transaction that changes the state. Every second of a stage is one of:

* **outside calls** — time inside the adapters' HTTP round trips, measured by wrapping
  ``requests.Session.request`` (custody, Litecoin RPC, web3's EVM provider, the exchange adapters) and
  ``HttpBank._request`` (the bank speaks ``http.client``), counted only on this thread; plus the HashKey
  adapter's pauses between polls of an RFQ while it waits for quotes (``time.sleep`` is wrapped too; nothing
  else in the portal sleeps);
* **outside wait** — a pause between ticks after which the next round found nothing new: no state, lot, job,
  transfer, receipt, whitelist entry or bank document had changed, so the portal was only waiting for blocks,
  confirmations, the platform or the bank;
* **poll lag** — the pause before a round that did find something new. The outside became ready somewhere in
  that pause (or a person's approval was already given), and the portal noticed only at the tick; it is the
  price of polling, an upper bound of it (at most one ``--poll`` per waiting spell), and it is the portal's;
* **bench** — the script's own bookkeeping (the progress fingerprint after each round, checking for due
  approvals and for exceptions); excluded from everything, shown in the footnote;
* **portal work** — the rest: wall − calls − wait − lag − bench. Database, services, the record chain,
  adapters' own CPU (signing, parsing), dispatch queries, connection set-up, enqueuing documents — and the
  approvals' service calls (shown apart as "approvals").

"portal total" = portal work + poll lag: what the portal adds on top of waiting for the outside.
Figures are medians over the runs (each column on its own, so they need not add up); "wall max" is the slowest
run. Every run is checked to end in "remitted" with no operational exception; otherwise the benchmark fails.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAGES = ["detected", "in_custody", "at_platform", "sold", "proceeds_received", "fx_cleared", "credited",
          "remitted"]
SETTINGS = {
    "instant": {"block_time": 0.2, "confirmations": 1, "latency": 0.0},
    "realistic": {"block_time": 2.0, "confirmations": 3, "latency": 0.3},
}
GLUE_INTERVAL = 0.1
_SLEEP = time.sleep  # the bench's own pauses; time.sleep itself is instrumented (see instrument_adapters)
COLUMNS = ["wall", "call", "wait", "lag", "work", "human", "portal", "bench"]


# ============================================================================ the outside world, in its own process


def _world_main(conn, block_time: float, workdir: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["PORTAL_CHAIN_NETWORK"] = "regtest"
    import django

    django.setup()
    from emulators.world import start_world

    try:
        world = start_world(workdir=workdir, block_time=block_time, glue_interval=GLUE_INTERVAL,
                            chains=("litecoin", "ethereum"))
    except Exception as exc:  # say why, rather than leave the parent waiting
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", {"settings": world.settings(), "offshore_account": world.offshore_account}))
    try:
        while True:
            command, *args = conn.recv()
            if command == "stop":
                break
            try:
                if command == "seize":
                    result = world.seize(*args)
                elif command == "latency":
                    result = world.exchange.set_latency(*args)
                elif command == "deposit_confirmations":
                    world.deposit_confirmations = int(args[0])
                    result = None
                else:
                    raise ValueError(f"unknown command {command!r}")
                conn.send(("ok", result))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        world.stop()
        conn.send(("ok", None))


class RemoteWorld:
    """The world in a child process; offers what LiveFlow needs of it (``seize``) and the knobs the bench turns."""

    def __init__(self, block_time: float):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.workdir = tempfile.mkdtemp(prefix="bench-lifecycle-world-")
        self.proc = ctx.Process(target=_world_main, args=(child, block_time, self.workdir), name="bench-world")
        self.proc.start()
        started = self._answer(timeout=300)
        self._settings, self.offshore_account = started["settings"], started["offshore_account"]

    def _answer(self, timeout: float = 120):
        if not self.conn.poll(timeout):
            raise RuntimeError("the world process did not answer")
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"world: {value}")
        return value

    def _call(self, *command):
        self.conn.send(command)
        return self._answer()

    def settings(self) -> dict[str, str]:
        return dict(self._settings)

    def seize(self, chain: str, symbol: str, amount: int) -> str:
        return self._call("seize", chain, symbol, amount)

    def set_latency(self, seconds: float) -> None:
        self._call("latency", seconds)

    def set_deposit_confirmations(self, count: int) -> None:
        self._call("deposit_confirmations", count)

    def stop(self) -> None:
        try:
            if self.proc.is_alive():
                self._call("stop")
        except Exception:
            pass
        self.proc.join(60)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ============================================================================ instrumentation


class Timeline:
    """Intervals (kind, start, end) on this thread: outside calls, sleeps, approvals, the bench's bookkeeping."""

    def __init__(self):
        self.thread = threading.get_ident()
        self.intervals: list[tuple[str, float, float]] = []
        self.steps: list[tuple[str, float, float]] = []  # worker steps and people's service calls, by name
        self._depth = 0

    def span(self, kind: str):
        timeline = self

        class Span:
            def __enter__(self):
                self.start = time.time()

            def __exit__(self, *exc):
                timeline.intervals.append((kind, self.start, time.time()))

        return Span()


CURRENT: Timeline | None = None


def _timed_call(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        timeline = CURRENT
        if timeline is None or timeline._depth or threading.get_ident() != timeline.thread:
            return fn(*args, **kwargs)
        timeline._depth += 1
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            timeline._depth -= 1
            timeline.intervals.append(("call", start, time.time()))

    return wrapper


def instrument_adapters() -> None:
    import requests

    from counterparties.banks.client import HttpBank

    requests.Session.request = _timed_call(requests.Session.request)
    HttpBank._request = _timed_call(HttpBank._request)
    # The HashKey adapter sleeps between polls of an RFQ until enough quotes are in: waiting for the outside
    # too. (Nothing else in the portal's code sleeps; the bench pauses with _SLEEP.)
    time.sleep = _timed_call(time.sleep)


# ============================================================================ one lifecycle


class Stuck(RuntimeError):
    pass


def _workers_round(timeline: Timeline, people) -> tuple[int, int]:
    """One tick: what `counterparties.tasks.dispatch` would enqueue, run in order, then the bank poll.
    Returns (steps run, transient errors)."""
    from django.db import connection

    from cases.models import Entrustment, EntrustmentState, Lot, LotState
    from counterparties import operations, settling
    from counterparties.banks.registry import bank_for
    from counterparties.errors import TransientError
    from counterparties.exceptions import open_exceptions
    from counterparties.models import ExceptionKind
    from counterparties.tasks import ENTRUSTMENT_STEPS

    began = time.time()
    connection.close()  # dispatch is a task too
    due = []
    for entrustment in Entrustment.objects.filter(state__in=list(ENTRUSTMENT_STEPS)).select_related("agency"):
        if operations.automated(entrustment) and not operations.blocked(entrustment):
            due.append((getattr(operations, ENTRUSTMENT_STEPS[entrustment.state].rsplit(".", 1)[1]), entrustment.pk))
    lots = Lot.objects.filter(state__in=[LotState.RESERVE_SET, LotState.EXECUTING],
                              entrustment__state__in=[EntrustmentState.AT_PLATFORM, EntrustmentState.SELLING]) \
        .select_related("entrustment__agency")
    for lot in lots:
        if operations.automated(lot.entrustment) and not operations.blocked(lot.entrustment):
            due.append((operations.run_inquiry if lot.state == LotState.RESERVE_SET else operations.execute, lot.pk))
    if bank_for() is not None:
        fx_due, treasury_due = settling.due_entrustments()
        for fn, ids in ((settling.request_fx, fx_due), (settling.pay_treasury, treasury_due)):
            for entrustment_id in ids:
                if not open_exceptions(entrustment_id).exclude(kind=ExceptionKind.OUTAGE).exists():
                    due.append((fn, entrustment_id))
    timeline.steps.append(("dispatch", began, time.time()))
    due.append((settling.poll_bank_statements, None))  # beat sends it on the same interval
    transient = 0
    for fn, arg in due:
        began = time.time()
        connection.close()  # Celery's Django fix-up closes the connection before every task
        try:
            fn(arg) if arg is not None else fn()
        except TransientError:
            transient += 1  # retried at the next tick
        timeline.steps.append((fn.__name__, began, time.time()))
        people()
    return len(due), transient


def _fingerprint(entrustment_id: int, agency) -> tuple:
    """Everything a round can change: if two fingerprints are equal, the round found nothing new."""
    from cases.models import CoinTransfer, Entrustment, Lot, WhitelistedAddress
    from counterparties.models import Job
    from counterparties.settling import CURSOR_JOB
    from django.db.models import Q
    from settlements.models import TreasuryRemittance

    entrustment = Entrustment.objects.get(pk=entrustment_id)
    remittance = TreasuryRemittance.objects.filter(entrustment_id=entrustment_id).values_list(
        "approved_at", "remitted_at").first()
    return (
        entrustment.state,
        tuple(Lot.objects.filter(entrustment_id=entrustment_id).order_by("pk").values_list("state", flat=True)),
        tuple(CoinTransfer.objects.filter(entrustment_id=entrustment_id).order_by("pk").values_list("status", "txid")),
        tuple((j.key, j.state, json.dumps(j.result, sort_keys=True, default=str)) for j in
              Job.objects.filter(Q(entrustment_id=entrustment_id) | Q(kind=CURSOR_JOB)).order_by("pk")),
        tuple(entrustment.offshore_receipts.order_by("pk").values_list("pk", flat=True)),
        tuple(entrustment.fx_conversions.order_by("pk").values_list("pk", "outcome")),
        remittance,
        tuple(WhitelistedAddress.objects.filter(organisation=agency).order_by("pk").values_list("pk", "state")),
    )


def one_run(number: int, w, outside: RemoteWorld, poll: float, timeout: float) -> dict:
    global CURRENT
    from django.db import connection

    from cases import services
    from cases.models import Entrustment, EntrustmentState, Event, EventType, Lot, LotState
    from counterparties.models import OperationalException
    from settlements import services as money
    from tests.test_e2e_counterparties import LiveFlow, approving_whitelist

    flow = LiveFlow(w, outside)
    flow.case_number = f"顺公立字〔2026〕{8000 + number}号"
    entrustment = flow.to("bonded")
    pk = entrustment.pk
    last_exception = OperationalException.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    ltc, eth = flow.asset("LTC"), flow.asset("ETH")
    timeline = Timeline()

    def act(fn, *args, **kwargs):
        """A person's action: a service call on a fresh connection (a web request's)."""
        with timeline.span("human"):
            began = time.time()
            connection.close()
            try:
                return fn(*args, **kwargs)
            finally:
                name = getattr(fn, "__name__", "approve")
                timeline.steps.append(("people: " + ("whitelist_approve" if name == "check" else name), began,
                                       time.time()))

    def people():
        """Whatever approval is due now, given at once."""
        with timeline.span("bench"):
            state = Entrustment.objects.filter(pk=pk).values_list("state", flat=True).get()
            from cases import whitelist

            whitelist_due = bool(whitelist.pending_for(w.agency))
            lots = list(Lot.objects.filter(entrustment_id=pk).order_by("sequence"))
            fx_due = (state == EntrustmentState.PROCEEDS_RECEIVED and hasattr(money, "fx_application_approve")
                      and not money.fx_application_approved(Entrustment.objects.get(pk=pk)))
        if whitelist_due:
            act(approving_whitelist(w, lambda: True))
        if state == EntrustmentState.IN_CUSTODY and not lots:
            e = Entrustment.objects.get(pk=pk)
            act(services.lots_plan, actor=w.bce_officer, entrustment=e,
                fee_allowances={ltc.pk: 1_000_000, eth.pk: 10**16})
            for lot in Lot.objects.filter(entrustment_id=pk).order_by("sequence"):
                act(services.reserve_propose, actor=w.bce_officer, lot=lot, price="10",
                    inputs={"reference_prices": ["10", "10", "10"], "source": "bench floor"})
                act(services.reserve_approve, actor=w.bce_approver, lot=lot)
        for lot in lots:
            if lot.state == LotState.AWARD_PENDING:
                act(services.award_approve, actor=w.bce_approver, lot=lot)
        if fx_due:
            flow.refresh()
            act(flow.approve_fx)
        if state == EntrustmentState.CREDITED:
            e = Entrustment.objects.get(pk=pk)
            if not hasattr(e, "remittance"):
                act(money.remittance_prepare, actor=w.shunyi_officer, entrustment=e, payment_code=f"{pk:020d}")
                act(money.remittance_approve, actor=w.shunyi_approver, entrustment=e, treasury_receipt="")

    CURRENT = timeline
    rounds, progressed, transient, steps = 0, [], 0, 0
    previous = _fingerprint(pk, w.agency)
    start = time.time()
    try:
        while True:
            tick = time.time()
            ran, errors = _workers_round(timeline, people)
            steps, transient, rounds = steps + ran, transient + errors, rounds + 1
            with timeline.span("bench"):
                now = _fingerprint(pk, w.agency)
                progressed.append(now != previous)
                previous = now
                problems = list(OperationalException.objects.filter(pk__gt=last_exception)
                                .values_list("kind", "message"))
            if problems:
                raise Stuck(f"run {number}: operational exceptions: {problems}")
            if now[0] == EntrustmentState.REMITTED:
                break
            if now[0] not in STAGES + ["bonded", "reserve_set", "transferring", "selling"]:
                raise Stuck(f"run {number}: the entrustment went to {now[0]!r}")
            if time.time() - start > timeout:
                raise Stuck(f"run {number}: still {now[0]!r} after {timeout:.0f} s")
            with timeline.span("sleep"):
                _SLEEP(max(0.0, tick + poll - time.time()))
    finally:
        CURRENT = None

    # The sleep before round i+1 was poll lag if that round found something new, else waiting for the outside.
    intervals, sleep_index = [], 0
    for kind, a, b in timeline.intervals:
        if kind == "sleep":
            sleep_index += 1
            kind = "lag" if progressed[sleep_index] else "wait"
        intervals.append((kind, a, b))
    reached = {}
    for state, at in Event.objects.filter(entrustment_id=pk, type=EventType.TRANSITION, to_state__in=STAGES) \
            .order_by("created_at").values_list("to_state", "created_at"):
        reached.setdefault(state, at.timestamp())
    missing = [s for s in STAGES if s not in reached]
    if missing:
        raise Stuck(f"run {number}: no transition into {missing}")

    def split(a: float, b: float) -> dict:
        parts = {k: 0.0 for k in ("call", "wait", "lag", "human", "bench")}
        for kind, x, y in intervals:
            overlap = min(b, y) - max(a, x)
            if overlap > 0:
                parts[kind] += overlap
        wall = b - a
        work = wall - sum(parts.values()) + parts["human"]
        return {"wall": wall, **parts, "work": work, "portal": work + parts["lag"]}

    stages, previous_at = {}, start
    for state in STAGES:
        stages[state] = split(previous_at, reached[state])
        previous_at = reached[state]
    stages["total"] = split(start, reached["remitted"])
    from cases.selectors import reconciliation

    assert not reconciliation(Entrustment.objects.get(pk=pk)).problems, "the record does not reconcile"
    calls = [(a, b) for kind, a, b in intervals if kind == "call"]
    per_step: dict[str, list[float]] = {}
    for step, a, b in timeline.steps:
        outside = sum(max(0.0, min(b, y) - max(a, x)) for x, y in calls)
        per_step.setdefault(step, []).append((b - a, outside))
    return {"stages": stages, "rounds": rounds, "steps": steps, "transient": transient, "entrustment": pk,
            "per_step": per_step}


def revoke_whitelist(w) -> None:
    """A clean slate for the next run: the agency's addresses are proposed and approved again."""
    from cases import whitelist
    from cases.models import WhitelistedAddress, WhitelistState

    for entry in WhitelistedAddress.objects.filter(organisation=w.agency).exclude(state=WhitelistState.REVOKED):
        whitelist.whitelist_revoke(actor=w.bce_approver, entry=entry, reason="benchmark: next run starts afresh")


# ============================================================================ driver


def machine_info(connection) -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    try:
        litecoind = subprocess.run(["/usr/bin/litecoind", "-version"], capture_output=True, text=True,
                                   timeout=10).stdout.splitlines()[0]
    except Exception:
        litecoind = "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [f"machine: {os.cpu_count()} CPUs ({cpu}), load average {load} at start (the CPUs are shared)",
            f"software: Python {platform.python_version()}, PostgreSQL {pg}, {litecoind}, "
            f"Django {__import__('django').get_version()}, {platform.platform()}"]


def print_table(title: str, results: list[dict]) -> None:
    print(f"\n{title}")
    head = (f"{'stage':<19}{'wall med':>9}{'wall max':>9} |{'outside':>9}{'outside':>9} |{'poll':>8}"
            f"{'portal':>8}{'(appro-':>9} |{'portal':>8}{'portal':>8}")
    sub = (f"{'':<19}{'s':>9}{'s':>9} |{'calls':>9}{'wait':>9} |{'lag':>8}{'work':>8}{'vals)':>9} |"
           f"{'total':>8}{'share':>8}")
    print(head)
    print(sub)
    print("-" * len(head))
    for stage in STAGES + ["total"]:
        if stage == "total":
            print("-" * len(head))
        med = {c: statistics.median(r["stages"][stage][c] for r in results) for c in COLUMNS if c != "bench"}
        worst = max(r["stages"][stage]["wall"] for r in results)
        share = med["portal"] / med["wall"] if med["wall"] else 0.0
        print(f"{stage:<19}{med['wall']:>9.2f}{worst:>9.2f} |{med['call']:>9.2f}{med['wait']:>9.2f} |"
              f"{med['lag']:>8.2f}{med['work']:>8.2f}{med['human']:>9.2f} |{med['portal']:>8.2f}{share:>8.0%}")
    bench = statistics.median(r["stages"]["total"]["bench"] for r in results)
    rounds = [r["rounds"] for r in results]
    transient = sum(r["transient"] for r in results)
    print(f"seconds; medians of {len(results)} runs (wall max: the slowest run); ticks per run {rounds}; "
          f"transient errors {transient}; bench bookkeeping excluded: {bench:.2f} s per run (median)")
    print_steps(results)


def print_steps(results: list[dict]) -> None:
    """Where the time of the calls goes: per worker step and per person's service call, summed over a run."""
    names = sorted({n for r in results for n in r["per_step"]}, key=lambda n: (n.startswith("people"), n))
    print(f"{'  per call site, per run (medians)':<36}{'count':>6}{'total s':>9}{'outside s':>10}{'portal s':>9}"
          f"{'portal ms/call':>15}")
    for name in names:
        count = statistics.median(len(r["per_step"].get(name, [])) for r in results)
        total = statistics.median(sum(d for d, _ in r["per_step"].get(name, [])) for r in results)
        outside = statistics.median(sum(o for _, o in r["per_step"].get(name, [])) for r in results)
        calls = sum(len(r["per_step"].get(name, [])) for r in results)
        portal = sum(d - o for r in results for d, o in r["per_step"].get(name, []))
        print(f"  {name:<34}{count:>6.0f}{total:>9.2f}{outside:>10.2f}{total - outside:>9.2f}"
              f"{portal / calls * 1000 if calls else 0:>15.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="lifecycles per setting (default 3)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between beat ticks (default 0.5)")
    parser.add_argument("--pg", default=os.environ.get("DATABASE_URL")
                        or "postgres://postgres@127.0.0.1:5432/portal_bench",
                        help="PostgreSQL server (a throwaway test_bench_lifecycle_<pid> database is made there)")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15",
                        help="where documents/notifications are enqueued (a throwaway queue, deleted after)")
    parser.add_argument("--settings", default="instant,realistic", help="which settings to run, in order")
    parser.add_argument("--no-warmup", action="store_true",
                        help="count the first lifecycle too (imports, first queries); by default one runs uncounted")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a run counts as stuck")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = set(chosen) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {sorted(SETTINGS)}")

    queue = f"bench-lifecycle-{uuid.uuid4().hex[:8]}"
    var_dir = tempfile.mkdtemp(prefix="bench-lifecycle-")
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings", "PORTAL_CHAIN_NETWORK": "regtest", "DJANGO_DEBUG": "0",
        "DATABASE_URL": args.pg, "PORTAL_VAR_DIR": var_dir,
        "CELERY_BROKER_URL": args.broker, "CELERY_RESULT_BACKEND": args.broker,
        "CELERY_TASK_DEFAULT_QUEUE": queue, "CELERY_TASK_ALWAYS_EAGER": "0"})
    os.environ.pop("PORTAL_SECRETS_FILE", None)
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit(f"needs PostgreSQL, got {connection.vendor}")
    redis.Redis.from_url(args.broker).ping()
    instrument_adapters()
    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd() + os.sep) else sys.executable
    command = shlex.join([exe, *sys.argv])

    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"test_bench_lifecycle_{os.getpid()}"
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False, serialize=False)
    results: dict[str, list[dict]] = {}
    try:
        header = [f"command: {command}", *machine_info(connection)]
        from cases.models import Asset
        from counterparties.models import Job
        from counterparties.settling import CURSOR_JOB
        from tests.factories import World, ltc

        w = World()
        ltc()
        warmed = args.no_warmup
        for setting in chosen:
            knobs = SETTINGS[setting]
            print(f"[{setting}] starting the world (blocks every {knobs['block_time']} s) ...", file=sys.stderr,
                  flush=True)
            outside = RemoteWorld(knobs["block_time"])
            try:
                os.environ.update(outside.settings())
                outside.set_latency(knobs["latency"])
                outside.set_deposit_confirmations(knobs["confirmations"])
                w.agency.offshore_account_no = outside.offshore_account
                w.agency.save()
                Asset.objects.filter(symbol__in=["ETH", "LTC"]).update(
                    confirmations_required=knobs["confirmations"])
                Job.objects.filter(kind=CURSOR_JOB).delete()  # a new bank: read its documents from the start
                results[setting] = []
                if not warmed:
                    revoke_whitelist(w)
                    outcome = one_run(99, w, outside, args.poll, args.timeout)
                    warmed = True
                    print(f"[{setting}] warm-up run (not counted): {outcome['stages']['total']['wall']:.2f} s",
                          file=sys.stderr, flush=True)
                for i in range(args.runs):
                    revoke_whitelist(w)
                    number = len(results) * 100 + i + 1
                    outcome = one_run(number, w, outside, args.poll, args.timeout)
                    results[setting].append(outcome)
                    print(f"[{setting}] run {i + 1}/{args.runs}: {outcome['stages']['total']['wall']:.2f} s, "
                          f"{outcome['rounds']} ticks", file=sys.stderr, flush=True)
            finally:
                outside.stop()
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)
        try:
            redis.Redis.from_url(args.broker).delete(queue)
        except Exception:
            pass
        shutil.rmtree(var_dir, ignore_errors=True)

    print(f"\nLifecycle bonded → remitted: LTC 2.5 + ETH 10, one entrustment at a time; workers in-process "
          f"(dispatch + bank poll every {args.poll} s), approvals given as soon as due; PostgreSQL "
          f"{settings.DATABASES['default']['HOST'] or 'local'}, DEBUG={settings.DEBUG}")
    for line in header:
        print(line)
    for setting in chosen:
        k = SETTINGS[setting]
        print_table(f"{setting}: blocks every {k['block_time']} s, {k['confirmations']} confirmation(s), exchange "
                    f"latency {k['latency']} s per call, world glue every {GLUE_INTERVAL} s", results[setting])


if __name__ == "__main__":
    main()
