"""What the record chain costs: one entrustment driven to "remitted" by the real services, with the
chain hook and with it paused, on SQLite and on PostgreSQL; and how fast verify_record walks.

    .venv/bin/python bench/record_chain.py [--repeat 15] [--pg postgres://postgres@127.0.0.1:5432/portal_bench]

Reproducible: each backend runs in its own process on a fresh throwaway test database (Django's
test-database creation; PostgreSQL's is dropped afterwards). Each flow runs in a transaction that is
rolled back, so every sample starts from the same database and no task is sent after commit (as in
the test suite). Runs with and without the hook alternate, so drift hits both alike. Prints a table.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Rollback(Exception):
    pass


def child(repeat: int) -> dict:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.db import connection, transaction

    from audit import chain
    from audit.models import ChainLink
    from audit.signals import paused
    from tests.factories import World
    from tests.flow import Flow

    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        world = World()
        samples = {"chained": [], "baseline": []}
        links_per_flow = 0

        def one_flow(i: int, mode: str) -> float:
            nonlocal links_per_flow
            start = time.perf_counter()
            try:
                with transaction.atomic():
                    before = chain.head()[0]
                    Flow(world, case_number=f"顺公立字〔2025〕{i}号").to("remitted")
                    elapsed = time.perf_counter() - start
                    if mode == "chained":
                        links_per_flow = chain.head()[0] - before
                    raise Rollback
            except Rollback:
                return elapsed

        one_flow(0, "chained")  # warm: imports, templates, query plans
        with paused():
            one_flow(0, "baseline")
        for i in range(1, repeat + 1):
            samples["chained"].append(one_flow(i, "chained"))
            with paused():
                samples["baseline"].append(one_flow(i, "baseline"))

        # verify: build a longer chain that stays, then walk it.
        for i in range(5):
            Flow(world, case_number=f"顺公立字〔2026〕{i}号").to("remitted")
        start = time.perf_counter()
        result = chain.verify()
        verify_s = time.perf_counter() - start
        assert result.ok, result.first_break
        return {
            "backend": connection.vendor, "database": name, "repeat": repeat,
            "baseline_ms": statistics.median(samples["baseline"]) * 1000,
            "chained_ms": statistics.median(samples["chained"]) * 1000,
            "links_per_flow": links_per_flow,
            "verify_links": ChainLink.objects.count(), "verify_ms": verify_s * 1000,
        }
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL",
                                                        "postgres://postgres@127.0.0.1:5432/portal_bench"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.repeat)))
        return

    rows = []
    for url in ("", args.pg):
        env = dict(os.environ, PORTAL_VAR_DIR=tempfile.mkdtemp(prefix="bench-chain-"))
        env.pop("DATABASE_URL", None)
        if url:
            env["DATABASE_URL"] = url
        out = subprocess.run([sys.executable, __file__, "--child", "--repeat", str(args.repeat)], env=env,
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))

    print(f"Flow to 'remitted', median of {args.repeat} (each alternating with / without the chain hook)")
    print(f"{'backend':<11}{'baseline ms':>12}{'chained ms':>12}{'overhead':>10}{'links':>7}{'ms/link':>9}"
          f"{'verify links':>14}{'verify ms':>11}{'µs/link':>9}")
    for r in rows:
        extra = r["chained_ms"] - r["baseline_ms"]
        print(f"{r['backend']:<11}{r['baseline_ms']:>12.1f}{r['chained_ms']:>12.1f}"
              f"{extra / r['baseline_ms']:>+10.1%}{r['links_per_flow']:>7}{extra / r['links_per_flow']:>9.2f}"
              f"{r['verify_links']:>14}{r['verify_ms']:>11.1f}{r['verify_ms'] * 1000 / r['verify_links']:>9.0f}")


if __name__ == "__main__":
    main()
