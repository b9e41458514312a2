"""Where rows enter the chain.

Signals, not calls in our services, on purpose: the chain must cover every writer of an event or a
history row — services, the admin, shell sessions, data loads, apps added later — and a receiver on
the models' own signals is the one place none of them can forget. It runs inside the writer's
transaction, so the row and its link commit or roll back together.
"""

from contextlib import contextmanager

from django.db.models.signals import post_save
from simple_history.signals import post_create_historical_record

from .chain import append


def chain_event(sender, instance, created, using=None, **kwargs):
    if created:
        append(instance, using=using)


def chain_history_row(sender, history_instance, using=None, **kwargs):
    # simple-history passes using=None unless the model opts into its base model's database.
    append(history_instance, using=using or history_instance._state.db)


def connect():
    from cases.models import Event

    post_save.connect(chain_event, sender=Event, dispatch_uid="audit.chain_event")
    # No sender: every historical model of every app, including apps added after this one.
    post_create_historical_record.connect(chain_history_row, dispatch_uid="audit.chain_history_row")


def adopt_after_migrate(sender, using, **kwargs):
    """An existing database gets a chain: after the last migration, chain the rows already there.

    After `migrate` (not in a data migration) because only then do the live models match the tables;
    skipped while any migration is still unapplied (e.g. migrating backwards). adopt_existing() does
    nothing once the chain has started.
    """
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    from .chain import adopt_existing

    executor = MigrationExecutor(connections[using])
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        return
    adopt_existing(using=using)


@contextmanager
def paused():
    """Rows written inside are not chained: for measuring the hook's cost and for testing adoption.
    verify() reports any such row as "row not chained" once the chain has started."""
    from cases.models import Event

    post_save.disconnect(chain_event, sender=Event, dispatch_uid="audit.chain_event")
    post_create_historical_record.disconnect(chain_history_row, dispatch_uid="audit.chain_history_row")
    try:
        yield
    finally:
        connect()
