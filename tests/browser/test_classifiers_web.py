"""Custom classifiers in the browser: one trained through the API with the user's key is listed in the console (its
name and labels as text, even a script tag) and used from the playground, whose bars equal /v1/classify with it.

The classifier's examples are generated colour images (solid colours with seeded noise); its name and one label
carry an XSS payload that must reach the page as text only.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from tests.browser.conftest import DESKTOP, MODEL, PHONE, Site, WebPage, new_email, sign_up
from tests.support import data_uri, photo_path

SEED = 15
PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
NAME = f"packaging {PAYLOAD}"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), f"blue {PAYLOAD}": (30, 40, 220)}
EXAMPLES_PER_LABEL = 3
MIME = {".png": "image/png", ".jpg": "image/jpeg"}


def colour_image_uri(rgb: tuple[int, int, int], rng: np.random.Generator, size: int = 48) -> str:
    """A solid colour with seeded noise, as a PNG data URI."""
    noise = rng.integers(-25, 26, size=(size, size, 3))
    pixels = np.clip(np.asarray(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return data_uri(buffer.getvalue(), "image/png")


def create_classifier(site: Site, key: str) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    examples = [
        {"input": colour_image_uri(rgb, rng), "label": label}
        for label, rgb in COLOURS.items()
        for _ in range(EXAMPLES_PER_LABEL)
    ]
    made = site.api(
        "POST", "/v1/classifiers", key,
        json={"name": NAME, "labels": list(COLOURS), "examples": examples},
    )  # fmt: skip
    assert made.status_code == 200, f"seed {SEED}: {made.text[:2000]}"
    body: dict[str, Any] = made.json()
    assert body["id"].startswith("clf_"), body
    assert body["name"] == NAME, body
    assert body["labels"] == list(COLOURS), body
    assert body["examples"] == EXAMPLES_PER_LABEL * len(COLOURS), body
    return body


def accuracy_text(classifier: dict[str, Any]) -> str:
    """What the console's accuracy cell says: cross-validated when the API has it, else training accuracy."""
    if classifier.get("cv_accuracy") is not None:
        return f"{classifier['cv_accuracy'] * 100:.1f}% (cross-validated)"
    return f"{classifier['train_accuracy'] * 100:.1f}% (training)"


def test_a_classifier_is_listed_in_the_console_and_classifies_in_the_playground(
    web: WebPage, site: Site
) -> None:
    sign_up(web, new_email("classifiers"))
    page = web.page
    assert page.is_visible("#classifiers-empty"), "a new account has no classifiers, and the page says how"
    assert page.locator('#classifiers-empty a[href^="/docs"]').count() == 1
    key = web.create_key("classifier trainer")["key"]
    classifier = create_classifier(site, key)
    clf_id = classifier["id"]

    # the console lists it, every user string as text
    web.goto("/console")
    row = page.locator(f'#classifiers-table tr[data-classifier-id="{clf_id}"]')
    row.wait_for()
    assert page.locator("#classifiers-table tr[data-classifier-id]").count() == 1
    assert row.locator(".clf-name").text_content() == NAME
    assert row.locator(".clf-labels").text_content() == ", ".join(COLOURS)
    assert (row.locator(".clf-examples").text_content() or "").strip() == str(classifier["examples"])
    assert (row.locator(".clf-accuracy").text_content() or "").strip() == accuracy_text(classifier)
    assert page.locator("#classifiers-table img, #classifiers-table script").count() == 0
    assert page.is_hidden("#classifiers-empty")
    web.shot("console-classifier")
    web.assert_clean()
    page.set_viewport_size(PHONE)  # a long name and labels scroll inside the table, not the page
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    page.set_viewport_size(DESKTOP)

    # the playground: pick it (labels and prompt inputs turn off), classify a photo
    web.goto("/playground")
    options = page.eval_on_selector_all(
        "#classify-classifier option", "options => options.map(o => [o.value, o.textContent])"
    )
    assert options[0][0] == "", options  # zero-shot with the typed labels
    assert options[1:] == [[clf_id, NAME]], options
    assert page.is_enabled("#classify-labels")
    assert page.is_enabled("#classify-template")
    page.select_option("#classify-classifier", clf_id)
    assert page.is_disabled("#classify-labels")
    assert page.is_disabled("#classify-template")
    page.set_input_files("#classify-file", str(photo_path("chelsea")))
    with page.expect_response(lambda r: r.url.endswith("/v1/classify")) as answer:
        page.click("#classify-submit")
    assert answer.value.status == 200, answer.value.text()
    sent: dict[str, Any] = answer.value.request.post_data_json or {}
    assert sent["classifier"] == clf_id, sent
    assert "labels" not in sent, sent
    assert "template" not in sent, sent
    page.wait_for_function(
        f"() => document.querySelectorAll('#classify-results li.result').length === {len(COLOURS)}"
    )
    shown = page.eval_on_selector_all(
        "#classify-results li.result",
        "items => items.map(li => ({label: li.dataset.label, score: li.dataset.score,"
        " labelText: li.querySelector('.label').textContent}))",
    )
    web.shot("playground-classifier")

    photo = photo_path("chelsea")
    expected = site.api(
        "POST", "/v1/classify", key,
        json={"model": MODEL, "classifier": clf_id, "input": [data_uri(photo.read_bytes(), MIME[photo.suffix])]},
    )  # fmt: skip
    assert expected.status_code == 200, expected.text
    predictions = expected.json()["data"][0]["predictions"]
    assert sorted(p["label"] for p in predictions) == sorted(COLOURS)
    assert [row["label"] for row in shown] == [p["label"] for p in predictions]
    assert [row["labelText"] for row in shown] == [p["label"] for p in predictions]
    np.testing.assert_allclose(
        [float(row["score"]) for row in shown], [p["score"] for p in predictions], rtol=0, atol=1e-6
    )
    assert page.locator("#classify-results img, #classify-results script").count() == 0

    # back to zero-shot: the inputs are on again
    page.select_option("#classify-classifier", "")
    assert page.is_enabled("#classify-labels")
    assert page.is_enabled("#classify-template")
    web.assert_clean()
