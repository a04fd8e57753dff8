"""Every page: accessible (axe-core: no serious or critical violation), no horizontal scroll at a phone's width,
under 200 KB with its assets, the security headers, a screenshot at desktop and phone width. The model page's
content comes from the running server (prices, base URL, status). And the README's server command shows the site
at / with no sign-in (local mode, where the playground is free).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Response

from tests.browser.conftest import (
    PHONE,
    PRICE_PER_1K_IMAGES,
    PRICE_PER_1M_TOKENS,
    SIGNUP_CREDIT,
    Login,
    Site,
    WebPage,
    axe_violations,
    sign_in,
)
from tests.support import TINY_CONFIG, data_uri, encode_image, gradient_image
from tests.system.conftest import ServerProcess, start_server

PAGE_BUDGET_BYTES = 200 * 1024
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https: http:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
HUB_ID = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
# page -> who visits it: nobody signed in, a member, an admin
PAGES = {
    "/": None,
    "/signin": None,
    "/signup": None,
    "/console": "member",
    "/playground": "member",
    "/admin": "admin",
}
TABS = ("classify", "compare", "search")


def first_number(text: str) -> Decimal:
    found = re.search(r"\d[\d,]*(?:\.\d+)?", text)
    assert found, text
    return Decimal(found.group(0).replace(",", ""))


def visit_as(
    make: Callable[..., WebPage], who: str | None, logins: dict[str, Login], suffix: str, **options: object
) -> WebPage:
    page = make(suffix, **options)
    if who is not None:
        assert sign_in(page, logins[who].email) == 303
    return page


@pytest.mark.parametrize("path", list(PAGES), ids=[p.strip("/") or "home" for p in PAGES])
def test_page_is_accessible_small_responsive_and_safe(
    path: str,
    site: Site,
    fresh_page: Callable[..., WebPage],
    member_login: Login,
    admin_login: Login,
    axe_script: Path,
) -> None:
    logins = {"member": member_login, "admin": admin_login}
    who = PAGES[path]

    # desktop: headers, bytes of the page and everything it loaded, one h1, no CSP violation
    web = visit_as(fresh_page, who, logins, "desktop")
    responses: list[Response] = []
    web.page.on("response", lambda r: responses.append(r))
    response = web.page.goto(site.base_url + path)
    assert response is not None
    assert response.status == 200, response.text()[:2000]
    web.page.wait_for_load_state("networkidle")
    headers = response.headers
    assert headers.get("content-security-policy") == CSP
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("x-frame-options") == "DENY"
    assert headers.get("referrer-policy") == "same-origin"
    if who is not None:
        assert "no-store" in headers.get("cache-control", "")
    sizes = {r.url: len(r.body()) for r in responses if not 300 <= r.status < 400}
    assert sum(sizes.values()) < PAGE_BUDGET_BYTES, sizes
    assert web.page.locator("h1").count() == 1
    assert web.page.get_attribute("html", "lang") == "en"
    assert web.page.is_visible("#random-weights-banner")
    web.shot("desktop")
    assert web.csp_violations == [], web.csp_violations
    assert web.console_errors == [], web.console_errors

    # a phone: no horizontal scroll
    web.page.set_viewport_size(PHONE)
    web.page.reload()
    web.page.wait_for_load_state("networkidle")
    tabs = TABS if path == "/playground" else (None,)
    for tab in tabs:
        if tab:
            web.page.click(f"#tab-{tab}")
        widths = web.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{path} {tab or ''}: scrollWidth {widths[0]} > {widths[1]}"
        web.shot(f"phone-{tab}" if tab else "phone")

    # axe-core, injected from a file (the page's own CSP would refuse it: bypass_csp for this context only)
    checked = visit_as(fresh_page, who, logins, "axe", bypass_csp=True)
    checked.goto(path)
    for tab in tabs:
        if tab:
            checked.page.click(f"#tab-{tab}")
        violations = axe_violations(checked, axe_script)
        assert violations == [], f"{path} {tab or ''}: {violations}"


def test_model_page_shows_this_servers_prices_snippets_and_status(web: WebPage, site: Site) -> None:
    page = web.goto("/")
    assert HUB_ID in (page.text_content("#model-name") or "")
    specs = page.text_content("#model-specs") or ""
    for fact in ("ViT-B/32", "LAION-2B", "66.6"):
        assert fact in specs, specs
    assert (page.text_content("#intended-use") or "").strip()
    assert first_number(page.text_content("#price-images") or "") == PRICE_PER_1K_IMAGES
    assert first_number(page.text_content("#price-tokens") or "") == PRICE_PER_1M_TOKENS
    assert (page.text_content("#status") or "").strip() == "ready"
    for snippet in ("curl", "python", "js", "langchain"):
        assert site.base_url + "/v1" in (page.text_content(f"#snippet-{snippet}") or ""), snippet
    assert first_number(page.text_content("#cta-signup") or "") == SIGNUP_CREDIT
    assert page.get_attribute("#cta-signup", "href") == "/signup"
    web.shot("model-page")


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`clipserve serve --weights random` as scripts/serve.sh runs it (tiny architecture, own port): local mode."""
    server = start_server(
        tmp_path_factory.mktemp("readme-server"), "--weights", "random", "--architecture", str(TINY_CONFIG)
    )
    yield server
    server.stop()


def test_readme_server_command_shows_the_site_and_a_free_playground(
    readme_server: ServerProcess, fresh_page: Callable[..., WebPage]
) -> None:
    home = httpx.get(readme_server.base_url + "/", timeout=30)
    assert home.status_code == 200
    assert home.headers["content-type"].startswith("text/html")
    assert 'id="model-name"' in home.text
    assert HUB_ID in home.text

    web = fresh_page("local")
    web.base_url = readme_server.base_url
    web.goto("/playground")  # no sign-in in local mode
    assert web.page.url == readme_server.base_url + "/playground"
    web.page.click("#tab-classify")
    web.page.fill("#classify-url", data_uri(encode_image(gradient_image(48, 48, seed=2))))
    web.page.fill("#classify-labels", "red\ngreen")
    with web.page.expect_response(lambda r: r.url.endswith("/v1/classify")) as answer:
        web.page.click("#classify-submit")
    assert answer.value.status == 200, answer.value.text()
    assert answer.value.request.header_value("authorization") is None
    web.page.wait_for_function("() => document.querySelectorAll('#classify-results li.result').length === 2")
    web.shot("local-playground")
    web.assert_clean()
