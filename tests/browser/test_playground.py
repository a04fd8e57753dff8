"""The playground in a browser shows exactly what the JSON API answers for the same inputs.

Classify: a real photo picked with the file input, labels typed, single template and the 80-template ensemble;
compare: texts x images cosines; search: a collection's hits by text and by image, with their image_url thumbnails
and metadata as text. Each expected value comes from the API called here with the same bytes.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import MODEL, Site, WebPage, new_email, sign_up
from tests.support import data_uri, photo_path

LABELS = ["a cat", "a rocket", "a cup of coffee"]
TEMPLATES = {"single": "a photo of a {}.", "ensemble": "openai-imagenet"}
MIME = {".png": "image/png", ".jpg": "image/jpeg"}


def photo_uri(name: str) -> str:
    path = photo_path(name)
    return data_uri(path.read_bytes(), MIME[path.suffix])


def thumbnail_uri(name: str, size: int = 64) -> str:
    image = Image.open(photo_path(name)).convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return data_uri(buffer.getvalue(), "image/jpeg")


def open_playground(web: WebPage, tab: str) -> None:
    web.goto("/playground")
    web.page.click(f"#tab-{tab}")
    assert web.page.get_attribute(f"#tab-{tab}", "aria-selected") == "true"
    assert web.page.is_visible(f"#panel-{tab}")


@pytest.mark.parametrize("template", ["single", "ensemble"])
def test_classify_a_photo_shows_the_api_ranking(web: WebPage, site: Site, template: str) -> None:
    sign_up(web, new_email("classify"))
    key = web.create_key("playground check")["key"]
    open_playground(web, "classify")
    page = web.page
    page.set_input_files("#classify-file", str(photo_path("chelsea")))
    page.fill("#classify-labels", "\n".join(LABELS))
    page.select_option("#classify-template", template)
    with page.expect_response(lambda r: r.url.endswith("/v1/classify")) as answer:
        page.click("#classify-submit")
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function(
        f"() => document.querySelectorAll('#classify-results li.result').length === {len(LABELS)}"
    )
    shown = page.eval_on_selector_all(
        "#classify-results li.result",
        """items => items.map(li => ({
            label: li.dataset.label, score: li.dataset.score,
            labelText: li.querySelector('.label').textContent, scoreText: li.querySelector('.score').textContent,
        }))""",
    )
    web.shot(f"classify-{template}")

    expected = site.api(
        "POST", "/v1/classify", key,
        json={"model": MODEL, "image": photo_uri("chelsea"), "labels": LABELS, "template": TEMPLATES[template]},
    )  # fmt: skip
    assert expected.status_code == 200, expected.text
    predictions = expected.json()["data"][0]["predictions"]
    assert [row["label"] for row in shown] == [p["label"] for p in predictions]
    assert [row["labelText"].strip() for row in shown] == [p["label"] for p in predictions]
    np.testing.assert_allclose(
        [float(row["score"]) for row in shown], [p["score"] for p in predictions], rtol=0, atol=1e-6
    )
    for row, prediction in zip(shown, predictions, strict=True):
        assert f"{prediction['score'] * 100:.1f}" in row["scoreText"], (row, prediction)
    web.assert_clean()


def test_compare_shows_the_api_cosines(web: WebPage, site: Site) -> None:
    texts = ["a cat", "a rocket on the launch pad", "a cup of coffee"]
    images = ["chelsea", "rocket"]
    sign_up(web, new_email("compare"))
    key = web.create_key("compare check")["key"]
    open_playground(web, "compare")
    page = web.page
    page.fill("#compare-texts", "\n".join(texts))
    page.set_input_files("#compare-files", [str(photo_path(name)) for name in images])
    page.click("#compare-submit")
    page.wait_for_function(
        f"() => document.querySelectorAll('#compare-heatmap td.cell').length === {len(texts) * len(images)}"
    )
    cells = page.eval_on_selector_all(
        "#compare-heatmap td.cell",
        "cells => cells.map(td => [Number(td.dataset.row), Number(td.dataset.col), td.dataset.cosine,"
        " td.textContent])",
    )
    web.shot("compare")

    answer = site.api(
        "POST", "/v1/embeddings", key,
        json={"model": MODEL, "input": [*texts, *(photo_uri(name) for name in images)], "encoding_format": "float"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    rows = sorted(answer.json()["data"], key=lambda row: row["index"])
    vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = vectors[: len(texts)] @ vectors[len(texts) :].T
    seen = set()
    for row, col, cosine, text in cells:
        seen.add((row, col))
        assert abs(float(cosine) - expected[row, col]) <= 1e-5, (row, col, cosine, expected[row, col])
        assert abs(float(text) - expected[row, col]) <= 0.0005 + 1e-9, (row, col, text)
    assert seen == {(r, c) for r in range(len(texts)) for c in range(len(images))}
    web.assert_clean()


def _search_items(payload: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {
            "id": name,
            "image": photo_uri(name),
            "metadata": {"image_url": thumbnail_uri(name), "caption": payload, "title": name},
        }
        for name in ("chelsea", "rocket", "coffee")
    ]
    items.append({"id": "note-1", "text": "a note about cats", "metadata": {"caption": "<b>no markup</b>"}})
    return items


def _shown_hits(web: WebPage, count: int) -> list[dict[str, Any]]:
    web.page.wait_for_function(
        f"() => document.querySelectorAll('#search-results figure.hit').length === {count}"
    )
    hits: list[dict[str, Any]] = web.page.eval_on_selector_all(
        "#search-results figure.hit",
        """figures => figures.map(f => ({
            id: f.dataset.id, score: f.dataset.score,
            idText: f.querySelector('.hit-id').textContent,
            metadata: f.querySelector('.hit-metadata').textContent,
            img: f.querySelector('img') ? f.querySelector('img').src : null,
        }))""",
    )
    return hits


def _assert_hits_match(hits: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [hit["id"] for hit in hits] == [row["id"] for row in expected]
    np.testing.assert_allclose(
        [float(h["score"]) for h in hits], [r["score"] for r in expected], atol=1e-6, rtol=0
    )
    for hit, row in zip(hits, expected, strict=True):
        assert hit["idText"].strip() == row["id"]
        assert json.loads(hit["metadata"]) == row["metadata"]  # the metadata, as text
        assert hit["img"] == row["metadata"].get("image_url"), hit["id"]


XSS_IN_METADATA = '<img src=x onerror="window.__xss=1"></script><script>window.__xss=1</script>'


def test_search_shows_the_stored_items_by_text_and_by_image(web: WebPage, site: Site) -> None:
    sign_up(web, new_email("search"))
    key = web.create_key("search check")["key"]
    name = "photos-" + new_email("c")[2:12]
    created = site.api("POST", "/v1/collections", key, json={"name": name, "description": "browser test"})
    assert created.status_code == 200, created.text
    added = site.api(
        "POST", f"/v1/collections/{name}/items", key, json={"items": _search_items(XSS_IN_METADATA)}
    )
    assert added.status_code == 200, added.text
    assert added.json()["errors"] is False, added.text

    open_playground(web, "search")
    page = web.page
    page.select_option("#search-collection", name)
    page.fill("#search-text", "a cat")
    page.click("#search-submit")
    hits = _shown_hits(web, 4)
    web.shot("search-text")
    expected = site.api("POST", f"/v1/collections/{name}/search", key, json={"query": {"text": "a cat"}})
    assert expected.status_code == 200, expected.text
    _assert_hits_match(hits, expected.json()["results"])
    # the payload in the metadata is text in the caption, not markup
    captions = [json.loads(hit["metadata"])["caption"] for hit in hits if hit["id"] != "note-1"]
    assert captions == [XSS_IN_METADATA] * 3
    assert (
        page.locator("#search-results img").count() == 3
    )  # the three image_url thumbnails, nothing injected

    open_playground(web, "search")
    page.select_option("#search-collection", name)
    page.set_input_files("#search-file", str(photo_path("rocket")))
    page.click("#search-submit")
    hits = _shown_hits(web, 4)
    web.shot("search-image")
    expected = site.api(
        "POST", f"/v1/collections/{name}/search", key, json={"query": {"image": photo_uri("rocket")}}
    )
    assert expected.status_code == 200, expected.text
    _assert_hits_match(hits, expected.json()["results"])
    assert hits[0]["id"] == "rocket"  # the photo itself is its own best hit
    web.assert_clean()


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_classify_a_dropped_or_pasted_image(web: WebPage, site: Site, how: str) -> None:
    sign_up(web, new_email(how))
    key = web.create_key(f"{how} check")["key"]
    open_playground(web, "classify")
    page = web.page
    photo = photo_path("coffee").read_bytes()
    # a real DataTransfer holding the photo as a File, as the OS hands one to a drop or a paste
    transfer = page.evaluate_handle(
        """(bytes) => { const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], "coffee.png", {type: "image/png"})); return dt; }""",
        list(photo),
    )
    if how == "drop":
        page.dispatch_event("#classify-drop", "drop", {"dataTransfer": transfer})
    else:
        page.evaluate(
            """(dt) => document.getElementById("panel-classify").dispatchEvent(
                new ClipboardEvent("paste", {clipboardData: dt, bubbles: true}))""",
            transfer,
        )
    page.fill("#classify-labels", "\n".join(LABELS))
    page.click("#classify-submit")
    page.wait_for_function(
        f"() => document.querySelectorAll('#classify-results li.result').length === {len(LABELS)}"
    )
    shown = page.eval_on_selector_all(
        "#classify-results li.result",
        "items => items.map(li => [li.dataset.label, Number(li.dataset.score)])",
    )
    web.shot(f"classify-{how}")
    expected = site.api("POST", "/v1/classify", key, json={"image": data_uri(photo), "labels": LABELS})
    assert expected.status_code == 200, expected.text
    predictions = expected.json()["data"][0]["predictions"]
    assert [label for label, _ in shown] == [p["label"] for p in predictions]
    np.testing.assert_allclose([s for _, s in shown], [p["score"] for p in predictions], rtol=0, atol=1e-6)
    web.assert_clean()


def test_playground_tabs_work_from_the_keyboard(web: WebPage) -> None:
    sign_up(web, new_email("keys"))
    open_playground(web, "classify")
    page = web.page
    page.focus("#tab-classify")
    for key, tab in (("ArrowRight", "compare"), ("ArrowRight", "search"), ("ArrowRight", "classify"),
                     ("ArrowLeft", "search")):  # fmt: skip
        page.keyboard.press(key)
        assert page.evaluate("document.activeElement.id") == f"tab-{tab}"
        assert page.get_attribute(f"#tab-{tab}", "aria-selected") == "true"
        assert page.is_visible(f"#panel-{tab}")
        for other in {"classify", "compare", "search"} - {tab}:
            assert page.is_hidden(f"#panel-{other}"), (tab, other)
    web.shot("keyboard-tabs")
