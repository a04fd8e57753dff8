"""The web pages in a real browser: Playwright driving Debian's Chromium against one real server process.

One browser and one server (tiny model, sign-up open with $1 of credit) for the whole folder; a fresh browser
context (cookies, storage) per test. Every page a test visits is saved as a full-page screenshot in
CLIPSERVE_SCREENSHOTS_DIR (default: a pytest temp folder), named after the test.
Playwright's own browser download is never used: /usr/bin/chromium must exist (CI installs Debian's package),
and a machine without it FAILS these tests rather than skipping them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    sync_playwright,
)

from tests.support import TINY_CONFIG, bearer
from tests.system.conftest import ServerProcess, start_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
AXE_CORE = "axe-core@4"  # the accessibility rules engine, from the npm registry
MODEL = "CLIP-ViT-B-32-laion2B-s34B-b79K"
SIGNUP_CREDIT = Decimal("1")
# prices of the site's running price table (not the defaults, so the model page provably reads them)
PRICE_PER_1K_IMAGES = Decimal("0.37")
PRICE_PER_1M_TOKENS = Decimal("0.019")
PASSWORD = "correct horse battery staple"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
# A Content-Security-Policy violation means a page silently lost a script or style: always a failure.
CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to (execute|load|apply|connect)", re.I)


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def micros_of_dollars(text: str) -> int:
    """'$0.999940' (as the console shows a balance) -> 999940."""
    cleaned = text.strip().replace(",", "").replace("$", "")
    return int(Decimal(cleaned) * 1_000_000)


@dataclass
class WebPage:
    """A Playwright page that records dialogs, CSP violations and console errors, and saves screenshots."""

    page: Page
    base_url: str
    shots: Path
    test_name: str
    dialogs: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    _shot_count: int = 0

    def __post_init__(self) -> None:
        self.page.on("dialog", self._on_dialog)
        self.page.on("console", self._on_console)

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept()  # a confirm() before a revoke is allowed; the XSS tests assert there were none

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)
            if CSP_VIOLATION.search(message.text):
                self.csp_violations.append(message.text)

    def goto(self, path: str, expect_status: int = 200) -> Page:
        response = self.page.goto(self.base_url + path)
        assert response is not None, path
        assert response.status == expect_status, f"GET {path}: {response.status}\n{response.text()[:2000]}"
        self.page.wait_for_load_state("networkidle")
        return self.page

    def shot(self, name: str) -> Path:
        """A full-page screenshot of what the page shows now."""
        self._shot_count += 1
        path = self.shots / f"{self.test_name}-{self._shot_count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def csrf_token(self) -> str:
        token = self.page.get_attribute('meta[name="csrf-token"]', "content")
        assert token, "a signed-in page carries <meta name=csrf-token>"
        return token

    def fetch(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """`fetch` from inside the page, as its own scripts call /v1: the session cookie plus X-CSRF-Token."""
        result: list[Any] = self.page.evaluate(
            """async ([method, path, body]) => {
                const meta = document.querySelector('meta[name="csrf-token"]');
                const headers = {"Content-Type": "application/json"};
                if (meta) headers["X-CSRF-Token"] = meta.content;
                const init = {method, headers, credentials: "same-origin"};
                if (body !== null) init.body = JSON.stringify(body);
                const response = await fetch(path, init);
                const text = await response.text();
                let parsed = text;
                try { parsed = JSON.parse(text); } catch (e) {}
                return [response.status, parsed];
            }""",
            [method, path, body],
        )
        return int(result[0]), result[1]

    def create_key(self, name: str) -> dict[str, Any]:
        """A new API key of the signed-in account, through POST /v1/account/keys (the console's own call)."""
        status, body = self.fetch("POST", "/v1/account/keys", {"name": name})
        assert status == 200, body
        assert isinstance(body, dict), body
        assert str(body.get("key", "")).startswith("sk-"), body
        return body

    def assert_clean(self) -> None:
        """No script ran from user data (no dialog, no window.__xss) and no CSP violation."""
        assert self.dialogs == [], self.dialogs
        assert self.page.evaluate("typeof window.__xss") == "undefined"
        assert self.csp_violations == [], self.csp_violations


@dataclass
class Site:
    server: ServerProcess
    data_dir: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = bearer(key) if key else {}
        return httpx.request(method, self.base_url + path, headers=headers, timeout=60, **kwargs)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`clipserve ARGS --data-dir <the server's>`, as an operator runs it beside the running server."""
        done = subprocess.run(
            [sys.executable, "-m", "clipserve", *args, "--data-dir", str(self.data_dir)],
            input=stdin, capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        assert done.returncode == 0, (
            f"clipserve {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done

    def balance_micros(self, key: str) -> int:
        answer = self.api("GET", "/v1/key", key)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["data"]["limit_remaining_micros"])


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server for the folder: sign-up open (the web form and /v1/signup share its per-address limit)."""
    data_dir = tmp_path_factory.mktemp("browser-site")
    server = start_server(
        data_dir,
        "--weights", "random", "--architecture", str(TINY_CONFIG),
        "--signup-enabled", "--signup-credit", str(SIGNUP_CREDIT), "--signups-per-address-per-day", "1000",
        "--price-per-1k-images", str(PRICE_PER_1K_IMAGES), "--price-per-1m-tokens", str(PRICE_PER_1M_TOKENS),
    )  # fmt: skip
    yield Site(server, data_dir)
    server.stop()


@dataclass(frozen=True)
class Login:
    email: str
    account_id: int
    key: str  # an API key of the same account (made by /v1/signup before the login was added)


def login_for_new_account(site: Site, name: str, *, admin: bool) -> Login:
    """An account from /v1/signup, given a web login by the operator's CLI (password on stdin)."""
    made = site.api("POST", "/v1/signup", json={"name": name})
    assert made.status_code == 200, made.text
    account_id = int(made.json()["account"]["id"])
    email = new_email(name.lower().replace(" ", "-"))
    extra = ["--admin"] if admin else []
    site.cli("keys", "login", "--account", str(account_id), "--email", email, *extra, stdin=PASSWORD + "\n")
    return Login(email, account_id, made.json()["key"])


@pytest.fixture(scope="package")
def admin_login(site: Site) -> Login:
    return login_for_new_account(site, "Operations", admin=True)


@pytest.fixture(scope="package")
def member_login(site: Site) -> Login:
    return login_for_new_account(site, "Member", admin=False)


@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        # like the PostgreSQL tests: a developer's machine without the package skips, CI (which installs it and
        # sets CLIPSERVE_REQUIRE_BROWSER=1) fails
        message = f"the browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CLIPSERVE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    launched = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("CLIPSERVE_SCREENSHOTS_DIR")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="package")
def axe_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """axe.min.js of the axe-core npm package, installed from the registry into a temp folder."""
    npm = shutil.which("npm")
    assert npm is not None, "the browser tests need npm (axe-core); .ci/run installs it"
    folder = tmp_path_factory.mktemp("axe-core")
    (folder / "package.json").write_text('{"name": "clipserve-axe", "private": true}')
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", AXE_CORE],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    script = folder / "node_modules" / "axe-core" / "axe.min.js"
    assert script.exists(), script
    return script


def open_page(
    browser: Browser, site: Site, shots: Path, test_name: str, **context_options: Any
) -> tuple[BrowserContext, WebPage]:
    options: dict[str, Any] = {"viewport": DESKTOP, **context_options}
    context = browser.new_context(**options)
    context.set_default_timeout(20_000)
    return context, WebPage(context.new_page(), site.base_url, shots, test_name)


@pytest.fixture
def web(
    browser: Browser, site: Site, screenshots_dir: Path, request: pytest.FixtureRequest
) -> Iterator[WebPage]:
    """A page in a fresh browser context (no cookies), desktop-sized."""
    context, page = open_page(browser, site, screenshots_dir, _short_name(request))
    yield page
    context.close()


@pytest.fixture
def fresh_page(
    browser: Browser, site: Site, screenshots_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A factory of more pages, each in its own fresh context (another person, a phone, an axe run)."""
    contexts: list[BrowserContext] = []

    def make(suffix: str, **context_options: Any) -> WebPage:
        context, page = open_page(
            browser, site, screenshots_dir, f"{_short_name(request)}-{suffix}", **context_options
        )
        contexts.append(context)
        return page

    yield make
    for context in contexts:
        context.close()


def _short_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name.removeprefix("test_"))[:80]


def sign_up(web: WebPage, email: str, password: str = PASSWORD, name: str | None = None) -> None:
    """The sign-up form, as a person fills it; lands on the console."""
    web.goto("/signup")
    web.page.fill("#email", email)
    web.page.fill("#password", password)
    if name is not None:
        web.page.fill("#name", name)
    web.shot("signup-filled")
    with web.page.expect_navigation():
        web.page.click("#signup-submit")
    assert web.page.url == web.base_url + "/console", (web.page.url, _form_error(web))
    web.page.wait_for_load_state("networkidle")


def sign_in(web: WebPage, email: str, password: str = PASSWORD) -> int:
    """The sign-in form; returns the status of the POST /signin answer (303 on success)."""
    web.goto("/signin")
    web.page.fill("#email", email)
    web.page.fill("#password", password)
    with web.page.expect_response(
        lambda r: r.url == web.base_url + "/signin" and r.request.method == "POST"
    ) as answer:
        web.page.click("#signin-submit")
    web.page.wait_for_load_state("networkidle")
    return int(answer.value.status)


def _form_error(web: WebPage) -> str:
    error = web.page.query_selector("#form-error")
    return error.text_content() or "" if error else ""


def axe_violations(web: WebPage, axe_script: Path) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (needs a bypass_csp context)."""
    web.page.add_script_tag(path=str(axe_script))
    found: list[dict[str, Any]] = web.page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ")),
                why: v.nodes.length ? v.nodes[0].failureSummary : "",
            }));
        }"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def dump(value: Any) -> str:
    return json.dumps(value, indent=1)[:4000]
