from django.apps import AppConfig


class CounterpartiesConfig(AppConfig):
    name = "counterparties"
    default_auto_field = "django.db.models.BigAutoField"
