"""Seed N entrustments (default 100,000) with holdings, events and field history, fast.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench .venv/bin/python bench/seed_portal.py [N]

Uses bulk inserts into a database of its own (it migrates it first and refuses to add
to a database that already holds bench rows). Organisations and users come from seed_demo.
"""

import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEMO_PASSWORD", "bench-demo-password")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

BATCH = 5_000


def main(n: int) -> None:
    from agencies.models import Organisation
    from cases.demo import demo_address
    from cases.models import (Asset, Case, DisposalPolicy, Entrustment, EntrustmentState, Event, EventType,
                              Holding)
    from django.contrib.auth.models import User

    call_command("migrate", verbosity=0)
    call_command("seed_demo", verbosity=0, stdout=open(os.devnull, "w"))
    if Entrustment.objects.filter(number__startswith="BN-").exists():
        sys.exit("This database already holds bench rows; use a fresh one.")
    rng = random.Random(20261126)
    bureaus = list(Organisation.objects.filter(kind="bureau"))
    bce = Organisation.objects.get(code="cbex")
    agencies = list(Organisation.objects.filter(kind="agency"))
    policy = DisposalPolicy.objects.get(is_current=True)
    assets = list(Asset.objects.all())
    officer = User.objects.get(username="shunyi_officer")
    states = [s for s in EntrustmentState.values]
    HistoricalEntrustment = Entrustment.history.model
    now = timezone.now()
    started = time.perf_counter()
    addresses = {a.pk: [demo_address(a.address_format, f"bench-{a.pk}-{k}") for k in range(50)] for a in assets}
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        with transaction.atomic():
            cases = Case.objects.bulk_create([
                Case(bureau=bureaus[i % len(bureaus)], case_number=f"BENCH-{start + i:07d}", title="基准案件",
                     seized_at=now - timedelta(days=rng.randint(1, 700)), seizure_decision_no=f"扣-{start + i}",
                     custodian="财物中心", legal_basis="confiscation", basis_document_no=f"没-{start + i}",
                     basis_date=now.date(), basis_authority="分局", created_by=officer)
                for i in range(size)])
            entrustments = Entrustment.objects.bulk_create([
                Entrustment(number=f"BN-{start + i:07d}", case=c, bureau=c.bureau, bce=bce,
                            agency=agencies[i % len(agencies)] if (i % 3) else None, policy=policy,
                            state=states[rng.randrange(len(states))], prepared_by=officer,
                            state_changed_at=now - timedelta(hours=rng.randint(0, 5000)),
                            sla_started_at=now - timedelta(hours=rng.randint(0, 40)) if i % 2 else None)
                for i, c in enumerate(cases)])
            holdings, events, history = [], [], []
            for e in entrustments:
                for k in range(rng.randint(1, 3)):
                    asset = assets[(e.pk + k) % len(assets)]
                    amount = rng.randint(1, 10**asset.decimals * 50)
                    holdings.append(Holding(case_id=e.case_id, entrustment=e, asset=asset,
                                            address=addresses[asset.pk][k] + ("" if k else ""), declared_amount=amount,
                                            accepted_amount=amount, location="硬件钱包"))
                for k, state in enumerate(("draft", "submitted", e.state)):
                    events.append(Event(case_id=e.case_id, entrustment=e, type=EventType.TRANSITION, actor=officer,
                                        from_state="" if k == 0 else "draft", to_state=state,
                                        created_at=now - timedelta(hours=3 - k)))
                    history.append(HistoricalEntrustment(
                        id=e.pk, number=e.number, case_id=e.case_id, bureau_id=e.bureau_id, bce_id=e.bce_id,
                        agency_id=e.agency_id, policy_id=e.policy_id, channel=e.channel, state=state,
                        prepared_by_id=officer.pk, created_at=now, state_changed_at=now,
                        history_date=now - timedelta(hours=3 - k), history_type="~" if k else "+",
                        history_user=officer, history_change_reason="bench"))
            # One case per entrustment, so the unique (case, asset, address) holds with shared addresses.
            Holding.objects.bulk_create(holdings)
            Event.objects.bulk_create(events)
            HistoricalEntrustment.objects.bulk_create(history)
        done = start + size
        print(f"{done:>8,} entrustments  {time.perf_counter() - started:6.1f} s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
