"""Hostile input and hostile sites, in a real browser.

- Markup in every user-supplied string the pages show (account name, key names, labels, metadata) renders as
  text: the literal payload is the element's textContent, no element is injected, no script runs (window.__xss
  stays undefined, no dialog), and the CSP reports nothing blocked (a blocked inline handler would mean the
  string was parsed as HTML).
- A page on another site (localhost) and one on another origin of the same site (127.0.0.1, another port, where
  the SameSite=Lax cookie IS sent) post forms and credentialed fetches at the signed-in victim's clipserve:
  nothing happens, even when the attacker knows the victim's CSRF token.
- Sign-in throttling: the sixth wrong password for one email is a 429 page, and then so is the right one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Response

from tests.browser.conftest import PASSWORD, Site, WebPage, new_email, sign_in, sign_up
from tests.support import data_uri

PAYLOADS = [
    "<img src=x onerror=window.__xss=1>",
    "</script><script>window.__xss=1</script>",
    '"><svg onload="window.__xss=1">',
]


def injected_elements(web: WebPage) -> int:
    """Elements only a payload parsed as HTML would create."""
    return int(
        web.page.evaluate(
            """() => document.querySelectorAll('img[src="x"], svg[onload], [onerror], [onload]').length
            + [...document.scripts].filter(s => s.textContent.includes('__xss')).length"""
        )
    )


def test_markup_in_names_labels_and_metadata_renders_as_text(web: WebPage, site: Site) -> None:
    account_name = PAYLOADS[1] + PAYLOADS[0]
    sign_up(web, new_email("xss"), name=account_name)
    page = web.page
    assert (page.text_content("#account-name") or "").strip() == account_name
    web.assert_clean()

    # key names: one typed into the console form, one made through the API the console calls
    page.fill("#key-name", PAYLOADS[0])
    page.click("#key-create-submit")
    page.wait_for_function(
        "() => (document.querySelector('#new-key-value')?.textContent || '').startsWith('sk-')"
    )
    key = web.create_key(PAYLOADS[2])["key"]
    web.goto("/console")
    page.wait_for_selector("#keys-table tr[data-key-id]")
    names = [(text or "").strip() for text in page.eval_on_selector_all(
        "#keys-table tr[data-key-id] .key-name", "cells => cells.map(c => c.textContent)"
    )]  # fmt: skip
    assert sorted(names) == sorted([PAYLOADS[0], PAYLOADS[2]]), names
    web.shot("console-names")
    assert injected_elements(web) == 0
    web.assert_clean()

    # labels
    web.goto("/playground")
    page.click("#tab-classify")
    page.fill("#classify-url", data_uri(_tiny_png()))
    page.fill("#classify-labels", "\n".join(PAYLOADS))
    page.click("#classify-submit")
    page.wait_for_function(
        f"() => document.querySelectorAll('#classify-results li.result').length === {len(PAYLOADS)}"
    )
    shown = page.eval_on_selector_all(
        "#classify-results li.result",
        "items => items.map(li => [li.dataset.label, li.querySelector('.label').textContent])",
    )
    assert sorted(label for label, _ in shown) == sorted(PAYLOADS)
    assert all(label == text.strip() for label, text in shown), shown
    web.shot("classify-labels")
    assert injected_elements(web) == 0
    web.assert_clean()

    # metadata (and an image_url that is not an image URL: no <img> for it)
    collection = "xss-" + new_email("c")[2:12]
    assert site.api("POST", "/v1/collections", key, json={"name": collection}).status_code == 200
    metadata = {"caption": PAYLOADS[0], "note": PAYLOADS[1], "image_url": "javascript:window.__xss=1"}
    added = site.api(
        "POST", f"/v1/collections/{collection}/items", key,
        json={"items": [{"id": PAYLOADS[2], "text": "a cat", "metadata": metadata}]},
    )  # fmt: skip
    assert added.status_code == 200, added.text
    assert added.json()["errors"] is False, added.text
    web.goto("/playground")
    page.click("#tab-search")
    page.select_option("#search-collection", collection)
    page.fill("#search-text", "a cat")
    page.click("#search-submit")
    page.wait_for_selector("#search-results figure.hit")
    assert (page.text_content("#search-results figure.hit .hit-id") or "").strip() == PAYLOADS[2]
    caption = page.text_content("#search-results figure.hit .hit-metadata") or ""
    assert json.loads(caption) == metadata
    assert page.locator("#search-results figure.hit img").count() == 0
    web.shot("search-metadata")
    assert injected_elements(web) == 0
    web.assert_clean()

    # collection names cannot carry markup at all: the API refuses them
    for payload in PAYLOADS:
        refused = site.api("POST", "/v1/collections", key, json={"name": payload})
        assert refused.status_code == 400, refused.text


def _tiny_png() -> bytes:
    from tests.support import encode_image, gradient_image

    return encode_image(gradient_image(32, 32, seed=1))


class AttackerSite:
    """A tiny HTTP server for the attacker's pages (its own origin), on a thread."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker() -> Iterator[AttackerSite]:
    site = AttackerSite()
    yield site
    site.close()


ATTACK_PAGE = """<!doctype html><html lang="en"><head><title>Win a prize</title></head><body>
<h1>You won!</h1>
<iframe name="sink-signout" title="a"></iframe><iframe name="sink-keys" title="b"></iframe>
<form id="signout" method="post" action="{base}/signout" target="sink-signout">
  <input name="csrf_token" value="{token}"></form>
<form id="keys" method="post" action="{base}/v1/account/keys" enctype="text/plain" target="sink-keys">
  <input name='{{"name":"pwned-form","x":"' value='"}}'></form>
<script>
  document.getElementById("signout").submit();
  document.getElementById("keys").submit();
  const body = JSON.stringify({{name: "pwned-fetch"}});
  window.__simple = fetch("{base}/v1/account/keys", {{method: "POST", credentials: "include",
    headers: {{"Content-Type": "text/plain"}}, body}}).then(r => "status " + r.status, e => "blocked");
  window.__preflighted = fetch("{base}/v1/account/keys", {{method: "POST", credentials: "include",
    headers: {{"Content-Type": "application/json", "X-CSRF-Token": "{token}"}}, body}})
    .then(r => "status " + r.status, e => "blocked");
</script></body></html>"""


@pytest.mark.parametrize(
    "attacker_host", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site-other-origin"]
)
def test_another_site_cannot_act_with_the_victims_session(
    web: WebPage, site: Site, attacker: AttackerSite, attacker_host: str
) -> None:
    sign_up(web, new_email("victim"))
    token = web.csrf_token()  # even a leaked CSRF token must not help another origin
    status, keys_before = web.fetch("GET", "/v1/account/keys")
    assert status == 200, keys_before
    attacker.pages["/prize.html"] = ATTACK_PAGE.format(base=site.base_url, token=token)

    context = web.page.context
    attack = context.new_page()
    with (
        context.expect_event("response", _form_post(site, "/signout")) as signout_answer,
        context.expect_event("response", _form_post(site, "/v1/account/keys")) as keys_answer,
    ):
        attack.goto(f"http://{attacker_host}:{attacker.port}/prize.html")
    outcomes = attack.evaluate("async () => [await window.__simple, await window.__preflighted]")
    assert signout_answer.value.status == 403, signout_answer.value.text()
    assert keys_answer.value.status == 401, keys_answer.value.text()  # the cookie alone authenticates nothing
    assert outcomes == ["blocked", "blocked"], outcomes  # no CORS for this origin: nothing readable
    attack.close()

    # the victim is still signed in, with the same session and no new key
    web.goto("/console")
    assert web.page.url == site.base_url + "/console"
    assert web.csrf_token() == token
    status, keys_after = web.fetch("GET", "/v1/account/keys")
    assert status == 200, keys_after
    assert keys_after["data"] == keys_before["data"], keys_after
    web.shot("victim-after-attack")

    session = [c["value"] for c in context.cookies(site.base_url) if c["name"] == "clipserve_session"]
    assert len(session) == 1

    # control: the same sign-out form from clipserve's own origin, with that token, does sign out
    with web.page.expect_navigation():
        web.page.evaluate(
            """(token) => { const f = document.createElement('form'); f.method = 'post'; f.action = '/signout';
            const i = document.createElement('input'); i.name = 'csrf_token'; i.value = token; f.appendChild(i);
            document.body.appendChild(f); f.submit(); }""",
            token,
        )
    web.goto("/console")  # signed out: the console sends to the sign-in page
    assert web.page.url.startswith(site.base_url + "/signin"), web.page.url
    # neither the session id nor the CSRF token reached the server's log (which did record these requests)
    log = site.server.log()
    assert '"POST /signout HTTP/1.1" 403' in log
    assert session[0] not in log
    assert token not in log


def _form_post(site: Site, path: str) -> Callable[[Response], bool]:
    """The answer to a form the attacker's page posted (a frame navigation) to this clipserve path."""
    return lambda r: (
        r.url == site.base_url + path and r.request.method == "POST" and r.request.resource_type == "document"
    )


def test_sign_in_throttled_after_five_wrong_passwords(
    web: WebPage, site: Site, fresh_page: Callable[..., WebPage]
) -> None:
    email = new_email("throttle")
    sign_up(web, email)
    stranger = fresh_page("stranger")
    statuses = []
    for attempt in range(6):
        statuses.append(sign_in(stranger, email, f"wrong password {attempt}"))
        assert (stranger.page.text_content("#form-error") or "").strip(), f"attempt {attempt}: no #form-error"
    assert statuses == [401] * 5 + [429], statuses
    stranger.shot("throttled")
    throttled_text = (stranger.page.text_content("#form-error") or "").strip()

    # the right password is refused too while the window lasts, with a Retry-After in seconds
    stranger.goto("/signin")
    stranger.page.fill("#email", email)
    stranger.page.fill("#password", PASSWORD)
    with stranger.page.expect_response(
        lambda r: r.url.endswith("/signin") and r.request.method == "POST"
    ) as answer:
        stranger.page.click("#signin-submit")
    assert answer.value.status == 429
    retry_after = int(answer.value.headers["retry-after"])
    assert 0 < retry_after <= 900, retry_after
    assert (stranger.page.text_content("#form-error") or "").strip() == throttled_text
    assert stranger.page.context.cookies(site.base_url) == [] or all(
        cookie["name"] != "clipserve_session" for cookie in stranger.page.context.cookies(site.base_url)
    )
