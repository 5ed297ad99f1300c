"""Linear and k-NN probes: hand-built cases whose answer is known, then a small real MNIST probe."""

import pytest
import torch

from aelab import probe
from aelab.data.mnist import read_idx
from aelab.errors import ConfigError


def blobs(per_class: int, seed: int, dim: int = 5, classes: int = 3, spread: float = 0.5):
    """`classes` Gaussian blobs at 10 * e_c in `dim` dimensions, far apart (separable by any sane classifier)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = 10 * torch.eye(dim)[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


def noise(n: int, dim: int, classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_separable_blobs_score_perfectly():
    (tx, ty), (vx, vy), (sx, sy) = blobs(40, 0), blobs(20, 1), blobs(30, 2)
    assert probe.linear_probe(tx, ty, vx, vy, sx, sy, 3)["accuracy"] == 1.0
    for metric in probe.METRICS:
        assert probe.knn_accuracy(tx, ty, sx, sy, k=5, metric=metric, num_classes=3) == 1.0


def test_random_labels_score_near_chance():
    # 4 classes, labels independent of the features: chance is 0.25; the std of an accuracy on 2000 test points is
    # ~0.01, so 0.25 +- 0.06 holds unless the probe sees test labels
    (tx, ty), (vx, vy), (sx, sy) = noise(2000, 10, 4, 0), noise(1000, 10, 4, 1), noise(2000, 10, 4, 2)
    linear = probe.linear_probe(tx, ty, vx, vy, sx, sy, 4)["accuracy"]
    knn = probe.knn_accuracy(tx, ty, sx, sy, k=10, num_classes=4)
    assert abs(linear - 0.25) < 0.06 and abs(knn - 0.25) < 0.06, (linear, knn)


def test_linear_probe_never_trains_on_val():
    # val == test, random labels, 80 points in 100 dims: a model trained on them would fit them perfectly
    (tx, ty), (vx, vy) = noise(200, 100, 4, 0), noise(80, 100, 4, 1)
    acc = probe.linear_probe(tx, ty, vx, vy, vx, vy, 4)["accuracy"]
    assert acc < 0.25 + 0.2, acc


def test_l2_is_chosen_on_validation_ties_go_to_the_larger_l2():
    # 2 classes, 80/20, one informative feature: l2 = 100 squeezes W to ~0 (bias only: always class 0),
    # l2 = 1e-4 follows the feature
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(500) % 5 == 0).long()
    x = (2.0 * y - 1).unsqueeze(1) * 2 + torch.randn(500, 1, generator=g)
    test_x, test_y = x.clone(), y.clone()
    grid = (1e-4, 100.0)
    # val: class-0 points that look like class 1 -> only the bias-only model gets them right
    fooled = probe.linear_probe(x, y, torch.full((50, 1), 2.0), torch.zeros(50, dtype=torch.long), test_x, test_y,
                                2, l2_grid=grid)
    # val: an honest sample -> the feature wins
    honest = probe.linear_probe(x, y, x[:250], y[:250], test_x, test_y, 2, l2_grid=grid)
    # val: clear class-0 points -> both models are right -> the larger l2
    tie = probe.linear_probe(x, y, torch.full((50, 1), -4.0), torch.zeros(50, dtype=torch.long), test_x, test_y, 2,
                             l2_grid=grid)
    assert (fooled["l2"], honest["l2"], tie["l2"]) == (100.0, 1e-4, 100.0)
    assert fooled["accuracy"] == pytest.approx(0.8) and honest["accuracy"] > 0.95


def test_l2_selection_on_a_subset_then_refit_on_all():
    (tx, ty), (vx, vy) = blobs(100, 0, spread=4.0), blobs(30, 1, spread=4.0)
    out = probe.linear_probe(tx, ty, vx, vy, vx, vy, 3, select_max=60)
    assert out["l2_refit"] == pytest.approx(out["l2"] * 60 / 300)  # same penalty per example as on the subset
    assert out["accuracy"] > 0.8


def test_balanced_subset_counts_and_seeding():
    labels = torch.cat([torch.full((50,), 2), torch.full((30,), 0), torch.full((5,), 1)])[torch.randperm(85)]
    idx = probe.balanced_subset(labels, 10, seed=3)
    assert torch.bincount(labels[idx]).tolist() == [10, 5, 10]  # a class with fewer gives all it has
    assert len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, probe.balanced_subset(labels, 10, seed=3))
    assert not torch.equal(idx, probe.balanced_subset(labels, 10, seed=4))
    assert torch.equal(probe.balanced_subset(labels, None, seed=3), torch.arange(85))


def test_knn_in_batches_equals_one_batch():
    (tx, ty), (qx, _) = noise(500, 8, 5, 0), noise(300, 8, 5, 1)
    for metric in probe.METRICS:
        one = probe.knn_predict(tx, ty, qx, k=7, metric=metric, num_classes=5, batch_size=10_000)
        assert torch.equal(one, probe.knn_predict(tx, ty, qx, k=7, metric=metric, num_classes=5, batch_size=64))
    # k is capped at the train size: every query then gets the majority class of the whole train set
    assert probe.knn_predict(tx[:20], ty[:20], qx, k=1000, num_classes=5).unique().tolist() == [
        torch.bincount(ty[:20]).argmax().item()]


def test_knn_vote_ties():
    q = torch.zeros(1, 2)
    # 2 votes each; class 1's neighbours are closer -> class 1 (not the smaller index)
    train = torch.tensor([[2.0, 0], [-2.0, 0], [0, 1.0], [0, -1.0]])
    assert probe.knn_predict(train, torch.tensor([0, 0, 1, 1]), q, k=4, metric="euclidean").item() == 1
    # exact tie in votes and summed similarity -> the smaller class index
    train = torch.tensor([[1.0, 0], [-1.0, 0], [0, 1.0], [0, -1.0]])
    assert probe.knn_predict(train, torch.tensor([1, 1, 0, 0]), q, k=4, metric="euclidean").item() == 0
    assert probe.knn_predict(train, torch.tensor([0, 0, 1, 1]), q, k=4, metric="euclidean").item() == 0


def test_standardize_centres_per_feature_and_scales_the_set_as_one():
    train = torch.tensor([[0.0, 5.0], [2.0, 5.0]])  # stds 1 and 0: one scale, sqrt((1 + 0) / 2)
    tr, other = probe.standardize(train, torch.tensor([[4.0, 6.0]]))
    r2 = 2 ** 0.5
    assert torch.allclose(tr, torch.tensor([[-r2, 0.0], [r2, 0.0]]))  # constant feature -> 0, not NaN
    assert torch.allclose(other, torch.tensor([[3 * r2, r2]]))
    # a rotated code is probed like the code itself (PCA codes are a rotation of pixels): the scaled features
    # rotate with it, which z-scoring each feature would not do
    x, _ = noise(50, 4, 2, 0)
    x = x * torch.tensor([5.0, 1.0, 0.2, 0.05])
    q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))[0]
    assert torch.allclose(probe.standardize(x @ q)[0], probe.standardize(x)[0] @ q, atol=1e-5)


def test_fit_logistic_is_deterministic_and_converged():
    x, y = noise(300, 6, 3, 0)
    w, b = probe.fit_logistic(x, y, 3, l2=0.1)
    w2, b2 = probe.fit_logistic(x, y, 3, l2=0.1)
    assert torch.equal(w, w2) and torch.equal(b, b2) and w.shape == (6, 3)
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.05 * w.square().sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4  # the stationary point of the stated loss


def test_bad_arguments_raise_one_line_config_errors():
    x, y = blobs(5, 0)
    for kwargs, word in (({"metric": "manhattan"}, "metric"), ({"k": 0}, "k=0")):
        with pytest.raises(ConfigError, match=word):
            probe.knn_predict(x, y, x, **{"k": 3, **kwargs})
    with pytest.raises(ConfigError, match="class 1 has no examples"):
        probe.linear_probe(x[y != 1], y[y != 1], x, y, x, y, 3)
    with pytest.raises(ConfigError, match="labels span"):
        probe.linear_probe(x, y, x, y, x, y, 2)
    with pytest.raises(ConfigError, match="per_class=0"):
        probe.balanced_subset(y, 0, seed=0)
    with pytest.raises(ConfigError, match="train_y differs"):
        probe.probe_all({"": (x, y, x, y, x, y), "pixels": (x, y.flip(0), x, y, x, y)}, 3)


def test_probe_all_keys_and_shared_draws():
    (tx, ty), (vx, vy), (sx, sy) = blobs(30, 0, spread=3.0), blobs(10, 1, spread=3.0), blobs(20, 2, spread=3.0)
    splits = (tx, ty, vx, vy, sx, sy)
    out = probe.probe_all({"": splits, "pca": splits}, 3, budgets=(2, None), k=3)
    assert sorted(out) == sorted(f"probe_{kind}_{b}{s}" for kind in ("linear", "knn") for b in ("2", "all")
                                 for s in ("", "_baseline_pca"))
    # identical features on the same seeded draw give identical numbers
    assert all(out[key] == out[f"{key}_baseline_pca"] for key in out if "baseline" not in key)
    assert out["probe_knn_all"] > 0.8


def test_pca_features_give_centred_codes(data_dir):
    images = read_idx(data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")[:1000].flatten(1).float() / 255
    codes = probe.pca_features(images, 8)(images)
    assert codes.shape == (1000, 8)
    assert codes.mean(0).abs().max() < 1e-3
    assert (codes.var(0)[:-1] >= codes.var(0)[1:]).all()  # components in order of explained variance


def test_linear_probe_on_mnist_pixels(data_dir):
    raw = data_dir / "MNIST" / "raw"
    x = read_idx(raw / "train-images-idx3-ubyte.gz")[:2500].flatten(1).float() / 255
    y = read_idx(raw / "train-labels-idx1-ubyte.gz")[:2500].long()
    test_x = read_idx(raw / "t10k-images-idx3-ubyte.gz")[:500].flatten(1).float() / 255
    test_y = read_idx(raw / "t10k-labels-idx1-ubyte.gz")[:500].long()
    idx = probe.balanced_subset(y[:2000], 100, seed=0)  # 100 labels per class from 2000 train images
    out = probe.linear_probe(x[idx], y[idx], x[2000:], y[2000:], test_x, test_y, 10)
    assert out["accuracy"] > 0.7, out
    assert probe.knn_accuracy(x[idx], y[idx], test_x, test_y, k=5, num_classes=10) > 0.7
