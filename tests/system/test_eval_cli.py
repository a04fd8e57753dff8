"""`clipserve eval` end to end on data sets made here, against figures computed independently with open_clip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from clipserve.cli import main
from clipserve.runtime.weights import resolve_architecture
from tests.support import SKIMAGE_DATA, TINY_CONFIG
from tests.system.conftest import ServerProcess

# Eight classes, so top-5 is not 1.0 by construction (with three it always was).
CLASSES = {
    "astronaut": "astronaut.png", "cat": "chelsea.png", "coffee_cup": "coffee.png", "rocket": "rocket.jpg",
    "horse": "horse.png", "brick_wall": "brick.png", "coins": "coins.png", "motorcycle": "motorcycle_left.png",
}  # fmt: skip
# Sixteen images with two captions each, so recall@5 and @10 are not 1.0 by construction (with six they were).
CAPTIONS = {
    "astronaut.png": ["an astronaut in a white suit", "a woman in a space suit"],
    "chelsea.png": ["a cat lying down", "an orange tabby cat"],
    "coffee.png": ["a cup of coffee", "coffee on a saucer"],
    "rocket.jpg": ["a rocket on the launch pad", "a space shuttle"],
    "camera.png": ["a man with a camera", "a black and white photo"],
    "horse.png": ["a horse silhouette", "a black horse"],
    "brick.png": ["a brick wall", "grey bricks"],
    "coins.png": ["old coins on a table", "a grid of coins"],
    "moon.png": ["the surface of the moon", "craters"],
    "motorcycle_left.png": ["a motorcycle", "a red motorbike"],
    "page.png": ["a page of printed text", "a scanned book page"],
    "hubble_deep_field.jpg": ["galaxies in deep space", "the hubble deep field"],
    "retina.jpg": ["a photo of a retina", "blood vessels of an eye"],
    "grass.png": ["a patch of grass", "green blades of grass"],
    "gravel.png": ["gravel on the ground", "small stones"],
    "clock_motion.png": ["a blurred clock", "a clock in motion"],
}
TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}."]
MODEL_ARGS = ["--weights", "random", "--architecture", str(TINY_CONFIG), "--random-seed", "0"]


def variants(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    return [
        image,
        ImageOps.mirror(image),
        image.crop((w // 8, h // 8, w - w // 8, h - h // 8)),
        image.rotate(15),
    ]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zeroshot")
    for folder, photo in CLASSES.items():
        (root / folder).mkdir()
        for i, image in enumerate(variants(Image.open(SKIMAGE_DATA / photo).convert("RGB"))[:2]):
            image.save(root / folder / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def captions_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrieval")
    entries = []
    for name, texts in CAPTIONS.items():
        (root / name).write_bytes((SKIMAGE_DATA / name).read_bytes())
        entries.append({"image": name, "captions": texts})
    (root / "captions.json").write_text(json.dumps(entries))
    with (root / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows((e["image"], c) for e in entries for c in e["captions"])
    return root / "captions.json"


@pytest.fixture(scope="module")
def reference_model():  # type: ignore[no-untyped-def]
    """The same tiny model, built independently the way the runtime's seeded random init builds it."""
    name = resolve_architecture(str(TINY_CONFIG))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_zeroshot_matches_an_independent_open_clip_computation(
    image_folder: Path, reference_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    templates_file = tmp_path / "templates.txt"
    templates_file.write_text("\n".join(TEMPLATES))
    out = tmp_path / "zeroshot.json"
    printed = run(capsys, "eval", "zeroshot", "--data", str(image_folder), "--templates", str(templates_file),
                  "--out", str(out), *MODEL_ARGS)  # fmt: skip
    report = json.loads(out.read_text())

    model, preprocess, tokenizer = reference_model
    names = [k.replace("_", " ") for k in sorted(CLASSES)]
    paths = [p for k in sorted(CLASSES) for p in sorted((image_folder / k).iterdir())]
    targets = torch.tensor([i for i, k in enumerate(sorted(CLASSES)) for _ in (image_folder / k).iterdir()])
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, names, TEMPLATES)
        features = F.normalize(
            model.encode_image(torch.stack([preprocess(Image.open(p)) for p in paths])), dim=-1
        )
        scores = features @ classifier
        predictions = scores.argmax(dim=1)
    top1 = float((predictions == targets).float().mean())
    top5 = float((scores.topk(5, dim=1).indices == targets[:, None]).any(dim=1).float().mean())
    assert 0 < top1 < top5 < 1  # the data set leaves each figure something to measure
    recalls = [float((predictions[targets == c] == c).float().mean()) for c in range(len(names))]

    assert report["samples"] == 16
    assert report["templates"] == 2
    assert report["top1"] == pytest.approx(top1)
    assert report["top5"] == pytest.approx(top5)
    assert report["mean_per_class_recall"] == pytest.approx(np.mean(recalls))
    assert [row["recall"] for row in report["per_class"]] == pytest.approx(recalls)
    assert f"top-1 {top1:.2%}" in printed
    assert "coffee cup" in printed


def test_zeroshot_reads_a_csv_the_same_as_the_folder(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [(str(p), k) for k in sorted(CLASSES) for p in sorted((image_folder / k).iterdir())]
    data = tmp_path / "data.csv"
    with data.open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label"), *rows])
    folder_out, csv_out = tmp_path / "folder.json", tmp_path / "csv.json"
    run(capsys, "eval", "zeroshot", "--data", str(image_folder), "--out", str(folder_out), *MODEL_ARGS)
    run(capsys, "eval", "zeroshot", "--data", str(data), "--out", str(csv_out), *MODEL_ARGS)
    assert json.loads(folder_out.read_text()) == json.loads(csv_out.read_text())


def test_retrieval_matches_an_independent_recall_computation(
    captions_file: Path, reference_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_csv = tmp_path / "json.json", tmp_path / "csv.json"
    printed = run(
        capsys, "eval", "retrieval", "--data", str(captions_file), "--out", str(out_json), *MODEL_ARGS
    )
    run(
        capsys,
        "eval",
        "retrieval",
        "--data",
        str(captions_file.with_suffix(".csv")),
        "--out",
        str(out_csv),
        *MODEL_ARGS,
    )
    report = json.loads(out_json.read_text())
    assert report == json.loads(out_csv.read_text())

    model, preprocess, tokenizer = reference_model
    entries = json.loads(captions_file.read_text())
    images = [captions_file.parent / e["image"] for e in entries]
    texts = [c for e in entries for c in e["captions"]]
    owner = torch.tensor([i for i, e in enumerate(entries) for _ in e["captions"]])
    with torch.no_grad():
        image_features = F.normalize(
            model.encode_image(torch.stack([preprocess(Image.open(p)) for p in images])), dim=-1
        )
        text_features = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    scores = text_features @ image_features.T
    for k in (1, 5, 10):
        text_to_image = (scores.topk(k, dim=1).indices == owner[:, None]).any(dim=1).float().mean()
        top_texts = scores.T.topk(k, dim=1).indices
        image_to_text = (owner[top_texts] == torch.arange(len(images))[:, None]).any(dim=1).float().mean()
        assert 0 < float(text_to_image) < 1, k  # not 1.0 (nor 0) by construction
        assert 0 < float(image_to_text) < 1, k
        assert report[f"image_retrieval_recall@{k}"] == pytest.approx(float(text_to_image))
        assert report[f"text_retrieval_recall@{k}"] == pytest.approx(float(image_to_text))
    assert report["images"] == 16
    assert report["captions"] == 32
    assert "image -> text" in printed


def test_eval_against_a_running_server_agrees_with_local(
    tiny_server: ServerProcess,
    image_folder: Path,
    captions_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for kind, data in (("zeroshot", image_folder), ("retrieval", captions_file)):
        local, remote = tmp_path / f"{kind}-local.json", tmp_path / f"{kind}-remote.json"
        run(capsys, "eval", kind, "--data", str(data), "--out", str(local), *MODEL_ARGS)
        run(
            capsys,
            "eval",
            kind,
            "--data",
            str(data),
            "--out",
            str(remote),
            "--url",
            tiny_server.base_url,
            "--batch-size",
            "5",
        )
        assert json.loads(local.read_text()) == json.loads(remote.read_text())  # same weights, same counts


def test_eval_data_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["eval", "zeroshot", "--data", str(tmp_path / "empty"), *MODEL_ARGS]) == 2
    assert "no class sub-folders" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,cat\n")
    assert main(["eval", "retrieval", "--data", str(bad), *MODEL_ARGS]) == 2
    assert "needs a header with columns image, caption" in capsys.readouterr().err
    (tmp_path / "folder" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "folder" / "cat" / "a.png")
    down = ["--url", "http://127.0.0.1:9"]  # nothing listens on the discard port
    assert main(["eval", "zeroshot", "--data", str(tmp_path / "folder"), *down]) == 2
    assert "could not reach" in capsys.readouterr().err
