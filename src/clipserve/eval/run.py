"""What `clipserve eval` runs (imported only when it runs: it pulls in torch and open_clip)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clipserve.config import Settings
from clipserve.errors import InvalidRequestError, WeightsUnavailableError
from clipserve.eval.datasets import (
    DatasetError,
    load_classnames,
    load_retrieval,
    load_templates,
    load_zeroshot,
)
from clipserve.eval.embedders import Embedder, LocalEmbedder, RemoteEmbedder, RemoteEmbeddingError
from clipserve.eval.linear_probe import ZeroShotPrior, evaluate_linear_probe
from clipserve.eval.retrieval import evaluate_retrieval
from clipserve.eval.zeroshot import evaluate_zeroshot
from clipserve.service.linear_probe import TrainOptions


def _embedder(settings: Settings, args: argparse.Namespace) -> Embedder | None:
    loaded = _embedder_and_logit_scale(settings, args)
    return None if loaded is None else loaded[0]


def _embedder_and_logit_scale(
    settings: Settings, args: argparse.Namespace
) -> tuple[Embedder, float | None] | None:
    if args.url:
        return RemoteEmbedder(args.url, args.api_key, args.batch_size), None
    from clipserve.runtime.loader import runtime_from_settings  # torch and open_clip: only when it runs

    try:
        runtime = runtime_from_settings(settings)
    except (WeightsUnavailableError, RuntimeError) as exc:
        print(f"clipserve: error: {exc}", file=sys.stderr)
        return None
    embedder = LocalEmbedder(runtime, args.batch_size, settings.decode_workers, settings.max_image_pixels)
    return embedder, runtime.logit_scale


def _linear_probe(settings: Settings, args: argparse.Namespace) -> Any:
    train, test = load_zeroshot(args.train), load_zeroshot(args.test)
    try:
        grid = tuple(float(c) for c in args.c_grid.split(","))
    except ValueError as exc:
        raise DatasetError(f"--c-grid: {exc}") from exc
    if not grid or min(grid) <= 0:
        raise DatasetError("--c-grid needs positive numbers")
    options = TrainOptions(max_iter=args.max_iter, c_grid=grid, seed=args.seed)
    prior_names = load_classnames(args.classnames, train.class_keys) if args.zero_shot_prior else None
    templates = load_templates(args.templates) if args.zero_shot_prior else []
    loaded = _embedder_and_logit_scale(settings, args)
    if loaded is None:
        return None
    embedder, logit_scale = loaded
    prior = None
    if prior_names is not None:
        scale = args.logit_scale or logit_scale or 100.0  # 100: CLIP's trained (clamped) value
        prior = ZeroShotPrior(prior_names, templates, scale)
    return evaluate_linear_probe(train, test, embedder, options, prior)


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.eval_kind == "linear-probe":
            report: Any = _linear_probe(settings, args)
            if report is None:
                return 2
        elif args.eval_kind == "zeroshot":
            dataset = load_zeroshot(args.data)
            classnames = load_classnames(args.classnames, dataset.class_keys)
            templates = load_templates(args.templates)
            embedder = _embedder(settings, args)
            if embedder is None:
                return 2
            report = evaluate_zeroshot(dataset, classnames, templates, embedder)
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
