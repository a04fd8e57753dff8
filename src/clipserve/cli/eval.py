"""`clipserve eval zeroshot|retrieval|linear-probe`: run the evaluation locally (the server's runtime) or against --url."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clipserve.cli.settings_args import MODEL_SETTINGS, add_settings_arguments
from clipserve.config import Settings


def add_eval_commands(commands: Any) -> None:
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
    linear_probe = kinds.add_parser(
        "linear-probe",
        help="linear-probe (logistic regression) accuracy",
        description="CLIP_benchmark's linear-probe protocol: features of --train and --test (ImageFolder), "
        "C chosen on a stratified 80/20 validation split of --train, refit on all of --train, top-1/top-5 and "
        "per-class accuracy on --test.",
    )
    linear_probe.add_argument("--train", type=Path, required=True, help="class-named sub-folders")
    linear_probe.add_argument("--test", type=Path, required=True, help="the same class sub-folders")
    linear_probe.add_argument(
        "--c-grid",
        default="0.01,0.1,1,10,100,1000",
        help="comma-separated inverse regularisation strengths to choose from (default: the service's grid)",
    )
    linear_probe.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per fit")
    linear_probe.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    linear_probe.add_argument(
        "--zero-shot-prior",
        action="store_true",
        help="regularise toward the zero-shot classifier of the class names (off: published numbers have none)",
    )
    linear_probe.add_argument(
        "--classnames", help="with --zero-shot-prior: as for zeroshot ('imagenet', a file, or folder names)"
    )
    linear_probe.add_argument(
        "--templates", default="a photo of a {}.", help="with --zero-shot-prior: as for zeroshot"
    )
    linear_probe.add_argument(
        "--logit-scale",
        type=float,
        help="with --zero-shot-prior and --url: the model's logit scale (default: the local model's, or 100)",
    )
    for parser in (zeroshot, retrieval, linear_probe):
        parser.add_argument("--out", type=Path, help="write the results as JSON here")
        parser.add_argument("--url", help="evaluate a running server (e.g. http://127.0.0.1:8000) instead")
        parser.add_argument("--api-key", help="bearer key for --url")
        parser.add_argument("--batch-size", type=int, default=64, help="items per model call or HTTP request")
        add_settings_arguments(parser, only=MODEL_SETTINGS)
        parser.set_defaults(handler=run_eval)


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    from clipserve.eval.run import run_eval as run

    return run(settings, args)
