"""`seed_demo` builds the demo world once, prints working logins, and changes nothing when run again."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from agencies.models import Membership, Organisation
from cases import demo
from cases.models import Asset, Case, DisposalPolicy, Entrustment, Event, Holding, Jurisdiction

from .factories import sign_in

User = get_user_model()
COUNTED = [Jurisdiction, DisposalPolicy, Organisation, User, Membership, Asset, Case, Holding, Entrustment, Event]
PASSWORD = "demo-pw-for-tests-only"
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # PBKDF2 would make each seed take seconds


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS


def counts() -> dict:
    return {m.__name__: m.objects.count() for m in COUNTED}


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


@pytest.fixture
def demo_password(monkeypatch, settings, tmp_path):
    """The password comes from DEMO_PASSWORD; VAR_DIR points at an empty temp dir to prove nothing is written."""
    monkeypatch.setenv("DEMO_PASSWORD", PASSWORD)
    settings.VAR_DIR = tmp_path
    return PASSWORD


def test_seeding_twice_gives_the_same_world(db, demo_password):
    first = seed()
    after_first = counts()
    second = seed()
    assert counts() == after_first
    assert "(created)" in first and "(already there)" in second
    assert after_first["Organisation"] == len(demo.ORGANISATIONS)
    assert after_first["User"] == len(demo.PERSONAS) + 1  # and the admin
    assert after_first["Asset"] == len(demo.ASSETS)
    assert after_first["Case"] == after_first["Entrustment"] == 1
    assert after_first["Holding"] == len(demo.SAMPLE_HOLDINGS)


def test_the_output_lists_every_login_with_its_password(db, demo_password):
    output = seed()
    assert demo_password in output
    for username, (org, role, _) in demo.PERSONAS.items():
        line = next(line for line in output.splitlines() if line.strip().startswith(username + " "))
        assert role in line and org in line
    assert "admin" in output


def test_the_printed_password_opens_every_account_and_nothing_is_written_to_var(db, demo_password, tmp_path):
    seed()
    for username in [*demo.PERSONAS, "admin"]:
        assert User.objects.get(username=username).check_password(demo_password), username
    assert list(tmp_path.iterdir()) == []  # the password came from the environment, no file was written


def test_a_changed_demo_password_is_applied_on_the_next_run(db, demo_password, monkeypatch):
    seed()
    monkeypatch.setenv("DEMO_PASSWORD", "another-demo-password")
    assert "another-demo-password" in seed()
    user = User.objects.get(username="shunyi_officer")
    assert user.check_password("another-demo-password") and not user.check_password(demo_password)


def test_without_demo_password_one_password_is_generated_and_kept_outside_the_repo(db, monkeypatch, settings,
                                                                                   tmp_path):
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    settings.VAR_DIR = tmp_path
    seed()
    stored = tmp_path / "demo-password"
    password = stored.read_text().strip()
    assert len(password) >= 12
    assert stored.stat().st_mode & 0o777 == 0o600
    assert password in seed()  # the second run reads the same file
    assert User.objects.get(username="bce_approver").check_password(password)


def test_every_persona_can_open_the_home_page(db, demo_password, client):
    seed()
    the_entrustment = Entrustment.objects.get()
    for username in demo.PERSONAS:
        sign_in(client, User.objects.get(username=username))
        response = client.get(reverse("home"))
        assert response.status_code == 200, username
    sign_in(client, User.objects.get(username="admin"))
    assert client.get("/admin/").status_code == 200
    assert client.get(f"/admin/cases/entrustment/{the_entrustment.pk}/change/").status_code == 200


SEES_THE_SAMPLE = {"shunyi_officer": True, "shunyi_approver": True, "bce_officer": True, "bce_approver": True,
                   "supervisor": True, "corps_auditor": True, "chaoyang_officer": False, "agency_officer": False,
                   "agency_approver": False, "agencyb_officer": False, "witness_officer": False}


def test_the_sample_entrustment_is_visible_to_the_right_personas(db, demo_password, client):
    assert set(SEES_THE_SAMPLE) == set(demo.PERSONAS)
    seed()
    sample = Entrustment.objects.get()
    for username, sees_the_sample in SEES_THE_SAMPLE.items():
        sign_in(client, User.objects.get(username=username))
        numbers = {e.number for e in client.get(reverse("home")).context["page"]}
        assert (sample.number in numbers) is sees_the_sample, username
        detail = client.get(reverse("entrustment-detail", args=[sample.pk]))
        assert detail.status_code == (200 if sees_the_sample else 404), username
