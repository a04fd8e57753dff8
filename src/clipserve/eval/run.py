"""What `clipserve eval` runs (imported only when it runs: it pulls in torch and open_clip)."""

from __future__ import annotations

import argparse
import json
import sys
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
