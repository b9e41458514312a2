"""The authorisation matrix: every URL of the portal × every persona × own or other organisation's object.

The expected status of each cell is written down here, in tables, from the rules of the process
(DOMAIN.md, README "Roles"): a bureau sees its own cases; CBEX what was submitted to it; an agency what
it is appointed to; the platform the entrustments that chose it; supervisors, the Legal Affairs Corps
and the staff superuser read everything; nobody else sees anything. Nothing is derived from
`cases.selectors` or `cases.actions`: those are what is under test.

Zero leaks: every answer to a persona (pages, partials, error pages, CSV and XLSX exports) is searched
for the entrustment number and the case number of each entrustment that persona may not see.

Run time: the world (four entrustments, three of them driven through the real services) is built once
for the module inside a transaction that is rolled back at the end; each test runs in a savepoint of it
(pytest-django's `db`). The admin decides by `is_staff` alone (AdminSite.has_permission), the same for
every non-staff persona, so each admin URL is requested by anonymous, the staff superuser, a former member
and CBEX's approver (the most powerful non-staff persona); the admin index and every changelist are
requested by one persona of each organisation (a different role each time) and the others.
Cells whose answer depends on the organisation only are likewise asked of one role per organisation,
rotating; cells whose answer depends on the role (intake forms, actions, two-factor pages) of everyone.
"""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from django.db import transaction
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from cases import actions as action_registry
from cases.models import Case, Entrustment, EvidenceFile, Holding

from .factories import sign_in
from .security_world import MEMBERS, ORGS, PERSONAS, SecurityWorld, team

pytestmark = pytest.mark.security

# --------------------------------------------------------------------------- who sees what (the specification)

OVERSEERS = team("S", "L") | {"admin"}
SEES = {
    "A_draft": team("A") | OVERSEERS,  # a draft is the bureau's own business
    "A_selling": team("A", "C", "G", "P") | OVERSEERS,
    "A_credited": team("A", "C", "G", "P") | OVERSEERS,
    "B_submitted": team("B", "C") | OVERSEERS,  # agency B and agency A are appointed to nothing of bureau B
}
BUREAU_OF = {"A_draft": "A", "A_selling": "A", "A_credited": "A", "B_submitted": "B"}
EVIDENCE_OF = {"A_draft_case": "A_draft", "A_selling_entrustment": "A_selling",
               "B_submitted_entrustment": "B_submitted"}
SIGNED_IN = MEMBERS | {"admin", "ex"}  # "disabled" is an account switched off: Django treats it as anonymous
# Who must use the second factor: staff, every approver, and officers of the organisations that move value.
TWO_FACTOR = {f"{o}_app" for o in ORGS} | {"G_off", "N_off", "P_off", "K_off", "F_off", "admin"}
BUREAU_OFFICERS = {"A_off", "B_off"}

# The actions each entrustment, lot and return offers now, and who may take them (four eyes included:
# A_draft was prepared by Shunyi's officer, the return by Shunyi's officer, the award by nobody yet).
OPEN_ACTIONS = {
    "A_draft": {"submit": {"A_app"}, "cancel": {"A_app"}, "evidence_add": {"A_off", "A_app"}},
    "A_selling": {"evidence_add": {"A_off", "A_app", "C_off", "C_app", "G_off", "G_app"},
                  "declare_default": {"C_app"}, "open_dispute": {"A_app", "C_app"}},
    "A_credited": {"evidence_add": {"A_off", "A_app", "C_off", "C_app", "G_off", "G_app"},
                   "open_dispute": {"A_app", "C_app"}, "victim_return_prepare": {"A_off"}},
    "B_submitted": {"accept": {"C_app"}, "return": {"C_off", "C_app"}, "refuse": {"C_app"}, "cancel": {"B_app"},
                    "evidence_add": {"B_off", "B_app", "C_off", "C_app"}, "open_dispute": {"B_app", "C_app"}},
}
OPEN_LOT_ACTIONS = {
    "A_selling_inquiry": {"quote_record": {"G_off"}, "inquiry_close": {"G_off"},
                          "lot_suspend": {"G_off", "C_off", "C_app"}},
    "A_selling_reserved": {"inquiry_open": {"G_off"}},
    "A_credited_executed": {},
}
LOT_OF = {"A_selling_inquiry": "A_selling", "A_selling_reserved": "A_selling", "A_credited_executed": "A_credited"}
OPEN_RETURN_ACTIONS = {"victim_return_approve": {"A_app"}}

# --------------------------------------------------------------------------- the portal's URLs, classified

PORTAL_ROUTES = {
    "": "home",
    "entrustments/<int:pk>/": "entrustment-detail",
    "entrustments/<int:pk>/actions/<slug:key>/": "entrustment-action",
    "lots/<int:pk>/actions/<slug:key>/": "lot-action",
    "victim-returns/<int:pk>/actions/<slug:key>/": "victim-return-action",
    "entrustments/": "entrustment-list",
    "entrustments/export.<slug:fmt>": "entrustment-export",
    "dashboard/": "dashboard",
    "notifications/": "notifications",
    "notifications/<int:pk>/read/": "notification-read",
    "notifications/read-all/": "notification-read-all",
    "cases/new/": "case-intake",
    "cases/<int:pk>/": "case-detail",
    "cases/<int:pk>/basis/": "case-basis",
    "cases/<int:pk>/holdings/": "case-holdings",
    "cases/<int:pk>/holdings/import/": "case-import",
    "cases/<int:pk>/evidence/": "case-evidence",
    "cases/<int:pk>/entrust/": "case-entrust",
    "evidence/<int:pk>/download/": "evidence-download",
    "documents/<int:pk>/download/": "document-download",
    "documents/<int:pk>/regenerate/": "document-regenerate",
    "accounts/login/": "login",
    "accounts/logout/": "logout",
    "accounts/password/": "password_change",
    "accounts/password/done/": "password_change_done",
    "accounts/two-factor/": "accounts:two-factor",
    "accounts/two-factor/enrol/": "accounts:enrol",
    "accounts/two-factor/backup-codes/": "accounts:backup-codes",
    "i18n/setlang/": "set_language",
    "admin/login/": "admin-login-redirect",  # the portal's redirect, which shadows the admin's own login
    "verify/": "documents:verify-upload",
    "verify/<str:token>/": "documents:verify",
}
# The admin site's own views (besides the per-model ones).
ADMIN_SITE_ROUTES = {
    "admin/": "index", "admin/login/": "login", "admin/logout/": "logout", "admin/password_change/": "password_change",
    "admin/password_change/done/": "password_change_done", "admin/autocomplete/": "autocomplete",
    "admin/jsi18n/": "jsi18n", "admin/r/<path:content_type_id>/<path:object_id>/": "view_on_site",
    "admin/(?P<url>.*)$": "catch_all",
}
# Every model registered in the admin, with what the staff superuser gets from its add and delete pages:
# the business record is read-only there (403), reference data and accounts are maintained (200).
EDITABLE, READ_ONLY = (200, 200), (403, 403)
ADMIN_MODELS = {
    "auth.group": EDITABLE, "auth.user": EDITABLE,
    "django_celery_beat.periodictask": EDITABLE, "django_celery_beat.clockedschedule": EDITABLE,
    "django_celery_beat.crontabschedule": EDITABLE, "django_celery_beat.solarschedule": EDITABLE,
    "django_celery_beat.intervalschedule": EDITABLE,
    "axes.accessattempt": (403, 200), "axes.accesslog": (403, 200), "axes.accessfailurelog": (403, 200),
    "cases.entrustment": READ_ONLY, "cases.lot": READ_ONLY, "cases.event": READ_ONLY, "cases.approval": READ_ONLY,
    "cases.notification": READ_ONLY, "cases.case": READ_ONLY, "cases.holding": READ_ONLY,
    "cases.evidencefile": READ_ONLY, "cases.detection": READ_ONLY, "cases.cointransfer": READ_ONLY,
    "cases.reserveprice": READ_ONLY, "cases.inquiryround": READ_ONLY, "cases.quote": READ_ONLY,
    "cases.fill": READ_ONLY, "cases.asset": EDITABLE, "cases.jurisdiction": EDITABLE,
    "cases.disposalpolicy": EDITABLE, "cases.sequence": READ_ONLY, "cases.whitelistedaddress": READ_ONLY,
    "agencies.organisation": EDITABLE, "agencies.membership": EDITABLE,
    "agencies.appointment": READ_ONLY, "agencies.performancebond": READ_ONLY,
    "settlements.offshorereceipt": READ_ONLY, "settlements.fxconversion": READ_ONLY,
    "settlements.specialaccountcredit": READ_ONLY, "settlements.treasuryremittance": READ_ONLY,
    "settlements.victimreturn": READ_ONLY,
    "documents.document": READ_ONLY,
    "accounts.sealedtotpdevice": (403, 200),  # deleting a device is the reset of a lost authenticator
}
ADMIN_MODEL_SUFFIXES = {"": "changelist", "add/": "add", "<path:object_id>/history/": "history",
                        "<path:object_id>/delete/": "delete", "<path:object_id>/change/": "change",
                        "<path:object_id>/": "redirect", "^([^/]+)/history/([^/]+)/$": "history_form"}


def walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from walk(p.url_patterns, prefix + str(p.pattern))
        else:
            assert isinstance(p, URLPattern)
            yield prefix + str(p.pattern)


def classify(route: str) -> str | None:
    if route in PORTAL_ROUTES:
        return "portal"
    if route in ADMIN_SITE_ROUTES:
        return "admin-site"
    app_list = re.fullmatch(r"admin/\^\(\?P<app_label>(.*)\)/\$", route)
    if app_list:
        return "admin-app-list"
    for model in ADMIN_MODELS:
        base = "admin/" + model.replace(".", "/") + "/"
        if route.startswith(base) and route[len(base):] in ADMIN_MODEL_SUFFIXES:
            return "admin-model"
    if route == "admin/auth/user/<id>/password/":  # UserAdmin's own view: set someone's password
        return "admin-model"
    return None


def test_every_url_pattern_is_classified_and_every_classified_route_exists():
    routes = list(walk(get_resolver().url_patterns))
    unclassified = [r for r in routes if classify(r) is None]
    assert unclassified == [], f"classify these new URLs in the matrix: {unclassified}"
    stale = set(PORTAL_ROUTES) - set(routes)
    assert stale == set(), f"routes the matrix expects but the portal lacks: {stale}"
    registered = {f"{m._meta.app_label}.{m._meta.model_name}" for m in __import__("django.contrib.admin").contrib
                  .admin.site._registry}
    assert registered == set(ADMIN_MODELS), (registered ^ set(ADMIN_MODELS))
    # The app list covers exactly the registered apps.
    app_list = next(r for r in routes if classify(r) == "admin-app-list")
    assert set(re.search(r"\((?:\?P<app_label>)(.*)\)", app_list).group(1).split("|")) == {
        m.split(".")[0] for m in ADMIN_MODELS}


# --------------------------------------------------------------------------- the world, once per module


@pytest.fixture(scope="module")
def sw(django_db_setup, django_db_blocker, tmp_path_factory):
    media = tmp_path_factory.mktemp("matrix-media")
    with django_db_blocker.unblock(), override_settings(MEDIA_ROOT=media):
        outer = transaction.atomic()
        outer.__enter__()
        try:
            yield SecurityWorld()
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


@pytest.fixture
def clients(sw, db):
    result = {}
    for persona in PERSONAS:
        client = Client(raise_request_exception=False, headers={"accept-language": "en"})
        if persona != "anon":
            sign_in(client, sw.users[persona])
        result[persona] = client
    return result


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        data = b"".join(response.streaming_content)
    else:
        data = response.content
    if data[:2] == b"PK":  # XLSX: search the worksheets' and shared strings' XML
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            data = b"".join(z.read(n) for n in z.namelist() if n.endswith(".xml"))
    return data.decode("utf-8", "replace")


class Matrix:
    """Collects every cell that differs from the table, and every leak, then reports them all at once."""

    def __init__(self, sw, clients):
        self.sw, self.clients, self.wrong, self.leaks, self.cells = sw, clients, [], [], 0
        self.hidden = {p: [s for key, seers in SEES.items() if p not in seers for s in sw.secrets(key)]
                       for p in PERSONAS}

    def check(self, persona, method, url, expected, data=None, htmx=False, echo=""):
        client = self.clients[persona]
        headers = {"HX-Request": "true"} if htmx else {}
        response = (client.post(url, data or {}, headers=headers) if method == "POST"
                    else client.get(url, headers=headers))
        self.cells += 1
        if response.status_code != expected:
            self.wrong.append(f"{persona:9} {method:4} {url} -> {response.status_code}, expected {expected}")
        if expected == 302 and response.status_code == 302 and persona not in SIGNED_IN and url.startswith("/"):
            location = response["Location"]
            if not (location.startswith(reverse("login")) or location.startswith("/admin/login/")
                    or url == "/admin/logout/" and location == "/admin/"  # the admin index then asks to sign in
                    or "/verify/" in url or url.startswith(("/i18n/", "/accounts/logout/", "/admin/login/"))):
                self.wrong.append(f"{persona:9} {method:4} {url} -> redirected to {location}, not to sign in")
        text = body_of(response)
        if echo:  # what the person typed into the search box comes back in it; that is not a leak
            text = text.replace(echo, "")
        for secret in self.hidden[persona]:
            if secret in text:
                self.leaks.append(f"{persona:9} {method:4} {url} ({response.status_code}) shows {secret}")
        return response

    def assert_clean(self):
        report = "\n".join(self.wrong[:80] + self.leaks[:80])
        assert not self.wrong and not self.leaks, f"{len(self.wrong)} wrong, {len(self.leaks)} leaks:\n{report}"


ROLE_KEYS = ["off", "app", "aud"]


def rotation(i: int) -> set[str]:
    """For a cell whose answer depends on the organisation only: one role per organisation, a different one
    from cell to cell, so that every persona is exercised across the table."""
    return {"anon", "admin", "ex", "disabled"} | {f"{o}_{ROLE_KEYS[(i + n) % 3]}" for n, o in enumerate(ORGS)}


def by_org(rule):
    rule.by_role = False
    return rule


def by_role(rule):
    rule.by_role = True
    return rule


def signed_in(status):
    """`status` for signed-in people; the login page for anonymous visitors and switched-off accounts."""
    return by_org(lambda p: status if p in SIGNED_IN else 302)


def seen_by(seers, ok=200, hidden=404):
    return by_org(lambda p: 302 if p not in SIGNED_IN else (ok if p in seers else hidden))


def editable_by(editors, seers):
    return by_role(lambda p: 302 if p not in SIGNED_IN else 200 if p in editors else 403 if p in seers else 404)


def everyone(status):
    return by_org(lambda p: status)


# --------------------------------------------------------------------------- the portal pages


def portal_cells(sw):
    """(method, url, expectation, data) for every portal URL, filled with own and other organisations' objects."""
    cells = [
        ("GET", reverse("home"), signed_in(200), None),
        # Searching for another bureau's entrustment by its number finds nothing and shows nothing (the case
        # number of a row found would show; the number typed comes back in the search box).
        ("GET", reverse("entrustment-list") + "?q=" + sw.entrustments["B_submitted"].number, signed_in(200),
         sw.entrustments["B_submitted"].number),
        ("GET", reverse("entrustment-list") + "?q=" + sw.entrustments["A_draft"].number, signed_in(200),
         sw.entrustments["A_draft"].number),
        ("GET", reverse("entrustment-list"), signed_in(200), None),
        ("GET", reverse("entrustment-export", args=["csv"]), signed_in(200), None),
        ("GET", reverse("entrustment-export", args=["xlsx"]), signed_in(200), None),
        ("GET", reverse("entrustment-export", args=["pdf"]), signed_in(404), None),
        ("GET", reverse("dashboard"), signed_in(200), None),
        ("GET", reverse("notifications"), signed_in(200), None),
        ("GET", reverse("notification-read", args=[sw.notification.pk]), signed_in(405), None),
        # Only Shunyi's officer holds this notification; for everyone else it does not exist.
        ("POST", reverse("notification-read", args=[sw.notification.pk]),
         by_role(lambda p: 302 if p not in SIGNED_IN or p == "A_off" else 404), {}),
        ("GET", reverse("notification-read-all"), signed_in(405), None),
        ("POST", reverse("notification-read-all"), signed_in(302), {}),
        ("GET", reverse("case-intake"), editable_by(BUREAU_OFFICERS, SIGNED_IN), None),
        ("POST", reverse("case-intake"), editable_by(BUREAU_OFFICERS, SIGNED_IN), {}),
        ("GET", reverse("login"), everyone(200), None),
        ("GET", reverse("password_change"), signed_in(200), None),
        ("POST", reverse("password_change"), signed_in(200), {}),  # the empty form comes back with its errors
        ("GET", reverse("password_change_done"), signed_in(200), None),
        ("GET", reverse("accounts:two-factor"), everyone(302), None),  # verified, or not required: sent on
        ("GET", reverse("accounts:enrol"), by_role(lambda p: 302 if p not in SIGNED_IN or p in TWO_FACTOR else 200),
         None),
        ("GET", reverse("accounts:backup-codes"), by_role(lambda p: 200 if p in TWO_FACTOR else 302), None),
        ("GET", reverse("set_language") + "?next=/", everyone(302), None),
        ("POST", reverse("set_language"), everyone(302), {"language": "en", "next": "/"}),
        ("GET", "/admin/login/", everyone(302), None),
        ("GET", reverse("documents:verify-upload"), everyone(200), None),
        ("POST", reverse("documents:verify-upload"), everyone(400), {}),  # no file
        ("GET", reverse("documents:verify", args=["A" * 32]), everyone(404), None),  # well-formed, never issued
        ("GET", reverse("documents:verify", args=["<script>"]), everyone(404), None),
    ]
    for key, e in sw.entrustments.items():
        case, seers = sw.cases[key], SEES[key]
        bureau = BUREAU_OF[key]
        cells += [
            ("GET", reverse("entrustment-detail", args=[e.pk]), seen_by(seers), None),
            ("GET", reverse("entrustment-action", args=[e.pk, "evidence_add"]), signed_in(405), None),
            ("GET", reverse("case-detail", args=[case.pk]), seen_by(seers), None),
            ("POST", reverse("case-detail", args=[case.pk]), signed_in(405), {}),
        ]
        for name in ("case-basis", "case-holdings", "case-import", "case-entrust"):
            for method in ("GET", "POST"):
                cells.append((method, reverse(name, args=[case.pk]), editable_by({f"{bureau}_off"}, seers), {}))
        for method in ("GET", "POST"):
            cells.append((method, reverse("case-evidence", args=[case.pk]),
                          editable_by({f"{bureau}_off", f"{bureau}_app"}, seers), {}))
    for key, lot in sw.lots.items():
        cells.append(("GET", reverse("lot-action", args=[lot.pk, "inquiry_open"]), signed_in(405), None))
    cells.append(("GET", reverse("victim-return-action", args=[sw.victim_return.pk, "victim_return_approve"]),
                  signed_in(405), None))
    for key, evidence in sw.evidence.items():
        seers = SEES[EVIDENCE_OF[key]]
        cells += [("GET", reverse("evidence-download", args=[evidence.pk]), seen_by(seers), None),
                  ("POST", reverse("evidence-download", args=[evidence.pk]), signed_in(405), {})]
    for key, document in sw.documents.items():
        seers = SEES[key]
        cells += [
            ("GET", reverse("document-download", args=[document.pk]), seen_by(seers), None),
            ("GET", reverse("document-regenerate", args=[document.pk]), signed_in(405), None),
            # Without a reason nothing is issued: back to the entrustment page with the refusal.
            ("POST", reverse("document-regenerate", args=[document.pk]), seen_by(seers, ok=302), {"reason": ""}),
            # The public verify page answers anybody, signed in or not, about any issued document.
            ("GET", reverse("documents:verify", args=[document.token]), everyone(200), None),
        ]
    return cells


def test_every_portal_url_answers_every_persona_as_the_table_says_and_leaks_nothing(sw, clients):
    from documents.models import Document

    counts = lambda: [m.objects.count() for m in (Case, Holding, Entrustment, EvidenceFile, Document)]  # noqa: E731
    before = counts()
    matrix = Matrix(sw, clients)
    cells = portal_cells(sw)
    for persona in PERSONAS:
        for i, (method, url, expected, data) in enumerate(cells):
            if expected.by_role or persona in rotation(i):
                if isinstance(data, str):  # a search: `data` is what was typed
                    matrix.check(persona, method, url, expected(persona), echo=data)
                else:
                    matrix.check(persona, method, url, expected(persona), data)
        # Last, since it ends the session: signing out is a POST and lands on the login page.
        matrix.check(persona, "GET", reverse("logout"), 405)
        matrix.check(persona, "POST", reverse("logout"), 302)
        matrix.check(persona, "GET", reverse("home"), 302)
    assert counts() == before, "a refused or empty form saved something"
    matrix.assert_clean()
    assert matrix.cells >= 2000


# --------------------------------------------------------------------------- the actions of the entrustment page


def action_expectation(open_actions: dict, key: str, seers):
    """Posted without the page's token: not visible 404, visible but not offered 403, offered 400 (the token is
    the only thing missing; nothing is done)."""
    takers = open_actions.get(key, set())
    return lambda p: 302 if p not in SIGNED_IN else 400 if p in takers else 403 if p in seers else 404


def test_every_action_url_is_open_exactly_to_the_persona_whose_job_it_is(sw, clients):
    from cases.models import Event

    events_before = Event.objects.count()
    matrix = Matrix(sw, clients)
    by_target = {kind: [a.key for a in action_registry.ACTIONS if a.target == kind]
                 for kind in (action_registry.ENTRUSTMENT, action_registry.LOT, action_registry.VICTIM_RETURN)}
    named = set().union(*(set(v) for v in OPEN_ACTIONS.values()), *(set(v) for v in OPEN_LOT_ACTIONS.values()),
                        OPEN_RETURN_ACTIONS)
    assert named <= set(action_registry.REGISTRY), named - set(action_registry.REGISTRY)

    def post_all(url_name, pk, keys, open_actions, seers):
        closed = [k for k in keys if k not in open_actions]
        for n, persona in enumerate(PERSONAS):
            # Those who see the record are asked every open action and an eighth of the closed ones, a different
            # eighth each (over eight or more such personas every key is asked); the invisible get 404 whatever
            # the key, so asking them for the keys someone could take is enough.
            if persona in seers:
                asked = sorted(open_actions) + closed[n % 8::8]
            else:
                asked = sorted(open_actions) or keys[:1]
            for key in asked:
                matrix.check(persona, "POST", reverse(url_name, args=[pk, key]),
                             action_expectation(open_actions, key, seers)(persona), {}, htmx=True)
            # An unknown action, and an action of another kind of target, do not exist.
            other_kind = by_target["lot"] if url_name != "lot-action" else by_target["entrustment"]
            for key in ("no-such-action", other_kind[0]):
                matrix.check(persona, "POST", reverse(url_name, args=[pk, key]), seen_by(set())(persona), {},
                             htmx=True)

    for key, e in sw.entrustments.items():
        post_all("entrustment-action", e.pk, by_target["entrustment"], OPEN_ACTIONS[key], SEES[key])
    for key, lot in sw.lots.items():
        post_all("lot-action", lot.pk, by_target["lot"], OPEN_LOT_ACTIONS[key], SEES[LOT_OF[key]])
    post_all("victim-return-action", sw.victim_return.pk, by_target["victim_return"], OPEN_RETURN_ACTIONS,
             SEES["A_credited"])
    assert Event.objects.count() == events_before, "an action without its page token did something"
    matrix.assert_clean()


# --------------------------------------------------------------------------- the admin


ADMIN_EVERY_URL = ["anon", "admin", "ex", "C_app"]


def admin_cells(sw):
    from django.apps import apps
    from django.contrib import admin as django_admin
    from django.contrib.contenttypes.models import ContentType

    staff = lambda ok: (lambda p: ok if p == "admin" else 302)  # noqa: E731
    entrustment = sw.entrustments["A_selling"]
    ct = ContentType.objects.get_for_model(Entrustment)
    cells = [
        ("GET", "/admin/", staff(200)),
        ("GET", "/admin/cases/", staff(200)),
        ("GET", "/admin/nosuchapp/", staff(404)),
        ("GET", "/admin/logout/", staff(405)),
        ("GET", "/admin/password_change/", staff(200)),
        ("GET", "/admin/password_change/done/", staff(200)),
        ("GET", "/admin/autocomplete/", staff(403)),  # without a field to complete
        ("GET", "/admin/jsi18n/", staff(200)),
        ("GET", f"/admin/r/{ct.pk}/{entrustment.pk}/", staff(404)),  # entrustments have no absolute URL
        ("GET", "/admin/no/such/page/", staff(404)),
        ("GET", f"/admin/auth/user/{sw.users['A_off'].pk}/password/", staff(200)),
    ]
    for label, (add, delete) in ADMIN_MODELS.items():
        model = apps.get_model(label)
        base = "/admin/" + label.replace(".", "/") + "/"
        obj = model._default_manager.order_by("pk").first()
        cells += [("GET", base, staff(200)), ("GET", base + "add/", staff(add))]
        if obj is None:  # a missing object: the admin goes back to its index with a message (history: 404 with
            # simple-history; delete: 403 first where nothing may be deleted)
            history = 404 if hasattr(model, "history") else 302
            cells += [("GET", f"{base}999999/change/", staff(302)), ("GET", f"{base}999999/history/", staff(history)),
                      ("GET", f"{base}999999/delete/", staff(302 if delete == 200 else 403))]
            continue
        cells += [("GET", f"{base}{obj.pk}/change/", staff(200)), ("GET", f"{base}{obj.pk}/history/", staff(200)),
                  ("GET", f"{base}{obj.pk}/delete/", staff(delete)), ("GET", f"{base}{obj.pk}/", staff(302)),
                  ("POST", f"{base}{obj.pk}/delete/", lambda p: 302 if p != "admin" else None)]
        if hasattr(model, "history") and isinstance(django_admin.site._registry[model], object):
            record = model.history.filter(**{model._meta.pk.attname: obj.pk}).first()
            if record is not None and "simple_history" in {c.__module__.split(".")[0] for c in
                                                           type(django_admin.site._registry[model]).__mro__}:
                cells.append(("GET", f"{base}{obj.pk}/history/{record.history_id}/", staff(200)))
    return cells


def test_the_admin_is_for_staff_only_and_keeps_the_record_read_only(sw, clients):
    matrix = Matrix(sw, clients)
    cells = admin_cells(sw)
    for persona in PERSONAS:
        for i, (method, url, expected) in enumerate(cells):
            status = expected(persona)
            if status is None:  # the staff superuser's deletions are not tried here
                continue
            changelist = method == "GET" and url.count("/") == 4 and not url.endswith(("add/", "done/"))
            if persona in ADMIN_EVERY_URL or url in ("/admin/", "/admin/cases/") or (
                    changelist and persona in rotation(i)):
                matrix.check(persona, method, url, status)
    matrix.assert_clean()
