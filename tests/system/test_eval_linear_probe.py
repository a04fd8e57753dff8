"""`clipserve eval linear-probe` end to end on a colour data set made here, against scikit-learn on features
computed independently with open_clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression

from clipserve.cli import main
from clipserve.runtime.weights import resolve_architecture
from clipserve.service.linear_probe import stratified_folds
from tests.support import TINY_CONFIG

SEED = 15
COLOURS = {"blue": (40, 60, 200), "green": (40, 170, 60), "red": (200, 40, 40), "yellow": (220, 210, 40)}
TRAIN_PER_CLASS = 15
TEST_PER_CLASS = 10
CHANCE = 1 / len(COLOURS)
# Random weights make zero-shot near chance (25%); the visual features still separate four noisy colours.
# Measured top-1 on this seed: 1.0. The bound leaves room for platform rounding, and is far above chance.
MIN_TOP1 = 0.9
MODEL_ARGS = ["--weights", "random", "--architecture", str(TINY_CONFIG), "--random-seed", "0"]


def _write_folder(root: Path, rng: np.random.Generator, per_class: int) -> Path:
    """Each image its class colour, shifted per image, with per-pixel noise (48 x 48 PNG)."""
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            base = np.asarray(colour, dtype=np.float64) + rng.uniform(-30, 30, size=3)
            pixels = base + rng.normal(0, 25, size=(48, 48, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / label / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def colour_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    rng = np.random.default_rng(SEED)
    root = tmp_path_factory.mktemp("linear_probe")
    return _write_folder(root / "train", rng, TRAIN_PER_CLASS), _write_folder(
        root / "test", rng, TEST_PER_CLASS
    )


def _reference_features(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The same tiny model built independently by open_clip (seeded as the runtime seeds it)."""
    name = resolve_architecture(str(TINY_CONFIG))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.eval()
    keys = sorted(p.name for p in folder.iterdir())
    paths = [p for k in keys for p in sorted((folder / k).iterdir())]
    targets = np.array([i for i, k in enumerate(keys) for _ in (folder / k).iterdir()])
    with torch.no_grad():
        features = F.normalize(
            model.encode_image(torch.stack([preprocess(Image.open(p)) for p in paths])), dim=-1
        )
    return features.double().numpy(), targets


def test_linear_probe_reports_accuracy_far_above_chance_and_matches_scikit_learn(
    colour_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = colour_folders
    out = tmp_path / "probe.json"
    grid = [0.01, 1.0, 100.0]
    argv = ["eval", "linear-probe", "--train", str(train), "--test", str(test), "--out", str(out),
            "--c-grid", ",".join(map(str, grid)), "--seed", "3", *MODEL_ARGS]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())

    # The protocol, redone with scikit-learn on independently computed features: the same 80/20 split,
    # C chosen by validation accuracy (ties: log-loss, then smaller C), refit on all of train.
    X_train, y_train = _reference_features(train)
    X_test, y_test = _reference_features(test)
    fit_part, validation = stratified_folds(y_train, 5, seed=3)[0]
    table = {}
    for C in grid:
        model = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(X_train[fit_part], y_train[fit_part])
        p = model.predict_proba(X_train[validation])
        table[C] = (
            float((p.argmax(axis=1) == y_train[validation]).mean()),
            float(-np.log(p[np.arange(len(validation)), y_train[validation]]).mean()),
        )
    chosen = min(grid, key=lambda C: (-round(table[C][0], 9), table[C][1], C))
    final = LogisticRegression(C=chosen, tol=1e-10, max_iter=100_000).fit(X_train, y_train)
    predictions = final.predict(X_test)
    top1 = float((predictions == y_test).mean())
    recalls = [float((predictions[y_test == c] == c).mean()) for c in range(len(COLOURS))]

    assert report["C"] == chosen
    assert report["validation_accuracy"] == pytest.approx({f"{c:g}": a for c, (a, _) in table.items()})
    assert report["train_samples"] + report["validation_samples"] == TRAIN_PER_CLASS * len(COLOURS)
    assert report["validation_samples"] == len(validation)
    assert report["test_samples"] == TEST_PER_CLASS * len(COLOURS)
    assert report["top1"] == pytest.approx(top1)
    expected_loss = float(-np.log(final.predict_proba(X_test)[np.arange(len(y_test)), y_test]).mean())
    # the runtime's features and open_clip's agree to float32 rounding; the fits to 1e-6 (unit tests)
    assert report["test_log_loss"] == pytest.approx(expected_loss, rel=1e-3, abs=1e-5)
    assert [row["recall"] for row in report["per_class"]] == pytest.approx(recalls)
    assert [row["class"] for row in report["per_class"]] == sorted(COLOURS)
    assert report["mean_per_class_recall"] == pytest.approx(np.mean(recalls))
    assert report["zero_shot_prior"] is False
    assert report["top1"] >= MIN_TOP1 > CHANCE, f"seed {SEED}: top-1 {report['top1']}"
    assert f"top-1 {report['top1']:.2%}" in printed
    lines = [line.split() for line in printed.splitlines()]
    for row in report["per_class"]:  # one line per class: name, test samples, top-1 recall
        assert [row["class"], str(TEST_PER_CLASS), f"{row['recall']:.2%}"] in lines, printed
    assert f"mean per-class recall {report['mean_per_class_recall']:.2%}" in printed


def test_linear_probe_with_the_zero_shot_prior_runs_and_says_so(
    colour_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = colour_folders
    out = tmp_path / "prior.json"
    argv = ["eval", "linear-probe", "--train", str(train), "--test", str(test), "--out", str(out),
            "--zero-shot-prior", "--c-grid", "0.01,100", *MODEL_ARGS]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["zero_shot_prior"] is True
    assert "(zero-shot prior)" in printed
    assert report["top1"] >= MIN_TOP1, f"seed {SEED}: top-1 {report['top1']}"


def test_linear_probe_refuses_train_and_test_with_different_classes(
    colour_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, _ = colour_folders
    other = _write_folder(tmp_path / "other", np.random.default_rng(0), 2)
    (other / "red").rename(other / "purple")
    assert main(["eval", "linear-probe", "--train", str(train), "--test", str(other), *MODEL_ARGS]) == 2
    assert "only in train ['red'], only in test ['purple']" in capsys.readouterr().err
