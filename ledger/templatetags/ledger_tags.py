"""`{% load ledger_tags %}{% ledger_table entrustment %}`: the ledger beside the record, read-only."""

from django import template

from ledger.invariants import case_lines, entrustment_lines

register = template.Library()


@register.inclusion_tag("ledger/entrustment_ledger.html")
def ledger_table(entrustment):
    lines = case_lines(entrustment.case) + entrustment_lines(entrustment)
    return {"lines": lines, "differences": [line for line in lines if not line.ok]}
