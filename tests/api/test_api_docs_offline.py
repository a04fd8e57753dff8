"""/docs and /redoc render on a host without internet: every script, style, image and font they reference is a
URL of this server, and each of those answers 200 with its content type (the assets come from a package)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.support import running_app

pytestmark = pytest.mark.anyio

EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _References(HTMLParser):
    """Every URL an HTML page makes the browser fetch: src/href attributes and url: '...' in its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls += re.findall(r"""(?:url|spec-url|oauth2RedirectUrl)\s*:\s*['"]([^'"]+)['"]""", data)


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    # ReDoc names its document in an attribute of its own element
    parser.urls += re.findall(r"""spec-url=['"]([^'"]+)['"]""", html)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_reference_only_this_server(tiny_runtime, tmp_path: Path, page: str) -> None:
    async with running_app(tiny_runtime, tmp_path, auth="on") as (client, _):
        html = await client.get(page)
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        urls = references(html.text)
        assets = [url for url in urls if Path(url).suffix in EXPECTED_TYPES]
        assert assets, f"{page} references no script or style: {urls}"
        assert "/openapi.json" in urls
        assert not [url for url in urls if "//" in url or not url.startswith("/")], urls
        assert "http://" not in html.text, "a remote URL in the page"
        assert "https://" not in html.text, "a remote URL in the page"
        bodies: dict[str, bytes] = {}
        for url in urls:  # with keys required too: the pages and their assets are open, like the document
            answer = await client.get(url)
            bodies[url] = answer.content
            assert answer.status_code == 200, f"{page} -> {url}: {answer.status_code}"
            suffix = Path(url).suffix
            if suffix in EXPECTED_TYPES:
                assert EXPECTED_TYPES[suffix] in answer.headers["content-type"], (url, answer.headers)
                assert len(answer.content) > 1000, url
    script = next(url for url in urls if url.endswith(".js"))
    assert (b"SwaggerUIBundle" if page == "/docs" else b"Redoc") in bodies[script]


async def test_swagger_ui_does_not_ask_the_online_validator(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        html = (await client.get("/docs")).text
    assert '"validatorUrl": null' in html
