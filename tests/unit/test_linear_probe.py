"""The linear-probe trainer: scikit-learn parity, the zero-shot prior, stratified folds, choosing C, warm start."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import softmax as scipy_softmax
from sklearn.linear_model import LogisticRegression

from clipserve.service.linear_probe import (
    Prior,
    TrainOptions,
    fit,
    predict_proba,
    stratified_folds,
)

TIGHT = TrainOptions(max_iter=20_000, gtol=1e-10)
# Both solvers run to gradient tolerance 1e-10; measured differences are <= 2.7e-7, so 1e-6 leaves room.
PROBABILITY_TOLERANCE = 1e-6


def embeddings(
    n_classes: int, per_class: int, dim: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised rows around one random centre per class (noise large enough that classes overlap)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = np.arange(n_classes * per_class) % n_classes
    X = centres[y] + noise * rng.normal(size=(len(y), dim))
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


def full_gradient(
    X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, C: float, W0: np.ndarray
) -> np.ndarray:
    """d/d(W, b) of C * sum CE + 1/2 ||W - W0||^2 + 1/2 ||b||^2, written out here independently."""
    Y = np.eye(W.shape[0])[y]
    residual = scipy_softmax(X @ W.T + b, axis=1) - Y
    return np.concatenate([(C * residual.T @ X + (W - W0)).ravel(), C * residual.sum(axis=0) + b])


@pytest.mark.parametrize("n_classes", [2, 3, 10])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
@pytest.mark.parametrize(("dim", "noise"), [(512, 3.0), (16, 2.0)])  # separable CLIP-sized; overlapping
def test_trainer_matches_scikit_learn_logistic_regression(
    n_classes: int, C: float, dim: int, noise: float
) -> None:
    X, y = embeddings(n_classes, 12, dim, noise, seed=n_classes)
    probe = fit(X, y, n_classes, prior=None, C=C, options=TIGHT)
    # scikit-learn >= 1.8 fits two classes as one binomial model; the symmetric multinomial optimum has
    # w1 = -w0, so its penalty is 1/4 ||w1 - w0||^2: exactly the binomial objective at 2C.
    reference = LogisticRegression(C=2 * C if n_classes == 2 else C, tol=1e-10, max_iter=100_000).fit(X, y)
    expected = reference.predict_proba(X)
    X_new, _ = embeddings(n_classes, 5, dim, noise, seed=100 + n_classes)
    got = predict_proba(probe, X)

    assert np.abs(got - expected).max() <= PROBABILITY_TOLERANCE
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(predict_proba(probe, X_new) - reference.predict_proba(X_new)).max() <= PROBABILITY_TOLERANCE
    if n_classes == 2:
        coef = (probe.weights[1] - probe.weights[0])[None, :]
        intercept = np.array([probe.bias[1] - probe.bias[0]])
    else:
        coef, intercept = probe.weights, probe.bias
    scale = np.abs(reference.coef_).max()
    assert np.abs(coef - reference.coef_).max() <= 1e-5 * max(scale, 1.0)
    assert np.abs(intercept - reference.intercept_).max() <= 1e-5 * max(scale, 1.0)
    assert probe.train_accuracy == pytest.approx(float((reference.predict(X) == y).mean()))


def test_prior_without_examples_is_the_prior_itself() -> None:
    rng = np.random.default_rng(1)
    W0 = 100.0 * rng.normal(size=(4, 512)) / np.sqrt(512)
    probe = fit(
        np.zeros((0, 512)), np.zeros(0, dtype=int), 4, prior=Prior(W0), C=None, options=TrainOptions()
    )
    X, _ = embeddings(4, 3, 512, 1.0, seed=2)

    assert np.array_equal(probe.weights, W0)
    assert np.array_equal(probe.bias, np.zeros(4))
    assert probe.cv_accuracy is None
    assert probe.train_accuracy is None
    assert probe.iterations == 0
    assert np.abs(predict_proba(probe, X) - scipy_softmax(X @ W0.T, axis=1)).max() <= 1e-12


def test_no_prior_and_no_examples_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one example"):
        fit(np.zeros((0, 8)), np.zeros(0, dtype=int), 2, prior=None, C=1.0, options=TrainOptions())


@pytest.mark.parametrize("C", [0.1, 10.0, 1000.0])
def test_prior_with_examples_satisfies_the_optimality_condition(C: float) -> None:
    X, y = embeddings(3, 6, 32, 2.0, seed=3)
    W0 = 20.0 * np.random.default_rng(4).normal(size=(3, 32)) / np.sqrt(32)
    probe = fit(X, y, 3, prior=Prior(W0), C=C, options=TIGHT)
    gradient = full_gradient(X, y, probe.weights, probe.bias, C, W0)
    # The objective's own scale is C * n: relative to it the gradient vanishes.
    assert np.abs(gradient).max() <= 1e-7 * C * len(y)
    # and the examples did move it: the prior itself is not optimal.
    assert np.abs(full_gradient(X, y, W0, np.zeros(3), C, W0)).max() > 1e-2 * C


def test_prior_fit_approaches_the_no_prior_fit_as_C_grows() -> None:
    X, y = embeddings(3, 20, 8, 2.5, seed=5)  # overlapping classes: the unregularised optimum is finite
    W0 = 30.0 * np.random.default_rng(6).normal(size=(3, 8)) / np.sqrt(8)
    distances = []
    for C in (0.01, 1.0, 100.0, 1e4, 1e6):
        with_prior = fit(X, y, 3, prior=Prior(W0), C=C, options=TIGHT)
        without = fit(X, y, 3, prior=None, C=C, options=TIGHT)
        distances.append(np.abs(predict_proba(with_prior, X) - predict_proba(without, X)).max())
    # At small C each fit sits near its own centre (W0, or 0), far apart; from C = 1 on they converge.
    assert distances[0] > 0.1
    assert distances[1] > 0.1
    assert all(a > b for a, b in itertools.pairwise(distances[1:])), distances
    assert distances[-1] < 1e-4


def test_stratified_folds_put_every_class_in_every_fold() -> None:
    y = np.array([0] * 7 + [1] * 5 + [2] * 3 + [3] * 9)
    np.random.default_rng(7).shuffle(y)
    folds = stratified_folds(y, 3, seed=11)

    assert len(folds) == 3
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(len(y)))  # a partition
    for train, test in folds:
        assert set(y[test]) == {0, 1, 2, 3}
        assert set(y[train]) == {0, 1, 2, 3}
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1
    # each class is split as evenly as it can be
    for label, count in zip((0, 1, 2, 3), (7, 5, 3, 9), strict=True):
        per_fold = [int((y[test] == label).sum()) for _, test in folds]
        assert max(per_fold) - min(per_fold) <= 1
        assert sum(per_fold) == count


def test_stratified_folds_are_seeded_and_deterministic() -> None:
    y = np.arange(40) % 4
    first = stratified_folds(y, 5, seed=3)
    again = stratified_folds(y, 5, seed=3)
    other = stratified_folds(y, 5, seed=4)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("noise", [2.0, 0.3])  # overlapping: accuracies differ; separated: several tie at 1.0
def test_cv_picks_the_grid_C_with_the_best_accuracy(noise: float) -> None:
    X, y = embeddings(3, 8, 16, noise, seed=8)
    options = TrainOptions(c_grid=(1e-3, 1e-1, 10.0, 1e3), cv_folds=4, seed=5, max_iter=5000, gtol=1e-9)
    probe = fit(X, y, 3, prior=None, C=None, options=options)

    # The same folds, each C fitted by scikit-learn: accuracy, then log-loss, then the smaller C.
    folds = stratified_folds(y, 4, seed=5)
    table = {}
    for C in options.c_grid:
        accuracies, losses = [], []
        for train, test in folds:
            model = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(X[train], y[train])
            p = model.predict_proba(X[test])
            accuracies.append(float((p.argmax(axis=1) == y[test]).mean()))
            losses.append(float(-np.log(p[np.arange(len(test)), y[test]]).mean()))
        table[C] = (float(np.mean(accuracies)), float(np.mean(losses)))
    best = min(options.c_grid, key=lambda C: (-round(table[C][0], 9), table[C][1], C))
    accuracies = [round(a, 9) for a, _ in table.values()]
    if noise > 1:
        assert len(set(accuracies)) > 1, table  # the grid leaves something to choose
    else:
        assert accuracies.count(max(accuracies)) > 1, table  # the tie-break decides
        assert best != min(C for C in options.c_grid if round(table[C][0], 9) == max(accuracies))  # log-loss

    assert best == probe.C
    assert probe.cv_accuracy == pytest.approx(table[best][0])
    assert probe.cv_scores == pytest.approx({C: a for C, (a, _) in table.items()})
    refit = fit(X, y, 3, prior=None, C=best, options=options)
    assert np.abs(predict_proba(probe, X) - predict_proba(refit, X)).max() <= 1e-6


def test_cv_accuracy_is_null_when_a_class_has_fewer_than_two_examples() -> None:
    X, y = embeddings(3, 4, 16, 1.0, seed=9)
    keep = [*np.flatnonzero(y != 1)[:6].tolist(), int(np.flatnonzero(y == 1)[0])]  # class 1: one example
    options = TrainOptions(default_c=7.0)
    probe = fit(X[keep], y[keep], 3, prior=None, C=None, options=options)
    assert probe.cv_accuracy is None
    assert probe.C == 7.0
    assert probe.train_accuracy is not None
    with_two = fit(X[: 3 * 2], y[: 3 * 2], 3, prior=None, C=None, options=options)
    assert with_two.cv_accuracy is not None


def test_beyond_the_cv_budget_a_training_is_one_fit_at_the_default_c() -> None:
    X, y = embeddings(3, 10, 16, 1.0, seed=11)  # 30 examples x 3 classes = 90 units of work
    within = fit(X, y, 3, prior=None, C=None, options=TrainOptions(default_c=7.0, cv_max_work=90))
    assert within.cv_accuracy is not None
    assert len(within.cv_scores) == len(TrainOptions().c_grid)
    beyond = fit(X, y, 3, prior=None, C=None, options=TrainOptions(default_c=7.0, cv_max_work=89))
    assert (beyond.C, beyond.cv_accuracy, beyond.cv_scores) == (7.0, None, {})


def test_warm_start_reaches_the_same_optimum_in_fewer_iterations() -> None:
    X, y = embeddings(5, 30, 512, 1.0, seed=10)  # 140 examples, then 10 more (an online add)
    options = TrainOptions(max_iter=5000, gtol=1e-9)
    before = fit(X[:140], y[:140], 5, prior=None, C=10.0, options=options)
    cold = fit(X, y, 5, prior=None, C=10.0, options=options)
    warm = fit(X, y, 5, prior=None, C=10.0, options=options, start=(before.weights, before.bias))

    assert np.abs(predict_proba(warm, X) - predict_proba(cold, X)).max() <= 1e-6
    # Measured: 24 warm vs 39 cold (L-BFGS rebuilds its curvature memory, so the saving is not larger).
    assert warm.iterations < 0.75 * cold.iterations, (warm.iterations, cold.iterations)
