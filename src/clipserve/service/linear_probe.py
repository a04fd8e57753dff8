"""Multinomial logistic regression on CLIP features (a linear probe), optionally regularised toward a prior.

Objective, minimised over W (K x d) and b (K) with L-BFGS-B and the analytic gradient:

    C * sum_i CE(x_i W^T + b, y_i) + 1/2 ||W - W0||^2  (+ 1/2 ||b||^2 when a prior is used)

Without a prior W0 = 0 and b is unpenalised: scikit-learn's LogisticRegression(penalty="l2", C=C, multinomial,
fit_intercept=True) objective. With a prior (W0 = logit_scale * the zero-shot text classifier) this is MAP
estimation with a Gaussian prior centred on the prior model (Chelba & Acero 2006; CLAP, CVPR 2024): with no
examples the answer is exactly W0, b = 0, i.e. zero-shot. The objective is divided by C * n (as scikit-learn
does) so the gradient tolerance means the same thing for every C and example count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

DEFAULT_C_GRID = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)


@dataclass(frozen=True)
class Prior:
    """The weights the probe is pulled toward (K x d); its bias is 0 and is penalised toward 0."""

    weights: np.ndarray


@dataclass(frozen=True)
class TrainOptions:
    max_iter: int = 300
    cv_folds: int = 5
    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    default_c: float = 10.0  # when some class has < 2 examples there is nothing to cross-validate with
    # Cross-validation costs len(c_grid) * folds + 1 fits; beyond this many examples x classes one fit at
    # default_c is all a training does, so its CPU stays bounded whatever the examples cost (text is cheap).
    cv_max_work: int = 20_000
    gtol: float = 1e-6  # on the gradient of the objective divided by C * n
    seed: int = 0


@dataclass(frozen=True)
class FittedProbe:
    weights: np.ndarray  # K x d, float64
    bias: np.ndarray  # K, float64
    C: float
    train_accuracy: float | None  # None with no examples
    cv_accuracy: float | None  # None when C was given or some class has < 2 examples
    iterations: int  # L-BFGS iterations of the final fit (0 when no optimisation was needed)
    cv_scores: dict[float, float] = field(default_factory=dict)  # mean CV accuracy per grid C


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


def predict_proba(probe: FittedProbe, X: np.ndarray) -> np.ndarray:
    """softmax(X W^T + b), one row per input."""
    return softmax(np.asarray(X, dtype=np.float64) @ probe.weights.T + probe.bias)


def objective(
    theta: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    C: float,
    W0: np.ndarray,
    penalise_bias: bool,
) -> tuple[float, np.ndarray]:
    """The objective divided by C * n and its gradient; theta is W (row-major) then b."""
    n, d = X.shape
    k = Y.shape[1]
    W = theta[: k * d].reshape(k, d)
    b = theta[k * d :]
    logits = X @ W.T + b
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    data = float(log_norm.sum() - (logits * Y).sum())
    scale = 1.0 / (C * n)
    delta = W - W0
    value = data / n + 0.5 * scale * float((delta * delta).sum())
    residual = (np.exp(logits - log_norm[:, None]) - Y) / n
    grad_w = residual.T @ X + scale * delta
    grad_b = residual.sum(axis=0)
    if penalise_bias:
        value += 0.5 * scale * float(b @ b)
        grad_b = grad_b + scale * b
    return value, np.concatenate([grad_w.ravel(), grad_b])


def _one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    Y = np.zeros((len(y), n_classes))
    Y[np.arange(len(y)), y] = 1.0
    return Y


def _minimise(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    C: float,
    prior: Prior | None,
    options: TrainOptions,
    start: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    d = X.shape[1]
    W0 = np.zeros((n_classes, d)) if prior is None else np.asarray(prior.weights, dtype=np.float64)
    if len(y) == 0:
        return W0.copy(), np.zeros(n_classes), 0
    # Without a prior, a class with no example would drive its unpenalised bias to -inf: penalise it then.
    penalise_bias = prior is not None or bool((np.bincount(y, minlength=n_classes) == 0).any())
    if start is not None:
        theta0 = np.concatenate([np.asarray(start[0], np.float64).ravel(), np.asarray(start[1], np.float64)])
    else:
        theta0 = np.concatenate([W0.ravel(), np.zeros(n_classes)])
    result = minimize(
        objective,
        theta0,
        args=(X, _one_hot(y, n_classes), C, W0, penalise_bias),
        method="L-BFGS-B",
        jac=True,
        options={"maxiter": options.max_iter, "gtol": options.gtol, "ftol": 64 * np.finfo(float).eps},
    )
    W = result.x[: n_classes * d].reshape(n_classes, d)
    b = result.x[n_classes * d :]
    if not penalise_bias:
        b = b - b.mean()  # softmax is shift-invariant; the unpenalised bias is only defined up to a constant
    return W, b, int(result.nit)


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, test) index splits; each class's examples are shuffled (seeded) and dealt round-robin.

    A class with >= k examples lands in every fold; dealing continues across classes, so fold sizes differ
    by at most one.
    """
    if k < 2:
        raise ValueError("stratified_folds needs k >= 2")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(y), dtype=np.int64)
    offset = 0
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        assignment[members] = (offset + np.arange(len(members))) % k
        offset += len(members)
    return [(np.flatnonzero(assignment != f), np.flatnonzero(assignment == f)) for f in range(k)]


def _log_loss(probabilities: np.ndarray, y: np.ndarray) -> float:
    picked = probabilities[np.arange(len(y)), y]
    return float(-np.log(np.clip(picked, 1e-300, None)).mean())


def choose_c(
    X: np.ndarray, y: np.ndarray, n_classes: int, prior: Prior | None, options: TrainOptions
) -> tuple[float, float | None, dict[float, float]]:
    """(C, its mean CV accuracy, accuracy per grid C); (default_c, None, {}) when a class has < 2 examples or
    the examples x classes exceed options.cv_max_work."""
    counts = np.bincount(y, minlength=n_classes)
    smallest = int(counts.min()) if len(counts) else 0
    if smallest < 2 or options.cv_folds < 2 or len(y) * n_classes > options.cv_max_work:
        return options.default_c, None, {}
    folds = stratified_folds(y, min(options.cv_folds, smallest), options.seed)
    scores: dict[float, tuple[float, float]] = {}
    starts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(folds)
    for C in sorted(options.c_grid):  # ascending: each fold's fit warm-starts from the smaller C's
        accuracies, losses = [], []
        for f, (train, test) in enumerate(folds):
            W, b, _ = _minimise(X[train], y[train], n_classes, C, prior, options, starts[f])
            starts[f] = (W, b)
            probabilities = softmax(X[test] @ W.T + b)
            accuracies.append(float((probabilities.argmax(axis=1) == y[test]).mean()))
            losses.append(_log_loss(probabilities, y[test]))
        scores[C] = (float(np.mean(accuracies)), float(np.mean(losses)))
    # Best accuracy; ties (within float noise) by smaller log-loss, then by smaller C.
    best_accuracy = max(accuracy for accuracy, _ in scores.values())
    tied = [C for C, (accuracy, _) in scores.items() if accuracy >= best_accuracy - 1e-12]
    best = min(tied, key=lambda C: (scores[C][1], C))
    return best, scores[best][0], {C: accuracy for C, (accuracy, _) in scores.items()}


def fit(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    prior: Prior | None,
    C: float | None,
    options: TrainOptions,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> FittedProbe:
    """Train the probe; C=None chooses C by stratified CV over options.c_grid (see choose_c).

    X: n x d float rows (L2-normalised embeddings), y: n ints in 0..n_classes-1. start=(W, b) warm-starts the
    final fit (an online add). With no examples a prior is required and the answer is the prior itself.
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(y), -1) if len(y) else np.asarray(X, np.float64)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0 and prior is None:
        raise ValueError("a probe without a prior needs at least one example")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError("labels must lie in 0..n_classes-1")
    if C is not None and C <= 0:
        raise ValueError("C must be positive")
    cv_accuracy: float | None = None
    cv_scores: dict[float, float] = {}
    # One BLAS thread: these matrices are small, and threaded OpenBLAS (numpy's and scipy's, whose L-BFGS-B
    # calls it on every step) spends ~20x the CPU spinning (bench/classifier_training.py). The limit is
    # process-wide while it lasts: other numpy work in the process runs single-threaded meanwhile.
    with threadpool_limits(limits=1, user_api="blas"):
        if C is None:
            C, cv_accuracy, cv_scores = choose_c(X, y, n_classes, prior, options)
        W, b, iterations = _minimise(X, y, n_classes, C, prior, options, start)
    train_accuracy = float((softmax(X @ W.T + b).argmax(axis=1) == y).mean()) if len(y) else None
    return FittedProbe(W, b, float(C), train_accuracy, cv_accuracy, iterations, cv_scores)
