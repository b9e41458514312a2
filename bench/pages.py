"""Server time of the portal's busiest pages, p50/p95, beside a one-query baseline and the admin.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench .venv/bin/python bench/pages.py [--requests 30]

Run after bench/seed_portal.py filled that database. Requests go through Django's test
client in this process (the full middleware, views and templates; no network), so the
figures are server time. Prints a table with the query count of each page.
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, override_settings  # noqa: E402

from tests.factories import sign_in  # noqa: E402


def measure(client, url, n):
    client.get(url)  # warm
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    return statistics.median(times), p95, len(queries)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    from django.contrib.auth.models import User

    from cases.models import Entrustment

    total = Entrustment.objects.count()
    rng = random.Random(7)
    ids = list(Entrustment.objects.order_by("?").values_list("pk", flat=True)[:5])
    bce, admin = User.objects.get(username="bce_approver"), User.objects.get(username="admin")
    rows = []
    with override_settings(ROOT_URLCONF="bench.urls", ALLOWED_HOSTS=["testserver"], DEBUG=False):
        client = Client()
        sign_in(client, bce)
        pages = [
            ("work queue (home), BCE approver", "/"),
            ("entrustment list, page 1", "/entrustments/"),
            ("entrustment list, filtered + sorted", "/entrustments/?state=selling&sort=-state_changed_at"),
            ("entrustment list, page 200", "/entrustments/?page=200"),
            ("entrustment page", f"/entrustments/{rng.choice(ids)}/"),
            ("baseline: one hand-written SQL query", "/bench/plain/"),
        ]
        for name, url in pages:
            rows.append((name, *measure(client, url, args.requests)))
        sign_in(client, admin)
        rows.append(("admin changelist (Entrustment)", *measure(client, "/admin/cases/entrustment/",
                                                                 args.requests)))
    print(f"\n{total:,} entrustments on {connection.vendor}; {args.requests} requests per page; "
          f"DEBUG={settings.DEBUG}")
    print(f"{'page':<42} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8}")
    print("-" * 70)
    for name, p50, p95, queries in rows:
        print(f"{name:<42} {p50:>8.1f} {p95:>8.1f} {queries:>8}")


if __name__ == "__main__":
    main()
