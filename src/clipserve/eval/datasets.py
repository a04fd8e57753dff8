"""Evaluation data on disk: ImageFolder or CSV for zero-shot; COCO/Flickr-style JSON or CSV for retrieval."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from open_clip import IMAGENET_CLASSNAMES

from clipserve.service.templates import NAMED_TEMPLATE_SETS, PromptMaker, template_set

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jpe"})


class DatasetError(ValueError):
    """The data set on disk is not in a shape we read."""


@dataclass(frozen=True)
class ZeroShotDataset:
    paths: list[Path]
    targets: list[int]  # index into class_keys
    class_keys: list[str]  # folder names or CSV labels, sorted


@dataclass(frozen=True)
class RetrievalDataset:
    images: list[Path]
    captions: list[str]
    caption_image: list[int]  # the image each caption describes


def load_zeroshot(data: Path) -> ZeroShotDataset:
    """An ImageFolder (one sub-folder per class) or a CSV with `path,label` columns."""
    if data.is_dir():
        return _image_folder(data)
    if data.suffix.lower() == ".csv":
        rows = _csv_rows(data, ("path", "label"))
        keys = sorted({row["label"] for row in rows})
        index = {key: i for i, key in enumerate(keys)}
        return ZeroShotDataset(
            [_resolve(data, r["path"]) for r in rows], [index[r["label"]] for r in rows], keys
        )
    raise DatasetError(f"{data}: expected a directory of class folders or a .csv file")


def _image_folder(root: Path) -> ZeroShotDataset:
    keys = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not keys:
        raise DatasetError(f"{root} has no class sub-folders")
    paths: list[Path] = []
    targets: list[int] = []
    for index, key in enumerate(keys):
        files = sorted(p for p in (root / key).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        targets += [index] * len(files)
    if not paths:
        raise DatasetError(f"{root} has class folders but no images")
    return ZeroShotDataset(paths, targets, keys)


def load_classnames(spec: str | None, class_keys: Sequence[str]) -> list[str]:
    """Names to put in prompts: the folder names (underscores as spaces), 'imagenet', or a file of lines."""
    if spec is None:
        return [key.replace("_", " ") for key in class_keys]
    if spec == "imagenet":
        names = list(IMAGENET_CLASSNAMES)
    else:
        names = [line.strip() for line in Path(spec).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != len(class_keys):
        raise DatasetError(
            f"{len(names)} class names for {len(class_keys)} classes (sorted folder/label order)"
        )
    return names


def load_templates(spec: str | None) -> list[PromptMaker]:
    """A named set (openai-imagenet, simple-imagenet), a file with one template per line, or one template."""
    if spec is not None and spec not in NAMED_TEMPLATE_SETS and Path(spec).is_file():
        lines = [line.strip() for line in Path(spec).read_text(encoding="utf-8").splitlines() if line.strip()]
        return [maker for line in lines for maker in template_set(line)]
    return template_set(spec)


def load_retrieval(data: Path) -> RetrievalDataset:
    """Image-caption pairs: CSV rows `image,caption`, or JSON (a list of {image, captions}, COCO, or Karpathy)."""
    if data.suffix.lower() == ".csv":
        pairs = [(r["image"], r["caption"]) for r in _csv_rows(data, ("image", "caption"))]
    elif data.suffix.lower() == ".json":
        pairs = _json_pairs(json.loads(data.read_text(encoding="utf-8")))
    else:
        raise DatasetError(f"{data}: expected .json or .csv")
    images: dict[str, int] = {}
    captions: list[str] = []
    owners: list[int] = []
    for image, caption in pairs:
        owners.append(images.setdefault(image, len(images)))
        captions.append(caption)
    if not captions:
        raise DatasetError(f"{data} has no captions")
    return RetrievalDataset([_resolve(data, name) for name in images], captions, owners)


def _json_pairs(doc: Any) -> list[tuple[str, str]]:
    if isinstance(doc, dict) and "annotations" in doc:  # COCO captions
        files = {img["id"]: img["file_name"] for img in doc["images"]}
        return [(files[a["image_id"]], a["caption"]) for a in doc["annotations"]]
    entries = (
        doc["images"] if isinstance(doc, dict) and "images" in doc else doc
    )  # Karpathy splits, or a list
    pairs = []
    for entry in entries:
        image = entry.get("image") or entry.get("file_name") or entry.get("filename") or entry.get("filepath")
        captions = entry.get("captions") or entry.get("caption") or entry.get("sentences")
        if isinstance(captions, str):
            captions = [captions]
        if not image or not captions:
            raise DatasetError(f"entry without image or captions: {str(entry)[:120]}")
        pairs += [(str(image), c["raw"] if isinstance(c, dict) else str(c)) for c in captions]
    return pairs


def _csv_rows(path: Path, columns: tuple[str, str]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not set(columns) <= set(rows[0]):
        raise DatasetError(f"{path} needs a header with columns {', '.join(columns)}")
    return rows


def _resolve(data_file: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else data_file.parent / path
