"""Document rendering benchmark: warm render time of every document, beside a minimal
one-page render in the same run, and the final report with a 10,000-holding annex.

    .venv/bin/python bench/documents.py [--repeat 5] [--holdings 10000]

Self-contained and reproducible: a throwaway SQLite database in a temporary folder, the
test personas, one entrustment driven to "closed" by the real services. Prints a table.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PORTAL_VAR_DIR"] = tempfile.mkdtemp(prefix="bench-documents-")
os.environ.pop("DATABASE_URL", None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402


def timed(fn, repeat):
    fn()  # warm: fonts, stylesheet, templates
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples), result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--holdings", type=int, default=10_000)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    from cases.models import Holding, Lot
    from documents.facts import build_context
    from documents.models import DocumentType
    from documents.rendering import render_pdf
    from tests.factories import World
    from tests.flow import Flow

    flow = Flow(World())
    entrustment = flow.to("closed")
    lot = Lot.objects.filter(entrustment=entrustment).first()
    now = timezone.now()
    url = "http://127.0.0.1:8000/verify/bench-token-0123456789abcdef/"

    def render(doc_type, subject=""):
        context = build_context(doc_type, entrustment, subject)
        return render_pdf(doc_type, context, number="BENCH-2026-000001", version=1, verify_url=url, issued_at=now)

    def minimal():
        from weasyprint import HTML

        return HTML(string='<html lang="zh-Hans"><body style="font-family: \'Noto Sans CJK SC\'">'
                           "<h1>最小文书 minimal</h1><p>第 1 页</p></body></html>").write_pdf()

    rows = [("minimal one-page (WeasyPrint only)", *timed(minimal, args.repeat))]
    for doc_type in DocumentType.values:
        if doc_type == DocumentType.RETURN_LIST:
            continue  # the benchmark case orders no returns to victims
        subject = f"lot:{lot.pk}" if doc_type in ("reserve_determination", "inquiry_record",
                                                 "sale_confirmation") else ""
        rows.append((doc_type, *timed(lambda: render(doc_type, subject), args.repeat)))

    # The inventory annex: add holdings to the case and link them to the entrustment.
    asset, case = flow.w.btc, entrustment.case
    Holding.objects.bulk_create(
        Holding(case=case, entrustment=entrustment, asset=asset, address=f"bc1qbench{i:032d}",
                declared_amount=100_000 + i, accepted_amount=100_000 + i, location=f"钱包 {i}")
        for i in range(args.holdings)
    )
    start = time.perf_counter()
    context = build_context(DocumentType.FINAL_REPORT, entrustment, "")
    built = time.perf_counter() - start
    median, best, pdf = timed(lambda: render_pdf(DocumentType.FINAL_REPORT, context, number="BENCH", version=1,
                                                 verify_url=url, issued_at=now), max(1, args.repeat // 5))
    rows.append((f"final_report + {args.holdings:,}-holding annex", median, best, pdf))

    print(f"\n{'document':<44} {'median s':>9} {'best s':>8} {'KiB':>8}")
    print("-" * 72)
    for name, med, low, pdf in rows:
        print(f"{name:<44} {med:>9.3f} {low:>8.3f} {len(pdf) / 1024:>8.0f}")
    print(f"\nannex context built in {built:.3f} s (one query for the holdings); "
          f"repeat={args.repeat}, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
