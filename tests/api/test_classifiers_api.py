"""/v1/classifiers through the real app (tiny model): the prior equals zero-shot, ownership, restarts, deletes,
bad input, metering of examples and of classifying with a classifier, and online adds."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.support import bearer, create_key, data_uri, encode_image, gradient_image, running_app, until

pytestmark = pytest.mark.anyio

LABELS = ["a cat", "a dog", "a red car", "a tree"]


def _image(seed: int) -> str:
    return data_uri(encode_image(gradient_image(64, 48, seed=seed)))


def _scores(body: dict[str, Any]) -> list[list[tuple[str, float]]]:
    return [[(p["label"], p["score"]) for p in row["predictions"]] for row in body["data"]]


def _assert_same_answer(mine: dict[str, Any], reference: dict[str, Any], atol: float) -> None:
    ours, theirs = _scores(mine), _scores(reference)
    assert [[label for label, _ in row] for row in ours] == [[label for label, _ in row] for row in theirs]
    np.testing.assert_allclose(
        [[s for _, s in row] for row in ours], [[s for _, s in row] for row in theirs], rtol=0, atol=atol
    )
    assert [row["prediction"] for row in mine["data"]] == [row["prediction"] for row in reference["data"]]


@pytest.mark.parametrize("template", [None, "a blurry photo of {}.", "openai-imagenet"])
async def test_prior_without_examples_classifies_exactly_as_zero_shot(
    tiny_runtime: Any, tmp_path: Path, template: str | None
) -> None:
    images = [_image(seed) for seed in range(6)]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        options = {} if template is None else {"options": {"template": template}}
        created = await client.post("/v1/classifiers", json={"name": "pets", "labels": LABELS, **options})
        assert created.status_code == 200, created.text
        body = created.json()
        assert body["id"].startswith("clf_")
        assert body["object"] == "classifier"
        assert body["zero_shot_prior"] is True
        assert body["examples"] == 0
        assert body["examples_per_label"] == dict.fromkeys(LABELS, 0)
        assert body["train_accuracy"] is None
        assert body["cv_accuracy"] is None
        zero_shot = {"input": images, "labels": LABELS} | ({} if template is None else {"template": template})
        reference = await client.post("/v1/classify", json=zero_shot)
        mine = await client.post("/v1/classify", json={"input": images, "classifier": body["id"]})
        assert reference.status_code == 200, reference.text
        assert mine.status_code == 200, mine.text
        _assert_same_answer(mine.json(), reference.json(), atol=1e-6)
        assert mine.json()["usage"] == {
            "prompt_tokens": 0,
            "total_tokens": 0,
            "cached_tokens": 0,
            "image_count": 6,
        }
        top2 = await client.post("/v1/classify", json={"input": images, "classifier": body["id"], "top_k": 2})
        assert [len(row["predictions"]) for row in top2.json()["data"]] == [2] * 6
        assert _scores(top2.json()) == [row[:2] for row in _scores(mine.json())]


BAD_BODIES = [
    ({"name": "x", "labels": ["cat"]}, "labels"),
    ({"name": "x", "labels": ["cat", "cat"]}, "labels"),
    ({"name": "x", "labels": ["cat", " "]}, "labels[1]"),
    ({"name": "x", "labels": [f"l{i}" for i in range(5)]}, "labels"),  # classifier_max_labels=4 below
    ({"name": " ", "labels": ["cat", "dog"]}, "name"),
    ({"name": "x", "labels": ["cat", "dog"], "examples": [{"input": "a cat", "label": "bird"}]}, "examples[0].label"),
    ({"name": "x", "labels": ["cat", "dog"], "examples": [{"input": "a cat"}]}, "examples[0]"),
    ({"name": "x", "labels": ["cat", "dog"], "options": {"zero_shot_prior": False}}, "examples"),
    ({"name": "x", "labels": ["cat", "dog"], "examples": [{"input": "a", "label": "cat"}] * 7}, "examples"),
    ({"name": "x", "labels": ["cat", "dog"], "options": {"zero_shot_prior": False},
      "examples": [{"input": "a", "label": "cat"}, {"input": _image(1), "label": "cat"}]}, "examples"),  # one class
    ({"name": "x", "labels": ["cat", "dog"], "options": {"C": -1}}, "options.C"),
    ({"name": "x", "labels": ["cat", "dog"], "options": {"template": "no slot"}}, "options.template"),
    ({"name": "x", "labels": ["cat", "dog"], "options": {"zero_shot_prior": False, "template": "{}"},
      "examples": [{"input": "a", "label": "cat"}]}, "options.template"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
async def test_bad_input_is_a_400_naming_the_field(
    tiny_runtime: Any, tmp_path: Path, body: dict[str, Any], param: str
) -> None:
    async with running_app(tiny_runtime, tmp_path, classifier_max_labels=4, classifier_max_examples=6) as (
        client,
        _,
    ):
        answer = await client.post("/v1/classifiers", json=body)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == param
        assert error["type"] == "invalid_request_error"
        assert (await client.get("/v1/classifiers")).json()["data"] == []


async def test_classify_with_a_classifier_refuses_mixed_or_unknown_fields(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with running_app(tiny_runtime, tmp_path, classifier_max_examples=3, max_items_per_request=2) as (
        client,
        _,
    ):
        clf = (await client.post("/v1/classifiers", json={"name": "n", "labels": ["cat", "dog"]})).json()[
            "id"
        ]
        image = _image(1)
        for extra, param in (({"labels": ["a", "b"]}, "labels"), ({"template": "{}"}, "template"),
                             ({"multi_label": True}, "multi_label")):  # fmt: skip
            answer = await client.post("/v1/classify", json={"input": [image], "classifier": clf, **extra})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["param"] == param
        for body, param in (
            ({"input": [image], "top_k": 0}, "top_k"),
            ({"input": [{"text": "a cat"}]}, "input"),
        ):
            answer = await client.post("/v1/classify", json={"classifier": clf, **body})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["param"] == param
        neither = await client.post("/v1/classify", json={"input": [image]})
        assert neither.status_code == 400
        assert neither.json()["error"]["param"] == "labels"
        unknown = await client.post("/v1/classify", json={"input": [image], "classifier": "clf_" + "0" * 32})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "classifier_not_found"
        # per request (max_items_per_request) and in total (classifier_max_examples)
        three = [{"input": "a cat", "label": "cat"}] * 3
        over_request = await client.post(f"/v1/classifiers/{clf}/examples", json={"examples": three})
        assert over_request.status_code == 400
        assert over_request.json()["error"]["param"] == "examples"
        two = [{"input": "a cat", "label": "cat"}, {"input": "a dog", "label": "dog"}]
        assert (
            await client.post(f"/v1/classifiers/{clf}/examples", json={"examples": two})
        ).status_code == 200
        over_total = await client.post(f"/v1/classifiers/{clf}/examples", json={"examples": two})
        assert over_total.status_code == 400
        assert over_total.json()["error"]["param"] == "examples"
        assert (await client.get(f"/v1/classifiers/{clf}")).json()["examples"] == 2


async def test_classifiers_belong_to_their_account(tiny_runtime: Any, tmp_path: Path) -> None:
    alice, bob = create_key(tmp_path, "alice"), create_key(tmp_path, "bob")
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        created = await client.post(
            "/v1/classifiers", json={"name": "mine", "labels": LABELS}, headers=bearer(alice)
        )
        clf = created.json()["id"]
        examples = {"examples": [{"input": "a cat", "label": "a cat"}]}
        for method, path, body in (
            ("GET", f"/v1/classifiers/{clf}", None),
            ("POST", f"/v1/classifiers/{clf}/examples", examples),
            ("POST", "/v1/classify", {"input": [_image(1)], "classifier": clf}),
            ("DELETE", f"/v1/classifiers/{clf}", None),
        ):
            answer = await client.request(method, path, json=body, headers=bearer(bob))
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "classifier_not_found"
            assert "x-request-cost-micros" not in answer.headers
        assert (await client.get("/v1/classifiers", headers=bearer(bob))).json()["data"] == []
        mine = await client.get(f"/v1/classifiers/{clf}", headers=bearer(alice))
        assert mine.status_code == 200
        assert mine.json()["examples"] == 0


async def test_classifier_survives_a_restart(tiny_runtime: Any, tmp_path: Path) -> None:
    images = [_image(seed) for seed in range(3)]
    examples = [{"input": _image(10 + i), "label": LABELS[i % 2]} for i in range(4)]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        created = (
            await client.post(
                "/v1/classifiers", json={"name": "kept", "labels": LABELS, "examples": examples}
            )
        ).json()
        before = (
            await client.post("/v1/classify", json={"input": images, "classifier": created["id"]})
        ).json()
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        listed = (await client.get("/v1/classifiers")).json()["data"]
        assert [c["id"] for c in listed] == [created["id"]]
        again = (await client.get(f"/v1/classifiers/{created['id']}")).json()
        assert {k: v for k, v in again.items() if k != "usage"} == {
            k: v for k, v in created.items() if k != "usage"
        }
        after = (
            await client.post("/v1/classify", json={"input": images, "classifier": created["id"]})
        ).json()
        assert _scores(after) == _scores(before)


async def test_delete_removes_the_classifier(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        first = (await client.post("/v1/classifiers", json={"name": "a", "labels": LABELS})).json()["id"]
        second = (await client.post("/v1/classifiers", json={"name": "b", "labels": LABELS})).json()["id"]
        assert [c["id"] for c in (await client.get("/v1/classifiers")).json()["data"]] == [second, first]
        deleted = await client.delete(f"/v1/classifiers/{first}")
        assert deleted.json() == {"id": first, "object": "classifier", "deleted": True}
        assert (await client.get(f"/v1/classifiers/{first}")).status_code == 404
        assert (
            await client.post("/v1/classify", json={"input": [_image(1)], "classifier": first})
        ).status_code == 404
        assert (await client.delete(f"/v1/classifiers/{first}")).status_code == 404
        assert [c["id"] for c in (await client.get("/v1/classifiers")).json()["data"]] == [second]


async def test_quota_of_classifiers_per_account(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path, classifiers_per_account=2) as (client, _):
        for name in ("a", "b"):
            assert (
                await client.post("/v1/classifiers", json={"name": name, "labels": LABELS})
            ).status_code == 200
        third = await client.post("/v1/classifiers", json={"name": "c", "labels": LABELS})
        assert third.status_code == 400
        assert third.json()["error"]["code"] == "classifier_quota_exceeded"


def _usage_by_endpoint(body: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    return {
        row["endpoint"]: (row["requests"], row["images"], row["tokens"], row["cost_micros"])
        for row in body["data"]
    }


async def test_examples_are_charged_as_embeddings_and_classifying_charges_images_only(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path, "payer")
    items = [_image(1), {"text": "a small grey cat on a sofa"}, _image(2), {"text": "a dog"}]
    labels = ["cat", "dog"]
    examples = [{"input": item, "label": labels[i % 2]} for i, item in enumerate(items)]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        created = await client.post(
            "/v1/classifiers",
            json={
                "name": "paid",
                "labels": labels,
                "examples": examples,
                "options": {"zero_shot_prior": False},
            },
            headers=bearer(key),
        )
        assert created.status_code == 200, created.text
        embedded = await client.post("/v1/embeddings", json={"input": items}, headers=bearer(key))
        usage = embedded.json()["usage"]
        assert created.json()["usage"] == {
            "prompt_tokens": usage["prompt_tokens"], "total_tokens": usage["total_tokens"], "image_count": 2,
        }  # fmt: skip
        assert created.headers["x-request-cost-micros"] == embedded.headers["x-request-cost-micros"]
        classified = await client.post(
            "/v1/classify", json={"input": [_image(3), _image(4), _image(5)], "classifier": created.json()["id"]},
            headers=bearer(key),
        )  # fmt: skip
        three_images = await client.post(
            "/v1/embeddings", json={"input": [_image(3), _image(4), _image(5)]}, headers=bearer(key)
        )
        assert classified.headers["x-request-cost-micros"] == three_images.headers["x-request-cost-micros"]
        ledger = _usage_by_endpoint((await client.get("/v1/usage", headers=bearer(key))).json())
        requests, images, tokens, cost = ledger["/v1/classifiers"]
        assert (requests, images, tokens) == (1, 2, usage["prompt_tokens"])
        assert usage["prompt_tokens"] > 0
        assert cost == int(created.headers["x-request-cost-micros"])
        assert ledger["/v1/classify"][:3] == (1, 3, 0)
        # an add is charged like the embeddings of what it adds
        added = await client.post(
            f"/v1/classifiers/{created.json()['id']}/examples",
            json={"examples": [{"input": _image(6), "label": "cat"}]},
            headers=bearer(key),
        )
        assert added.status_code == 200
        assert added.json()["usage"]["image_count"] == 1
        ledger = _usage_by_endpoint((await client.get("/v1/usage", headers=bearer(key))).json())
        assert ledger["/v1/classifiers/{classifier_id}/examples"][:3] == (1, 1, 0)


async def test_prior_prompts_are_charged_like_classify_prompts(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, "payer")
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        created = await client.post(
            "/v1/classifiers", json={"name": "p", "labels": LABELS, "examples": [{"input": _image(1), "label": "a cat"}]},
            headers=bearer(key),
        )  # fmt: skip
        # the same prompts again through /v1/classify: all cached now, and charged the same tokens
        classified = await client.post(
            "/v1/classify", json={"input": [_image(1)], "labels": LABELS}, headers=bearer(key)
        )
        prompt_tokens = classified.json()["usage"]["cached_tokens"]
        assert prompt_tokens > 0
        assert classified.json()["usage"]["prompt_tokens"] == 0
        assert created.json()["usage"] == {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens,
            "image_count": 1,
        }
        assert created.headers["x-request-cost-micros"] == classified.headers["x-request-cost-micros"]


def _colour_image(rng: np.random.Generator, colour: tuple[int, int, int]) -> str:
    pixels = np.asarray(colour, dtype=np.float64) + rng.normal(0, 20, size=(48, 48, 3))
    return data_uri(encode_image(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))))


async def test_an_add_retrains_toward_the_new_examples(tiny_runtime: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    red = [_colour_image(rng, (200, 40, 40)) for _ in range(3)]
    blue = [_colour_image(rng, (40, 60, 200)) for _ in range(3)]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        clf = (await client.post("/v1/classifiers", json={"name": "online", "labels": LABELS})).json()
        before = (
            await client.post("/v1/classify", json={"input": red + blue, "classifier": clf["id"]})
        ).json()
        tops = {row["prediction"] for row in before["data"]}
        # two different labels zero-shot gives to none of the images: only the weights can tell red from blue
        red_label, blue_label = [label for label in LABELS if label not in tops][:2]
        examples = [{"input": image, "label": red_label} for image in red[:2]]
        examples += [{"input": image, "label": blue_label} for image in blue[:2]]
        added = await client.post(f"/v1/classifiers/{clf['id']}/examples", json={"examples": examples})
        assert added.status_code == 200, added.text
        body = added.json()
        assert body["examples"] == 4
        assert body["train_accuracy"] == 1.0
        assert body["examples_per_label"] == {
            label: 2 if label in (red_label, blue_label) else 0 for label in LABELS
        }
        assert body["updated_at"] >= clf["updated_at"]
        after = (
            await client.post("/v1/classify", json={"input": red + blue, "classifier": clf["id"]})
        ).json()
        targets = [red_label] * 3 + [blue_label] * 3  # the third of each colour was not among the examples
        assert [row["prediction"] for row in after["data"]] == targets
        for old, new, target in zip(before["data"], after["data"], targets, strict=True):
            old_score = next(p["score"] for p in old["predictions"] if p["label"] == target)
            new_score = next(p["score"] for p in new["predictions"] if p["label"] == target)
            assert new_score > old_score


async def test_trainings_in_progress_are_bounded_per_account(tiny_runtime: Any, tmp_path: Path) -> None:
    alice, bob = create_key(tmp_path, "alice"), create_key(tmp_path, "bob")
    body = {"name": "n", "labels": ["cat", "dog"], "examples": [{"input": "a cat", "label": "cat"}]}
    settings = {"classifier_train_workers": 1, "classifier_trainings_per_account": 1}
    async with running_app(tiny_runtime, tmp_path, **settings) as (client, app):
        service = app.state.context.classifiers
        release = threading.Event()
        blocker = service.train_pool.submit_for("someone else", lambda: release.wait(60))  # the only worker
        try:
            first = asyncio.create_task(client.post("/v1/classifiers", json=body, headers=bearer(alice)))
            await until(lambda: sum(service.trainings.values()) == 1)  # alice's slot taken, training queued
            refused = await client.post("/v1/classifiers", json=body, headers=bearer(alice))
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "2"
            assert "x-request-cost-micros" not in refused.headers
            other = asyncio.create_task(client.post("/v1/classifiers", json=body, headers=bearer(bob)))
            await until(lambda: len(service.trainings) == 2)  # bob is not refused: his own slot
            assert not first.done()
        finally:
            release.set()
        blocker.result(timeout=60)
        assert (await first).status_code == 200
        assert (await other).status_code == 200
        assert service.trainings == {}
        assert (await client.post("/v1/classifiers", json=body, headers=bearer(alice))).status_code == 200


async def test_an_add_without_the_prior_must_leave_two_labels_covered(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path, "payer")
    no_prior = {"zero_shot_prior": False}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        one_class = {"name": "n", "labels": ["cat", "dog", "car"], "options": no_prior,
                     "examples": [{"input": _image(1), "label": "cat"}]}  # fmt: skip
        refused = await client.post("/v1/classifiers", json=one_class, headers=bearer(key))
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "examples"
        two = {
            **one_class,
            "examples": [{"input": _image(1), "label": "cat"}, {"input": "a dog", "label": "dog"}],
        }
        created = await client.post("/v1/classifiers", json=two, headers=bearer(key))
        assert created.status_code == 200, created.text
        clf = created.json()["id"]
        # an add's new examples may all be of one label: the stored ones cover another
        more_cats = {"examples": [{"input": _image(2), "label": "cat"}]}
        added = await client.post(f"/v1/classifiers/{clf}/examples", json=more_cats, headers=bearer(key))
        assert added.status_code == 200, added.text
        assert added.json()["examples_per_label"] == {"cat": 2, "dog": 1, "car": 0}
        # with the prior, examples of one label are fine (the prior covers every label)
        with_prior = {**one_class, "options": {"zero_shot_prior": True}}
        assert (await client.post("/v1/classifiers", json=with_prior, headers=bearer(key))).status_code == 200
        ledger = _usage_by_endpoint((await client.get("/v1/usage", headers=bearer(key))).json())
        assert ledger["/v1/classifiers"][:2] == (2, 2)  # requests, images: the refused create charged nothing


async def test_training_cpu_is_budgeted_per_account(tiny_runtime: Any, tmp_path: Path) -> None:
    alice, bob = create_key(tmp_path, "alice"), create_key(tmp_path, "bob")
    per_minute = 1e-6  # any training uses more: the first one puts the account in debt for a long time
    body = {"name": "n", "labels": ["cat", "dog"], "examples": [{"input": _image(1), "label": "cat"}]}
    add = {"examples": [{"input": _image(2), "label": "dog"}]}
    async with running_app(tiny_runtime, tmp_path, classifier_training_cpu_s_per_minute=per_minute) as (
        client,
        app,
    ):
        budget = app.state.context.classifiers.training_budget
        first = await client.post("/v1/classifiers", json=body, headers=bearer(alice))
        assert first.status_code == 200, first.text
        # the budget's clock stands still: Retry-After does not tick down meanwhile
        stopped_at = budget._clock()
        budget._clock = lambda: stopped_at
        [account] = budget.accounts_held()  # alice's, in debt
        debt = -budget.level(account)
        assert debt > 0
        for path, json in (
            ("/v1/classifiers", body),
            (f"/v1/classifiers/{first.json()['id']}/examples", add),
        ):
            refused = await client.post(path, json=json, headers=bearer(alice))
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert error["code"] == "classifier_training_budget"
            assert "classifier_training_cpu_s_per_minute" in error["message"]
            # seconds until the bucket is back at 0 (the refill meanwhile is 1.7e-8 s of CPU per second)
            assert abs(int(refused.headers["retry-after"]) - debt * 60 / per_minute) <= 1  # rounding
            assert "x-request-cost-micros" not in refused.headers
        ledger = _usage_by_endpoint((await client.get("/v1/usage", headers=bearer(alice))).json())
        assert ledger["/v1/classifiers"][:2] == (1, 1)  # only the first create was charged
        assert "/v1/classifiers/{classifier_id}/examples" not in ledger
        assert (await client.get(f"/v1/classifiers/{first.json()['id']}", headers=bearer(alice))).json()[
            "examples"
        ] == 1
        other = await client.post("/v1/classifiers", json=body, headers=bearer(bob))
        assert other.status_code == 200, other.text
