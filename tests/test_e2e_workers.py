"""Side effects really leave the web process: a real Celery worker, on both brokers.

1. PostgreSQL + Redis (production shape): a service commits, `on_commit` enqueues the
   notification on Redis, a worker process picks it up and writes the notifications.
2. SQLite + the serverless filesystem broker (the `make run` shape), in a temporary
   folder: migrate, seed the demo, act through a service, and the worker delivers.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.db import connection

from cases.models import Event, EventType, Notification

pytestmark = [pytest.mark.e2e]
ROOT = Path(__file__).resolve().parent.parent
CELERY = [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo", "-l", "warning",
          "--without-heartbeat", "--without-gossip", "--without-mingle"]


def start_worker(env):
    return subprocess.Popen(CELERY, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    return proc.stdout.read().decode(errors="replace")


def wait_for(predicate, timeout=45):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    redis.Redis.from_url(url).ping()  # no Redis: the test fails here, it does not skip
    return url


@pytest.mark.django_db(transaction=True)
def test_a_worker_on_redis_delivers_notifications_after_commit(world, flow, redis_url):
    assert connection.vendor == "postgresql"
    entrustment = flow.to("draft")  # committed: this test runs outside a wrapping transaction
    # A queue of this run's own, so that no other worker on the same Redis takes the message.
    env = {**os.environ, "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": redis_url,
           "CELERY_RESULT_BACKEND": redis_url, "CELERY_TASK_DEFAULT_QUEUE": f"e2e-{uuid.uuid4().hex[:8]}"}
    worker = start_worker(env)
    try:
        # The action runs in its own process, configured from the environment like the web server.
        subprocess.run([sys.executable, "manage.py", "shell", "-c",
                        "from django.contrib.auth.models import User; from cases.models import Entrustment; "
                        "from cases import services; services.entrustment_submit("
                        f"actor=User.objects.get(username='shunyi_approver'), entrustment=Entrustment.objects.get("
                        f"pk={entrustment.pk}))"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
        event = Event.objects.get(entrustment=entrustment, type=EventType.TRANSITION, to_state="submitted")
        delivered = wait_for(lambda: Notification.objects.filter(event=event).exists())
    finally:
        log = stop(worker)
    assert delivered, log
    # The preparer, BCE's people: everyone concerned but the approver who acted.
    notified = set(Notification.objects.filter(event=event).values_list("user__username", flat=True))
    assert "shunyi_officer" in notified and "bce_approver" in notified
    assert "shunyi_approver" not in notified


def test_the_embedded_setup_runs_a_worker_on_sqlite_and_the_filesystem_broker(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "REDIS_URL"))}
    env.update(PORTAL_VAR_DIR=str(tmp_path), DEMO_PASSWORD="a-test-demo-password")

    def manage(*args, code=None):
        cmd = [sys.executable, "manage.py", *args] + (["-c", code] if code else [])
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True).stdout

    manage("migrate", "--noinput", "-v0")
    out = manage("seed_demo")
    assert "shunyi_officer" in out and "a-test-demo-password" in out
    assert (tmp_path / "portal.sqlite3").exists()
    worker = start_worker(env)
    try:
        manage("shell", code=(
            "from django.contrib.auth.models import User; from cases.models import Entrustment; "
            "from cases import services; "
            "services.entrustment_accept(actor=User.objects.get(username='bce_approver'), "
            "entrustment=Entrustment.objects.get())"))
        count = "from cases.models import Notification; print(Notification.objects.count())"
        delivered = wait_for(lambda: int(manage("shell", code=count).split()[-1]) > 0)
    finally:
        log = stop(worker)
    assert delivered, log


def _database_url():
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
