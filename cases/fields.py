from django import forms
from django.core import checks
from django.db import models


class BaseUnitsField(models.Field):
    """An integer amount of an asset's smallest unit (satoshi, wei, sun). Python sees an `int`.

    Wei amounts overflow 64-bit integers (PlusToken's 833,083 ETH is 8.3e23 wei; 10 ETH is
    already past 2^63), so PostgreSQL stores NUMERIC(40, 0). SQLite would turn such a number
    into a lossy REAL even in a NUMERIC column, so there it is stored as canonical decimal
    text. Sums of these fields are therefore taken in Python (`sum_units`), never with SQL
    SUM, so that both databases give exact results. Sign checks still work on SQLite text
    ("-5" < "0" < "5" as strings), but ordering by amount does not: don't order by it.
    """

    description = "Integer amount in an asset's base units"

    def db_type(self, connection):
        return "numeric(40, 0)" if connection.vendor == "postgresql" else "varchar(41)"

    def check(self, **kwargs):
        return [*super().check(**kwargs), *([] if not self.null else [checks.Warning("Amounts are never null.")])]

    def from_db_value(self, value, expression, connection):
        return None if value is None else int(value)

    def to_python(self, value):
        if value is None or isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise forms.ValidationError("Enter a whole number of base units.")

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return None if value is None else self.to_python(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        value = value if prepared else self.get_prep_value(value)
        if value is None or connection.vendor == "postgresql":
            return value
        return str(value)

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": forms.IntegerField, **kwargs})


def sum_units(queryset, field: str) -> int:
    """Exact sum of a BaseUnitsField over a queryset (see BaseUnitsField on why not SQL SUM)."""
    return sum(queryset.values_list(field, flat=True), 0)
