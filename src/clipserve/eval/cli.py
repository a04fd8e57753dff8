"""`clipserve eval zeroshot|retrieval`: run the evaluation locally (the server's runtime) or against --url."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clipserve.config import Settings


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


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    from clipserve.eval.run import run_eval as run

    return run(settings, args)
