"""`clipserve eval zeroshot|retrieval`: run the evaluation locally (the server's runtime) or against --url."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from clipserve.config import Settings
from clipserve.errors import InvalidRequestError
from clipserve.eval.datasets import (
    DatasetError,
    load_classnames,
    load_retrieval,
    load_templates,
    load_zeroshot,
)
from clipserve.eval.embedders import Embedder, LocalEmbedder, RemoteEmbedder, RemoteEmbeddingError
from clipserve.eval.retrieval import evaluate_retrieval
from clipserve.eval.zeroshot import evaluate_zeroshot


def add_eval_commands(commands: Any) -> None:
    from clipserve.cli import MODEL_SETTINGS, add_settings_arguments

    evaluate = commands.add_parser("eval", help="measure zero-shot accuracy or retrieval recall")
    kinds = evaluate.add_subparsers(dest="eval_kind", required=True)

    zeroshot = kinds.add_parser(
        "zeroshot",
        help="zero-shot classification accuracy",
        description="Top-1/top-5 accuracy and per-class recall on an ImageFolder directory or a path,label CSV.",
    )
    zeroshot.add_argument(
        "--data", type=Path, required=True, help="class-named sub-folders, or a CSV (path,label)"
    )
    zeroshot.add_argument(
        "--classnames",
        help="'imagenet' (open_clip's 1000 names, in sorted folder order), a file with one name per line, "
        "or omit to use the folder/label names",
    )
    zeroshot.add_argument(
        "--templates",
        default="a photo of a {}.",
        help="'openai-imagenet' (80 prompts), 'simple-imagenet', a file with one template per line, or one "
        "template with {} (default: 'a photo of a {}.')",
    )
    retrieval = kinds.add_parser(
        "retrieval",
        help="image<->text retrieval recall@1/5/10",
        description="Recall@1/5/10 both ways on image-caption pairs: COCO/Karpathy-style JSON, a list of "
        "{image, captions}, or a CSV (image,caption) with several rows per image.",
    )
    retrieval.add_argument("--data", type=Path, required=True, help="the captions file")
    for parser in (zeroshot, retrieval):
        parser.add_argument("--out", type=Path, help="write the results as JSON here")
        parser.add_argument("--url", help="evaluate a running server (e.g. http://127.0.0.1:8000) instead")
        parser.add_argument("--api-key", help="bearer key for --url")
        parser.add_argument("--batch-size", type=int, default=64, help="items per model call or HTTP request")
        add_settings_arguments(parser, only=MODEL_SETTINGS)
        parser.set_defaults(handler=run_eval)


def _embedder(settings: Settings, args: argparse.Namespace) -> Embedder | None:
    if args.url:
        return RemoteEmbedder(args.url, args.api_key, args.batch_size)
    from clipserve.cli import load_runtime

    runtime = load_runtime(settings)
    if runtime is None:
        return None
    return LocalEmbedder(runtime, args.batch_size, settings.decode_workers, settings.max_image_pixels)


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.eval_kind == "zeroshot":
            dataset = load_zeroshot(args.data)
            classnames = load_classnames(args.classnames, dataset.class_keys)
            templates = load_templates(args.templates)
            embedder = _embedder(settings, args)
            if embedder is None:
                return 2
            report: Any = evaluate_zeroshot(dataset, classnames, templates, embedder)
        else:
            retrieval_data = load_retrieval(args.data)
            embedder = _embedder(settings, args)
            if embedder is None:
                return 2
            report = evaluate_retrieval(retrieval_data, embedder)
    except (DatasetError, InvalidRequestError, RemoteEmbeddingError, OSError) as exc:
        print(f"clipserve: error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    print(report.table())
    if args.out:
        args.out.write_text(json.dumps(report.as_dict(), indent=2))
        print(f"wrote {args.out}")
    return 0
