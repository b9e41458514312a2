"""Every invariant, for every case and entrustment (or one), as the lines `manage.py reconcile` prints."""

from __future__ import annotations

from cases.models import Case, Entrustment

from .invariants import Line, case_lines, entrustment_lines


def reconcile(*, entrustment_number: str | None = None) -> list[Line]:
    if entrustment_number:
        entrustment = Entrustment.objects.select_related("case").get(number=entrustment_number)
        return case_lines(entrustment.case) + entrustment_lines(entrustment)
    lines: list[Line] = []
    for case in Case.objects.order_by("id"):
        lines += case_lines(case)
    for entrustment in Entrustment.objects.select_related("case").order_by("id"):
        lines += entrustment_lines(entrustment)
    return lines + unbalanced_anywhere()


def unbalanced_anywhere() -> list[Line]:
    """Transactions not tied to an entrustment (the seizures) are checked here; the others per entrustment."""
    from .invariants import _unbalanced
    from .models import Entry

    return _unbalanced("-", Entry.objects.filter(transaction__entrustment=None))
