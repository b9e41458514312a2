from decimal import Decimal

from django.db import models


class BaseUnitsField(models.DecimalField):
    """An integer amount of an asset's smallest unit (satoshi, wei, sun).

    Stored as NUMERIC(40, 0) because wei amounts overflow a 64-bit integer: PlusToken's
    833,083 ETH is 8.3e23 wei. Python code always sees an `int`.
    """

    def __init__(self, *args, **kwargs):
        kwargs["max_digits"] = 40
        kwargs["decimal_places"] = 0
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("max_digits", None)
        kwargs.pop("decimal_places", None)
        return name, path, args, kwargs

    def from_db_value(self, value, expression, connection):
        return None if value is None else int(value)

    def to_python(self, value):
        value = super().to_python(value)
        return None if value is None else int(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        if isinstance(value, int):
            value = Decimal(value)
        return super().get_db_prep_value(value, connection, prepared)
