"""The web pages in the in-process app with the tiny model: each page renders its DOM-contract ids, carries the
security headers, escapes user strings, sends signed-out visitors to /signin and non-admins to a 403; the form
posts set and clear the session cookie and refuse cross-site posts; pages plus their assets stay small."""

from __future__ import annotations

import re
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from clipserve.api.session_cookies import PRESESSION_COOKIE, SESSION_COOKIE
from clipserve.model_card import HUB_ID
from clipserve.store.logins import LoginStore
from tests.web_accounts_support import CHEAP, ORIGIN, web_app

pytestmark = pytest.mark.anyio

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https: http:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
PASSWORD = "correct horse battery"
PAGE_BUDGET_BYTES = 200_000
ASSETS_BUDGET_BYTES = 60_000
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """The elements of a page by id (tag, attributes, text inside), its script and stylesheet URLs."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: dict[str, tuple[str, dict[str, str]]] = {}
        self.texts: dict[str, str] = {}
        self.assets: list[str] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._open: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.tags.append((tag, values))
        element_id = values.get("id")
        if element_id:
            assert element_id not in self.ids, f"duplicate id {element_id}"
            self.ids[element_id] = (tag, values)
            self.texts[element_id] = ""
        if tag == "script" and values.get("src"):
            self.assets.append(values["src"])
        if tag == "link" and values.get("rel") in ("stylesheet", "icon"):
            self.assets.append(values["href"])
        if tag not in VOID:
            self._open.append((tag, element_id))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.texts[element_id] += data

    def text(self, element_id: str) -> str:
        return " ".join(self.texts[element_id].split())

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)


def hidden_csrf(page: Page, form_id: str) -> str:
    assert form_id in page.ids
    fields = [attrs for tag, attrs in page.tags if tag == "input" and attrs.get("name") == "csrf_token"]
    assert len(fields) >= 1
    return fields[-1]["value"]


def meta_csrf(page: Page) -> str:
    """The session's CSRF token as a signed-in page carries it (meta tag; also the sign-out form's field)."""
    (token,) = [
        attrs["content"] for tag, attrs in page.tags if tag == "meta" and attrs.get("name") == "csrf-token"
    ]
    assert hidden_csrf(page, "signout-form") == token
    return token


async def sign_up(client: httpx.AsyncClient, email: str, name: str = "") -> httpx.Response:
    form = Page((await client.get("/signup")).text)
    token = hidden_csrf(form, "signup-form")
    assert client.cookies.get(PRESESSION_COOKIE) == token
    return await client.post(
        "/signup", data={"email": email, "password": PASSWORD, "name": name, "csrf_token": token}
    )


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    token = hidden_csrf(Page((await client.get("/signin")).text), "signin-form")
    return await client.post("/signin", data={"email": email, "password": password, "csrf_token": token})


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name, response.headers.get(name))


async def test_model_page_shows_the_running_prices_the_card_the_snippets_and_the_random_weights_banner(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(
        tiny_runtime, tmp_path, price_per_1k_images="0.123", price_per_1m_tokens="0.45", signup_credit="2.5"
    ) as (client, _):
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert_security_headers(response)
    page = Page(response.text)
    assert page.text("price-images") == "$0.123"  # the settings' prices, as the running PriceTable holds them
    assert page.text("price-tokens") == "$0.45"
    assert HUB_ID in page.text("model-name")
    specs = page.text("model-specs")
    for fact in ("ViT-B/32", "LAION-2B", "66.6%"):
        assert fact in specs
    # open_clip's published retrieval table, row ViT-B-32 laion2b_s34b_b79k: MSCOCO image R@1 0.3934
    assert "39.3" in page.text("recall-table")
    assert "Flickr30k" in page.text("recall-table")
    assert "out of scope" in page.text("intended-use")
    assert page.text("status") == "ready"
    for name in ("curl", "python", "js", "langchain"):
        assert page.ids[f"snippet-{name}"][0] == "pre"
        assert f"{ORIGIN}/v1" in page.text(f"snippet-{name}")
    assert page.text("cta-signup") == "Sign up for $2.50 free credit"
    assert page.ids["cta-signup"][1]["href"] == "/signup"
    banner = page.ids["random-weights-banner"]
    assert banner[1]["role"] == "alert"
    assert "meaningless" in page.text("random-weights-banner")
    assert page.count("h1") == 1
    assert page.ids["main"][0] == "main"
    assert page.tags[0] == ("html", {"lang": "en"})


async def test_every_page_renders_its_ids_and_security_headers_signed_out_and_signed_in(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, _):
        signin = await client.get("/signin")
        signup = await client.get("/signup")
        local_playground = await client.get("/playground")  # no key exists yet: local mode, no sign-in
        assert (await sign_up(client, "ada@example.org")).status_code == 303
        pages = {path: await client.get(path) for path in ("/", "/console", "/playground")}
    expected = {
        "signin": (signin, ["signin-form", "email", "password", "signin-submit", "form-error", "nav-signin"]),
        "signup": (signup, ["signup-form", "email", "password", "name", "signup-submit", "form-error"]),
        "local playground": (local_playground, ["tab-classify", "panel-classify", "nav-signup"]),
        "console": (
            pages["/console"],
            [
                "balance",
                "account-name",
                "usage-chart",
                "usage-table",
                "key-create-form",
                "key-name",
                "key-create-submit",
                "new-key-value",
                "new-key-copy",
                "keys-table",
                "requests-table",
                "rate-limits",
                "refresh",
                "nav-console",
                "signout-form",
                "nav-signout",
            ],
        ),
        "playground": (
            pages["/playground"],
            [
                "tab-classify",
                "tab-compare",
                "tab-search",
                "panel-classify",
                "panel-compare",
                "panel-search",
                "classify-file",
                "classify-drop",
                "classify-url",
                "classify-labels",
                "classify-template",
                "classify-submit",
                "classify-results",
                "classify-error",
                "compare-texts",
                "compare-files",
                "compare-submit",
                "compare-heatmap",
                "compare-error",
                "search-collection",
                "search-text",
                "search-file",
                "search-submit",
                "search-results",
                "search-error",
            ],
        ),
    }
    for what, (response, ids) in expected.items():
        assert response.status_code == 200, (what, response.status_code)
        assert_security_headers(response)
        page = Page(response.text)
        missing = [element_id for element_id in ids if element_id not in page.ids]
        assert missing == [], (what, missing)
        assert page.count("h1") == 1, what
        assert "random-weights-banner" in page.ids, what
    console = Page(pages["/console"].text)
    assert console.text("balance") == "$1.000000"  # the free credit, before any request
    assert "nav-admin" not in console.ids  # a member, not an admin
    options = [attrs["value"] for tag, attrs in Page(pages["/playground"].text).tags if tag == "option"]
    # the classifier picker's zero-shot choice (its classifiers are added by script), then the two templates
    assert options == ["", "single", "ensemble"]


async def test_user_strings_render_as_text_in_server_rendered_pages(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    async with web_app(tiny_runtime, tmp_path) as (client, _):
        assert (await sign_up(client, "ada@example.org", name=payload)).status_code == 303
        console = await client.get("/console")
        client.cookies.clear()
        refused = await sign_in(client, f'"><script>alert(2)</script>{payload}')  # echoed back in the form
    assert console.status_code == 200
    assert payload not in console.text
    assert "<script>alert" not in console.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in console.text
    assert Page(console.text).text("account-name") == payload  # shown, as text
    assert refused.status_code in (400, 401)
    assert "<script>alert" not in refused.text
    assert Page(refused.text).ids["email"][1]["value"].startswith('"><script>alert(2)')  # an attribute value
    assert Page(refused.text).text("form-error")


async def test_signed_out_visitors_go_to_signin_and_members_get_403_on_admin(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(tiny_runtime, tmp_path, auth="on") as (client, _):
        signed_out = {path: await client.get(path) for path in ("/console", "/playground", "/admin")}
        home = await client.get("/")
        assert (await sign_up(client, "bob@example.org")).status_code == 303
        member_admin = await client.get("/admin")
    for path, response in signed_out.items():
        assert (response.status_code, response.headers.get("location")) == (303, "/signin"), path
    assert home.status_code == 200
    assert member_admin.status_code == 403
    assert_security_headers(member_admin)
    assert "admin accounts" in Page(member_admin.text).text("error-message")


async def test_admin_page_for_an_admin_login(tiny_runtime: Any, tmp_path: Path) -> None:
    from clipserve.service.passwords import argon2id_hasher

    async with web_app(tiny_runtime, tmp_path) as (client, app):
        accounts = app.state.context.accounts
        account = accounts.create_account("operators")
        password_hash = argon2id_hasher(CHEAP["time_cost"], CHEAP["memory_kib"], CHEAP["parallelism"]).hash(
            PASSWORD
        )
        LoginStore(accounts).add_login(account.id, "root@example.org", password_hash, True)
        assert (await sign_in(client, "root@example.org")).status_code == 303
        admin = await client.get("/admin")
    assert admin.status_code == 200
    assert_security_headers(admin)
    page = Page(admin.text)
    for element_id in (
        "accounts-table", "grant-form", "grant-account", "grant-amount", "grant-note", "grant-submit",
        "admin-keys-table", "nav-admin",
    ):  # fmt: skip
        assert element_id in page.ids, element_id


async def test_form_posts_set_and_clear_the_session_and_refuse_cross_site_or_tokenless_posts(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        token = hidden_csrf(Page((await client.get("/signup")).text), "signup-form")
        form = {"email": "eve@example.org", "password": PASSWORD, "csrf_token": token}
        refused = {
            "foreign origin": await client.post(
                "/signup", data=form, headers={"Origin": "https://evil.example"}
            ),
            "cross-site fetch": await client.post(
                "/signup", data=form, headers={"Sec-Fetch-Site": "cross-site"}
            ),
            "no token": await client.post("/signup", data={**form, "csrf_token": ""}),
            "wrong token": await client.post("/signup", data={**form, "csrf_token": token + "x"}),
        }
        assert app.state.context.accounts.list_accounts() == []  # none of them created an account

        created = await client.post("/signup", data=form)
        session = created.cookies.get(SESSION_COOKIE)
        console = await client.get("/console")
        csrf = meta_csrf(Page(console.text))
        foreign_signout = await client.post(
            "/signout", data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
        )
        tokenless_signout = await client.post("/signout", data={"csrf_token": "nope"})
        still_in = await client.get("/console")
        signed_out = await client.post("/signout", data={"csrf_token": csrf})
        client.cookies.set(SESSION_COOKIE, session or "")  # present the old session's cookie again
        after = await client.get("/console")
    for what, response in refused.items():
        assert response.status_code == 403, what
        assert SESSION_COOKIE not in response.cookies, what
    assert (created.status_code, created.headers["location"]) == (303, "/console")
    set_cookie = created.headers["set-cookie"].lower()
    assert session
    for attribute in ("httponly", "samesite=lax", "path=/"):
        assert attribute in set_cookie
    assert console.status_code == 200
    assert (foreign_signout.status_code, tokenless_signout.status_code, still_in.status_code) == (
        403,
        403,
        200,
    )
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/")
    assert f'{SESSION_COOKIE}=""' in signed_out.headers["set-cookie"]  # cleared
    assert (after.status_code, after.headers["location"]) == (303, "/signin")  # the old cookie is dead


async def test_signin_failure_shows_the_form_again_with_its_status(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, _):
        assert (await sign_up(client, "ada@example.org")).status_code == 303
        client.cookies.clear()
        wrong = await sign_in(client, "ada@example.org", "not the password")
        right = await sign_in(client, "ada@example.org")
    assert wrong.status_code == 401
    assert_security_headers(wrong)
    assert Page(wrong.text).text("form-error") == "Incorrect email or password."
    assert Page(wrong.text).ids["email"][1]["value"] == "ada@example.org"
    assert (right.status_code, right.headers["location"]) == (303, "/console")


async def test_signing_in_again_ends_the_session_the_browser_held(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, _):
        token = hidden_csrf(Page((await client.get("/signup")).text), "signup-form")
        form = {"email": "ada@example.org", "password": PASSWORD, "csrf_token": token}
        assert (await client.post("/signup", data=form)).status_code == 303
        first = client.cookies.get(SESSION_COOKIE)
        again = await client.post("/signin", data=form)  # the same browser, still holding `first`
        second = client.cookies.get(SESSION_COOKIE)
        client.cookies.set(SESSION_COOKIE, first or "")
        with_first = await client.get("/console")
        client.cookies.set(SESSION_COOKIE, second or "")
        with_second = await client.get("/console")
    assert again.status_code == 303
    assert first
    assert second
    assert first != second
    assert (with_first.status_code, with_first.headers.get("location")) == (303, "/signin")
    assert with_second.status_code == 200


async def test_closed_signup_says_so_and_refuses_the_post(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(tiny_runtime, tmp_path, signup_enabled=False) as (client, app):
        home = Page((await client.get("/")).text)
        page = await client.get("/signup")
        token = client.cookies.get(PRESESSION_COOKIE)
        post = await client.post(
            "/signup", data={"email": "x@example.org", "password": PASSWORD, "csrf_token": token or ""}
        )
        assert app.state.context.accounts.list_accounts() == []
    assert "cta-signup" not in home.ids
    assert "signup-closed" in Page(page.text).ids
    assert "signup-form" not in Page(page.text).ids
    assert post.status_code == 403


async def test_each_page_and_its_assets_stay_under_200_kb_and_static_files_are_cached(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        accounts = app.state.context.accounts
        from clipserve.service.passwords import argon2id_hasher

        account = accounts.create_account("operators")
        password_hash = argon2id_hasher(CHEAP["time_cost"], CHEAP["memory_kib"], CHEAP["parallelism"]).hash(
            PASSWORD
        )
        LoginStore(accounts).add_login(account.id, "root@example.org", password_hash, True)
        sizes: dict[str, int] = {}
        all_assets: set[str] = set()
        for path in ("/", "/signin", "/signup"):
            sizes[path] = await _page_bytes(client, path, all_assets)
        assert (await sign_in(client, "root@example.org")).status_code == 303
        for path in ("/console", "/playground", "/admin"):
            sizes[path] = await _page_bytes(client, path, all_assets)
        css = await client.get("/static/site.css")
        missing = await client.get("/static/nope.js")
        escape = await client.get("/static/../rendering.py")
        assets_total = 0
        for asset in all_assets:
            assets_total += len((await client.get(asset)).content)
    assert all(size < PAGE_BUDGET_BYTES for size in sizes.values()), sizes
    assert assets_total < ASSETS_BUDGET_BYTES, assets_total
    assert {"/static/site.css", "/static/api.js", "/static/console.js", "/static/playground.js"} <= all_assets
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["cache-control"] == "public, max-age=3600"
    assert css.headers["x-content-type-options"] == "nosniff"
    assert missing.status_code == 404
    assert escape.status_code == 404


async def _page_bytes(client: httpx.AsyncClient, path: str, seen: set[str]) -> int:
    response = await client.get(path)
    assert response.status_code == 200, path
    total = len(response.content)
    for asset in Page(response.text).assets:
        assert asset.startswith("/static/"), asset  # nothing from another host (no CDN)
        fetched = await client.get(asset)
        assert fetched.status_code == 200, asset
        total += len(fetched.content)
        seen.add(asset)
    return total


async def test_pages_carry_no_inline_script_or_style(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, _):
        bodies = [(await client.get(path)).text for path in ("/", "/signin", "/signup", "/playground")]
        assert (await sign_up(client, "ada@example.org")).status_code == 303
        bodies.append((await client.get("/console")).text)
    for body in bodies:
        page = Page(body)
        assert all(attrs.get("src") for tag, attrs in page.tags if tag == "script")
        assert all("style" not in attrs for _, attrs in page.tags)
        assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
        assert "<style" not in body


async def test_web_pages_disabled_leaves_only_the_json_api(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(tiny_runtime, tmp_path, web_pages_enabled=False) as (client, _):
        home = await client.get("/")
        css = await client.get("/static/site.css")
        health = await client.get("/health")
    # 405: POST / is the Hugging Face inference route, which stays; nothing answers GET /
    assert (home.status_code, css.status_code, health.status_code) == (405, 404, 200)


def test_prices_print_as_the_settings_give_them() -> None:
    from clipserve.web.rendering import money

    assert [money(Decimal(v)) for v in ("0.047", "0.01", "2.5", "3", "0.000001")] == [
        "$0.047", "$0.01", "$2.50", "$3.00", "$0.000001",
    ]  # fmt: skip
    assert re.fullmatch(r"\$\d+\.\d{2,}", money(Decimal("1E+1"))) is not None
