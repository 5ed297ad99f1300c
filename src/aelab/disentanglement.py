"""Disentanglement metrics: how well separate code dimensions capture separate ground-truth factors of variation.

    mig          Mutual Information Gap (Chen et al., 2018): per factor, the gap between the two code dimensions
                 that share the most information with it, over the factor's entropy; averaged over factors
    dci          DCI (Eastwood & Williams, 2018) from the feature importances of one gradient-boosted classifier per
                 factor: disentanglement (each dimension matters for one factor), completeness (each factor is
                 captured by one dimension), informativeness (the classifiers' test accuracy)
    sap          SAP (Kumar et al., 2018): per factor, the gap between the two best single-dimension classifiers'
                 accuracies; averaged over factors
    factorvae    FactorVAE score (Kim & Mnih, 2018): fix one factor, vary the others, and the dimension of least
                 (normalised) variance should name the factor; the score is the accuracy of a majority-vote
                 classifier from that dimension to the factor

Codes are real [N, D]; factors are integer class indices [N, K]. scikit-learn provides the classifiers and the
mutual information; everything is seeded, so the same inputs give the same scores. The scores do not change when
code dimensions are permuted or rescaled (MIG and SAP discretise or threshold each dimension on its own scale; the
trees of DCI split on order only; the FactorVAE score normalises each dimension by its spread).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

BINS = 20  # equal-width bins per code dimension for the mutual information (Locatello et al., 2019)


def _discretize(codes: np.ndarray, bins: int = BINS) -> np.ndarray:
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def mutual_information(codes: np.ndarray, factors: np.ndarray, bins: int = BINS) -> np.ndarray:
    """[D, K] mutual information in nats between each discretised code dimension and each factor."""
    from sklearn.metrics import mutual_info_score

    discrete = _discretize(codes, bins)
    return np.array([[mutual_info_score(factors[:, k], discrete[:, j]) for k in range(factors.shape[1])]
                     for j in range(discrete.shape[1])])


def entropy(factors: np.ndarray) -> np.ndarray:
    """[K] entropy in nats of each factor's empirical distribution."""
    from sklearn.metrics import mutual_info_score

    return np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = BINS) -> float:
    mi = mutual_information(codes, factors, bins)
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    h = entropy(factors)
    keep = h > 0  # a constant factor carries no information to share
    return float(np.mean((top[0] - second)[keep] / h[keep])) if keep.any() else 0.0


def _split(n: int, seed: int, train_fraction: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(train_fraction * n))
    return order[:cut], order[cut:]


def dci(codes: np.ndarray, factors: np.ndarray, seed: int = 0) -> dict[str, float]:
    """{"disentanglement", "completeness", "informativeness"} from one gradient-boosted tree classifier per factor
    (importances R [D, K]), trained on 80 % of the examples, scored on the rest."""
    from sklearn.ensemble import GradientBoostingClassifier

    train, test = _split(len(codes), seed)
    d, k = codes.shape[1], factors.shape[1]
    importance, accuracy = np.zeros((d, k)), []
    for f in range(k):
        if len(np.unique(factors[train, f])) < 2:
            accuracy.append(1.0)  # a constant factor: nothing to predict
            continue
        model = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=seed)
        model.fit(codes[train], factors[train, f])
        importance[:, f] = np.abs(model.feature_importances_)
        accuracy.append(float(model.score(codes[test], factors[test, f])))

    def one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        h = -(p * np.log(np.maximum(p, 1e-12))).sum(axis=1) / np.log(base)
        return 1 - h

    total = importance.sum()
    if total <= 0 or d < 2 or k < 2:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(np.mean(accuracy))}
    weight = importance.sum(axis=1) / total
    disentanglement = float((one_minus_entropy(importance, k) * weight).sum())
    factor_weight = importance.sum(axis=0) / total
    completeness = float((one_minus_entropy(importance.T, d) * factor_weight).sum())
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness": float(np.mean(accuracy))}


def sap(codes: np.ndarray, factors: np.ndarray, seed: int = 0) -> float:
    """Per factor and code dimension, the test accuracy of a depth-limited tree on that one dimension (a few
    thresholds, as SAP's single-feature classifiers); the mean over factors of the best-minus-second gap."""
    from sklearn.tree import DecisionTreeClassifier

    train, test = _split(len(codes), seed)
    gaps = []
    for f in range(factors.shape[1]):
        if len(np.unique(factors[train, f])) < 2:
            continue
        scores = []
        for j in range(codes.shape[1]):
            tree = DecisionTreeClassifier(max_leaf_nodes=max(2, len(np.unique(factors[:, f]))), random_state=seed)
            tree.fit(codes[train, j:j + 1], factors[train, f])
            scores.append(tree.score(codes[test, j:j + 1], factors[test, f]))
        top = np.sort(scores)[::-1]
        gaps.append(top[0] - (top[1] if len(top) > 1 else 0.0))
    return float(np.mean(gaps)) if gaps else 0.0


def factorvae_score(codes_of: Callable[[np.ndarray], np.ndarray], factor_sizes: tuple[int, ...], seed: int = 0,
                    batch: int = 64, train_votes: int = 500, eval_votes: int = 250,
                    scale_examples: int = 2000) -> float:
    """Kim & Mnih's score: `codes_of(factors [n, K]) -> codes [n, D]` encodes the images of those factor values
    (rendered or looked up). Each vote fixes one factor at a random value, draws `batch` examples with the other
    factors random, and votes (argmin of the per-dimension variance of the codes divided by their overall spread,
    the factor); the majority vote per dimension classifies, and its accuracy on fresh votes is the score. Dimensions
    that barely vary over the data (collapsed) are left out, as in the paper."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(factor_sizes)

    def draw(n: int) -> np.ndarray:
        return (rng.random((n, len(sizes))) * sizes).astype(np.int64)

    spread = codes_of(draw(scale_examples)).std(axis=0)
    active = spread > 0.05 * spread.max() if spread.max() > 0 else np.zeros_like(spread, dtype=bool)
    if not active.any():
        return 0.0
    varying = [k for k, s in enumerate(sizes) if s > 1]

    def votes(n: int) -> list[tuple[int, int]]:
        out = []
        for _ in range(n):
            k = varying[rng.integers(len(varying))]
            fixed = draw(batch)
            fixed[:, k] = rng.integers(sizes[k])
            var = (codes_of(fixed) / np.where(spread > 0, spread, 1)).var(axis=0)
            var[~active] = np.inf
            out.append((int(np.argmin(var)), k))
        return out

    table = np.zeros((len(spread), len(sizes)), dtype=np.int64)
    for dim, k in votes(train_votes):
        table[dim, k] += 1
    guess = table.argmax(axis=1)
    return float(np.mean([guess[dim] == k for dim, k in votes(eval_votes)]))
