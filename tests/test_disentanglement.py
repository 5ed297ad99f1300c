"""Disentanglement metrics on codes whose answer is known: the true factors as the code score near 1, random codes
near 0, a rotation that mixes two factors scores lower, and permuting or rescaling code dimensions changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from aelab import disentanglement as dis

SIZES = (3, 6, 10, 8, 8)  # at most BINS values per factor, so binning loses nothing


def factors(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, len(SIZES))) * np.asarray(SIZES)).astype(np.int64)


def scores(codes: np.ndarray, v: np.ndarray) -> dict[str, float]:
    d = dis.dci(codes, v)
    return {"mig": dis.mig(codes, v), "sap": dis.sap(codes, v), "dci_d": d["disentanglement"],
            "dci_c": d["completeness"], "dci_i": d["informativeness"]}


@pytest.fixture(scope="module")
def truth():
    v = factors()
    return v, v.astype(float), scores(v.astype(float), v)


def test_the_true_factors_as_the_code_score_near_one(truth):
    _, _, s = truth
    assert s["mig"] > 0.95 and s["dci_d"] > 0.9 and s["dci_c"] > 0.9 and s["dci_i"] > 0.95 and s["sap"] > 0.5


def test_random_codes_score_near_zero():
    v = factors()
    s = scores(np.random.default_rng(1).normal(size=(len(v), len(SIZES))), v)
    assert s["mig"] < 0.05 and s["sap"] < 0.1 and s["dci_i"] < 0.5


def test_a_rotation_mixing_two_factors_lowers_the_scores(truth):
    v, codes, s = truth
    mixed = codes.copy()
    a, b = (codes[:, 3] - 3.5) / 8, (codes[:, 4] - 3.5) / 8  # two factors of equal range
    mixed[:, 3], mixed[:, 4] = (a + b) / np.sqrt(2), (a - b) / np.sqrt(2)
    m = scores(mixed, v)
    assert m["mig"] < s["mig"] - 0.2 and m["dci_d"] < s["dci_d"] - 0.1 and m["sap"] < s["sap"]


def test_scores_do_not_change_when_dimensions_are_permuted_or_rescaled(truth):
    v, codes, s = truth
    changed = codes[:, [4, 2, 0, 3, 1]] * np.array([3.0, 0.5, 10.0, 2.0, 0.1]) + 7.0
    c = scores(changed, v)
    for key in s:
        assert c[key] == pytest.approx(s[key], abs=0.02), key


def test_factorvae_score_of_true_factors_is_one_and_of_noise_near_chance():
    sizes = (3, 6, 10, 8, 8)
    noise_dims = np.random.default_rng(2)
    assert dis.factorvae_score(lambda f: f.astype(float) + 0.01 * noise_dims.normal(size=f.shape), sizes) == 1.0
    rng = np.random.default_rng(3)
    chance = dis.factorvae_score(lambda f: rng.normal(size=(len(f), 5)), sizes)
    assert chance < 0.45  # 5 factors: chance is 0.2


def test_the_same_inputs_give_the_same_scores(truth):
    v, codes, s = truth
    assert scores(codes, v) == s
