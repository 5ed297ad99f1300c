"""Embeddings as features: linear and k-NN probes on frozen codes at several label budgets.

Pure functions on tensors (float32 features [N, D], int64 labels [N]); the work runs on the tensors' device, only
the seeded draws use a CPU generator so that CPU and GPU pick the same examples. `probe_all` scores the model's code
(feature set "") and baselines (PCA codes of the same size, raw pixels) on the same label budgets.

Most of the cost on MNIST is the raw pixels' linear probe on all labels (l2 chosen on a subset, see linear_probe) and
their k-NN (10k x 54k x 784 products); README states the measured time.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from aelab.baselines import fit_pca
from aelab.errors import check

METRICS = ("cosine", "euclidean")
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SELECT_MAX = 10_000  # l2 selection on at most this many train examples (see linear_probe)
SMALL = 1 << 20  # N * D below which a CPU fit runs on one thread (see fit_logistic)

Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _check_labels(y: torch.Tensor, num_classes: int, name: str, every_class: bool = False) -> None:
    check(len(y) > 0, f"{name}: no examples; a probe needs at least one")
    low, high = int(y.min()), int(y.max())
    check(0 <= low and high < num_classes, f"{name}: labels span {low}..{high}, allowed 0..{num_classes - 1}")
    if every_class:  # a class without a training example could never be predicted: the probe would be biased
        missing = (torch.bincount(y, minlength=num_classes) == 0).nonzero().flatten().tolist()
        check(not missing, f"{name}: class {missing[0] if missing else ''} has no examples; every class in "
                           f"0..{num_classes - 1} needs at least one")


def _draw(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`size` of range(n) without replacement, sorted (contiguous-ish gathers)."""
    return torch.randperm(n, generator=generator)[:size].sort().values


def balanced_subset(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of `per_class` examples of each class present in `labels` (all of a class that has fewer;
    all examples when None), drawn with a CPU generator seeded once, classes in ascending order: the same seed
    gives the same indices on any device. Returned on the labels' device."""
    check(per_class is None or (isinstance(per_class, int) and per_class >= 1),
          f"per_class={per_class!r}: allowed a positive integer (examples per class) or None (all examples)")
    if per_class is None:
        return torch.arange(len(labels), device=labels.device)
    check(len(labels) > 0, "labels: empty; balanced_subset needs at least one example")
    cpu = labels.detach().cpu()
    generator = torch.Generator().manual_seed(int(seed))
    picks = []
    for c in torch.unique(cpu).tolist():
        members = (cpu == c).nonzero().flatten()
        picks.append(members[_draw(len(members), per_class, generator)])
    return torch.cat(picks).sort().values.to(labels.device)


def standardize(train: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, ...]:
    """Centre with the train mean and divide by one scale for the whole feature set: the root mean square of the
    features' train std (>= eps). One scale, not one per feature, keeps the geometry of the code, so the probe does
    not depend on the basis a code is written in: z-scoring each PCA component would whiten it, blowing its
    low-variance components up to the size of the leading ones, and with 10 labels per class the L2-penalised
    classifier then fits those instead (PCA scored far below the raw pixels it nearly spans)."""
    train = train.float()
    mean = train.mean(0)
    scale = train.std(0, correction=0).square().mean().sqrt().clamp_min(eps)
    return tuple((x.float() - mean) / scale for x in (train, *others))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 200,
                 tol: float = 1e-6, init: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: minimises mean cross-entropy + l2/2 * ||W||^2 (b unpenalised) with
    full-batch L-BFGS (strong Wolfe line search, history 10) in float32, from zeros or from `init` = (W, b), a warm
    start. Returns W [D, C] and b [C]. Stops after `max_iter` iterations, when the largest gradient entry is <= tol,
    or when one iteration changes the loss or every parameter by less than tol (L-BFGS's tolerance_change). In
    float32 the gradient of a mean over many examples bottoms out near 1e-5, so a tol far below that runs max_iter.
    Deterministic: no randomness, full batch."""
    check(l2 >= 0, f"l2={l2}: allowed >= 0")
    check(max_iter >= 1, f"max_iter={max_iter}: allowed >= 1")
    x, y = x.detach().float(), y.detach().long()
    if init is None:
        init = (torch.zeros(x.shape[1], num_classes, device=x.device), torch.zeros(num_classes, device=x.device))
    # W is optimised as [C, D]: its gradient g.T @ x comes out contiguous (L-BFGS views it flat)
    w = init[0].detach().T.float().clone(memory_format=torch.contiguous_format)
    b = init[1].detach().float().clone()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol,
                            history_size=10, line_search_fn="strong_wolfe")

    onehot = F.one_hot(y, num_classes).float()

    @torch.no_grad()
    def closure() -> torch.Tensor:
        # gradients by hand: autograd forms x.T @ g, which MKL runs ~3x slower than g.T @ x for tall x
        logits = F.linear(x, w, b)
        logp = logits.log_softmax(1)
        loss = -(logp * onehot).sum() / len(x) + 0.5 * l2 * w.square().sum()
        g = (logp.exp_() - onehot) / len(x)
        w.grad = g.T @ x + l2 * w
        b.grad = g.sum(0)
        return loss

    # L-BFGS on a small problem is a long chain of tiny ops: on CPU, OpenMP's hand-offs between threads cost more
    # than the ops (a 100 x 32 fit over the l2 grid took 2.6 s on 2 busy cores, 0.1 s on one)
    threads = torch.get_num_threads()
    if x.device.type == "cpu" and x.numel() < SMALL:
        torch.set_num_threads(1)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return w.T.contiguous(), b


def _accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.addmm(b, x, w).argmax(1) == y).float().mean().item()


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int, l2_grid=L2_GRID, *,
                 select_max: int | None = SELECT_MAX, seed: int = 0, max_iter: int = 200, tol: float = 1e-5) -> dict:
    """Test accuracy of a logistic regression on centred, scaled features (see standardize), l2 chosen on val.

    Every l2 in the grid is fitted on train, strongest first, each fit warm-started from the previous one (the
    regularisation path, which needs fewer evaluations than cold starts). The l2 with the best val accuracy
    wins; ties go to the larger l2. Val and test are never trained on.
    Large train sets: when train has more than `select_max` examples, the grid is fitted on a seeded random subset
    of `select_max` of them, then the chosen l2 is refitted on the whole train set, scaled by select_max / N so
    that the penalty against the summed loss (N * l2) stays what won on the subset. The optimum of the mean-loss l2
    shrinks with N, and selecting on a subset costs a fraction of selecting on all of it.
    tol defaults to 1e-5 (not fit_logistic's 1e-6): a tighter tol runs many more iterations for changes in test
    accuracy far below the spread between label draws.
    Returns {"accuracy": test, "l2": chosen grid value, "l2_refit": l2 of the final fit, "val_accuracy": of the
    winning selection fit (on the subset when there is one)}.
    """
    check(len(l2_grid) > 0, "l2_grid: empty; allowed a non-empty sequence of l2 >= 0")
    _check_labels(train_y, num_classes, "train_y", every_class=True)
    _check_labels(val_y, num_classes, "val_y")
    _check_labels(test_y, num_classes, "test_y")
    tr, va, te = standardize(train_x, val_x, test_x)
    n = len(tr)
    subset = select_max is not None and n > select_max
    sel = _draw(n, select_max, torch.Generator().manual_seed(int(seed))).to(tr.device) if subset else None
    sel_x, sel_y = (tr[sel], train_y[sel]) if subset else (tr, train_y)
    best, params = None, None
    for l2 in sorted(set(float(v) for v in l2_grid), reverse=True):
        params = fit_logistic(sel_x, sel_y, num_classes, l2, max_iter=max_iter, tol=tol, init=params)
        acc = _accuracy(va, val_y, *params)
        if best is None or acc > best[0]:  # strict: an equal accuracy keeps the earlier, larger l2
            best = (acc, l2, params)
    val_acc, l2, params = best
    l2_refit = l2
    if subset:
        l2_refit = l2 * len(sel) / n
        params = fit_logistic(tr, train_y, num_classes, l2_refit, max_iter=max_iter, tol=tol, init=params)
    return {"accuracy": _accuracy(te, test_y, *params), "l2": l2, "l2_refit": l2_refit, "val_accuracy": val_acc}


def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, query_x: torch.Tensor, k: int,
                metric: str = "cosine", num_classes: int | None = None, batch_size: int = 1024) -> torch.Tensor:
    """Majority vote of the k nearest training points for each query (k capped at the train size).

    cosine: similarity = dot product of L2-normalised vectors; euclidean: similarity = -squared distance. Ties in
    the vote go to the tied class with the larger summed similarity of its neighbours, then to the smallest class
    index. Features are used as given (not standardised). Queries run in batches of `batch_size`: the largest
    matrix is batch_size x N_train.
    """
    check(metric in METRICS, f"metric={metric!r}: allowed {' or '.join(METRICS)}")
    check(isinstance(k, int) and k >= 1, f"k={k!r}: allowed an integer >= 1")
    check(batch_size >= 1, f"batch_size={batch_size}: allowed >= 1")
    num_classes = int(train_y.max()) + 1 if num_classes is None and len(train_y) else num_classes
    _check_labels(train_y, num_classes, "train_y")
    k = min(k, len(train_x))
    train = train_x.detach().float()
    if metric == "cosine":
        train = F.normalize(train, dim=1)
    else:
        train_sq = train.square().sum(1)
    preds = []
    for q in query_x.detach().float().split(batch_size):
        if metric == "cosine":
            sim = F.normalize(q, dim=1) @ train.T
        else:  # -|q - t|^2 = 2 q.t - |t|^2 - |q|^2, the product and the train norms in one addmm
            sim = torch.addmm(train_sq, q, train.T, beta=-1, alpha=2) - q.square().sum(1, keepdim=True)
        top, idx = sim.topk(k, dim=1)
        labels = train_y[idx].long()
        votes = torch.zeros(len(q), num_classes, device=q.device).scatter_add_(1, labels, torch.ones_like(top))
        sims = torch.zeros_like(votes).scatter_add_(1, labels, top)
        sims = sims.masked_fill(votes < votes.amax(1, keepdim=True), float("-inf"))
        preds.append(sims.argmax(1))  # argmax returns the first maximum: the smallest class on exact ties
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=train_x.device)


def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, k: int,
                 metric: str = "cosine", num_classes: int | None = None, batch_size: int = 1024) -> float:
    """Fraction of test points whose k-NN vote (see knn_predict) equals their label."""
    _check_labels(test_y, num_classes if num_classes is not None else int(test_y.max()) + 1, "test_y")
    pred = knn_predict(train_x, train_y, test_x, k, metric, num_classes, batch_size)
    return (pred == test_y).float().mean().item()


def pca_features(train_images_flat: torch.Tensor, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """An encoder to PCA codes [N, k] fitted on training images (flattened, float in [0, 1]), through
    aelab.baselines.fit_pca: the linear autoencoder's code with the model's bottleneck, as a probe baseline."""
    pca = fit_pca(train_images_flat, k)

    def encode(images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1).float().to(pca.mean.device)
        return (x - pca.mean) @ pca.components.T

    return encode


def probe_all(features: dict[str, Splits], num_classes: int, budgets=(10, 100, None), k: int = 10,
              metric: str = "cosine", seed: int = 0) -> dict[str, float]:
    """Linear and k-NN test accuracy of every feature set at every label budget (examples per class; None: all).

    `features` maps a name to (train_x, train_y, val_x, val_y, test_x, test_y); "" is the model's code, any other
    name a baseline. Keys: probe_{linear,knn}_{budget|all} for "", with the suffix _baseline_{name} for the others.
    Each budget's train examples are one seeded balanced draw shared by all feature sets (they must therefore
    share train_y), so the sets are compared on the same labelled examples; val and test are always whole.
    """
    check(len(features) > 0, "features: empty; allowed a dict name -> (train_x, train_y, val_x, val_y, test_x, "
                             "test_y)")
    check(len(budgets) > 0, "budgets: empty; allowed a sequence of positive integers or None (all)")
    check(metric in METRICS, f"metric={metric!r}: allowed {' or '.join(METRICS)}")
    check(isinstance(k, int) and k >= 1, f"k={k!r}: allowed an integer >= 1")
    for name, splits in features.items():
        check(len(splits) == 6, f"features[{name!r}]: {len(splits)} tensors, allowed 6 (train_x, train_y, val_x, "
                                "val_y, test_x, test_y)")
    train_y = next(iter(features.values()))[1]
    for name, splits in features.items():
        check(torch.equal(splits[1].cpu(), train_y.cpu()), f"features[{name!r}]: train_y differs from the first "
                                                           "set's; all sets must label the same train examples")
    draws = {b: None if b is None else balanced_subset(train_y, b, seed).cpu() for b in budgets}
    # a budget whose draw takes every example (flowers has 10 per class: 10, 100 and all) is the same probe
    draws = {b: None if idx is not None and len(idx) == len(train_y) else idx for b, idx in draws.items()}
    out = {}
    for name, (trx, try_, vx, vy, tx, ty) in features.items():
        suffix = f"_baseline_{name}" if name else ""
        done: dict[tuple, tuple[float, float]] = {}
        for budget, idx in draws.items():
            tag = "all" if budget is None else str(budget)
            key = () if idx is None else tuple(idx.tolist())
            if key not in done:
                bx, by = (trx, try_) if idx is None else (trx[idx.to(trx.device)], try_[idx.to(try_.device)])
                done[key] = (linear_probe(bx, by, vx, vy, tx, ty, num_classes, seed=seed)["accuracy"],
                             knn_accuracy(bx, by, tx, ty, k, metric, num_classes))
            out[f"probe_linear_{tag}{suffix}"], out[f"probe_knn_{tag}{suffix}"] = done[key]
    return out
