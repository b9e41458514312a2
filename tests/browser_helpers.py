"""Drive the portal in Chromium as its people: one browser context per person, Chinese locale.

Nothing here reads a label: pages are found by URL, forms by their action URL, fields by
their `name`, action boxes by their `id` (`action-<key>` or `action-<key>-lot<pk>`).
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from urllib.parse import urlparse

from django.db import connections
from django.urls import reverse
from django_otp.oath import totp
from playwright.sync_api import Browser, Page, Response, expect, sync_playwright

from accounts.models import SealedTOTPDevice

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
TIMEOUT_MS = 15_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "Br0wser-test-pw!"


@contextlib.contextmanager
def chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # Inside Playwright's sync API the ORM sees another context, hence another database connection
            # than the test's own; close it here, or the test database cannot be dropped at the end.
            connections.close_all()


class Camera:
    """Numbered full-page screenshots: test-artifacts/browser/NN-step.png."""

    def __init__(self, prefix: str = ""):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.prefix, self.n, self.files = prefix, 0, []

    def shoot(self, page: Page, step: str) -> Path:
        self.n += 1
        path = ARTIFACTS / f"{self.prefix}{self.n:02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower()).strip('-')}.png"
        page.screenshot(path=str(path), full_page=True)
        self.files.append(path)
        return path


class Board:
    """What every person's page has seen: a version bumped by each action, to know when a page is stale."""

    def __init__(self):
        self.version = 0
        self.server_errors: list[str] = []  # any 5xx answer
        self.missing: list[str] = []  # 404s of pages and static files (the favicon aside)
        self.js_errors: list[str] = []

    def response(self, who: str, r: Response):
        line = f"{who}: {r.request.method} {r.url} -> {r.status}"
        if r.status >= 500:
            self.server_errors.append(line)
        elif r.status == 404 and not urlparse(r.url).path.endswith("/favicon.ico"):
            self.missing.append(line)

    def console(self, who: str, msg):
        # A failed load is reported by `response` with its URL; anything else logged as an error is a JS problem.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.js_errors.append(f"{who}: {msg.text}")


class Person:
    """One person in their own browser context, signed in through the login page."""

    def __init__(self, browser: Browser, base_url: str, user, board: Board):
        self.user, self.base_url, self.board = user, base_url.rstrip("/"), board
        self.context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.set_default_navigation_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.seen = -1  # the board version the open entrustment page shows
        name = user.username
        self.page.on("pageerror", lambda exc: board.js_errors.append(f"{name}: {exc}"))
        self.page.on("console", lambda msg: board.console(name, msg))
        self.page.on("response", lambda r: board.response(name, r))

    # --- pages

    def url(self, name, *args) -> str:
        return self.base_url + reverse(name, args=args)

    def goto(self, url: str) -> Response:
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == 200, (url, response and response.status)
        self.assert_chinese()
        return response

    def assert_chinese(self):
        expect(self.page.locator("html")).to_have_attribute("lang", "zh-Hans")

    def login(self):
        self.goto(self.url("login"))
        form = self.page.locator("main form:has(input[name=password])")
        form.locator("input[name=username]").fill(self.user.username)
        form.locator("input[name=password]").fill(PASSWORD)
        with self.page.expect_navigation(wait_until="load") as nav:
            form.locator("button[type=submit]").click()
        assert nav.value is not None and nav.value.status == 200
        assert urlparse(self.page.url).path != reverse("login"), f"{self.user.username} could not sign in"
        # Those who approve or move value give a second factor: enrol on first sign-in, else a code.
        path = urlparse(self.page.url).path
        if path == reverse("accounts:enrol"):
            self._second_factor("accounts:enrol", confirmed=False)
            expect(self.page.locator("#backup-codes li")).to_have_count(10)
            self.goto(self.url("home"))
        elif path == reverse("accounts:two-factor"):
            self._second_factor("accounts:two-factor", confirmed=True)
        # Signed in: the header shows the sign-out form.
        expect(self.page.locator(f"header form[action='{reverse('logout')}']")).to_have_count(1)
        self.assert_chinese()
        return self

    def _second_factor(self, view: str, *, confirmed: bool):
        """Type the code the person's authenticator app shows now, computed from the device's key."""
        device = SealedTOTPDevice.objects.get(user=self.user, confirmed=confirmed)
        form = self.page.locator(f"main form[action='{reverse(view)}']")
        form.locator("input[name=code]").fill(totp_now(device))
        with self.page.expect_navigation(wait_until="load") as nav:
            form.locator("button[type=submit]").click()
        assert nav.value is not None and nav.value.status == 200
        self.assert_chinese()

    def open_entrustment(self, entrustment):
        self.goto(self.url("entrustment-detail", entrustment.pk))
        self.seen = self.board.version
        return self.page

    def close(self):
        self.context.close()

    # --- plain forms (the intake pages)

    def submit_page_form(self, form, values: dict, *, button="button[type=submit]:not([name])") -> Response:
        """Fill a normal (non-htmx) form and submit it; expect a redirect to a page that answers 200."""
        for name, value in values.items():
            fill(form, name, value)
        with self.page.expect_navigation(wait_until="load") as nav:
            form.locator(button).click()
        response = nav.value
        assert response is not None and response.status == 200, (
            response and response.status, self.page.locator("main").inner_text()[:2000])
        assert response.request.redirected_from is not None, (
            "the form was not accepted", self.page.locator(".error-summary, .errorlist").all_inner_texts())
        self.assert_chinese()
        return response

    # --- the entrustment page

    def box(self, key: str, lot=None):
        return self.page.locator(f"section#action-{key}{f'-lot{lot.pk}' if lot is not None else ''}")

    def open_box(self, key: str, lot=None, entrustment=None):
        """The action's box on a current page, with its <details> opened."""
        if entrustment is not None and self.seen != self.board.version:
            self.open_entrustment(entrustment)
        box = self.box(key, lot)
        assert box.count() == 1, f"{key} (lot {lot and lot.pk}) is not offered to {self.user.username}"
        details = box.locator("details")
        if details.get_attribute("open") is None:
            box.locator("summary").click()
        expect(details).to_have_attribute("open", "")
        expect(box.locator("form")).to_be_visible()
        return box

    def act(self, entrustment, key: str, values: dict | None = None, *, lot=None) -> Response:
        """Take action `key` from the page: open its box, fill it by field names, submit, follow the redirect."""
        box = self.open_box(key, lot, entrustment)
        form = box.locator("form")
        for name, value in (values or {}).items():
            fill(form, name, value)
        return self.submit_action(form)

    def submit_action(self, form) -> Response:
        path = form.get_attribute("action")
        page = self.page
        with page.expect_navigation(wait_until="load"):
            with page.expect_response(lambda r: r.request.method == "POST" and urlparse(r.url).path == path) as info:
                form.locator("button[type=submit]").click()
            answer = info.value
            ok = answer.status == 200 and "hx-redirect" in answer.headers or answer.status == 302
            assert ok, (path, answer.status, _errors_of(answer))
        self.board.version += 1
        self.seen = self.board.version
        self.assert_chinese()
        # The page came back with the success message of the action.
        expect(page.locator("#messages .message-success")).to_have_count(1)
        return answer


def totp_now(device) -> str:
    """The device's current TOTP code; waits for the next 30-second step if this one was already used."""
    while True:
        t = int((time.time() - device.t0) // device.step) + device.drift
        if t > device.last_t:
            code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift)
            return f"{code:0{device.digits}d}"
        time.sleep(1)


def fill(form, name: str, value) -> None:
    field = form.locator(f'[name="{name}"]')
    assert field.count() == 1, f"no single field named {name!r} in the form"
    kind = field.evaluate("el => el.tagName.toLowerCase() + ':' + (el.type || '')")
    if kind.startswith("select"):
        field.select_option(value=str(value))
    elif kind.endswith(":checkbox"):
        field.set_checked(bool(value))
    else:
        field.fill(str(value))


def _errors_of(response: Response) -> list[str]:
    try:
        html = response.text()
    except Exception:  # noqa: BLE001 - the body may be gone after a navigation
        return []
    found = re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', html, re.S)
    found += re.findall(r'role="alert"[^>]*>(.*?)</', html, re.S)
    return [re.sub(r"<[^>]+>", " ", f).strip() for f in found]
