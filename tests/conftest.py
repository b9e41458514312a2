import pytest

from portal.celery import app as celery_app

from .factories import World
from .flow import Flow

# Tests run tasks in-process; workers are exercised by the e2e tests.
celery_app.conf.task_always_eager = True


@pytest.fixture
def world(db):
    return World()


@pytest.fixture
def flow(world):
    return Flow(world)
