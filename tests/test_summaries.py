"""Summary maps of embeddings (pca-whitened, param-head), persistence, per-set statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bo_voids.exceptions import StateError
from bo_voids.summaries import SummaryMap, head_targets, set_means, set_statistics
from bo_voids.testing.synthetic import default_space

D, P, REPS = 40, 4, 3


def make_data(n_sets: int, seed: int, noise: float = 0.3, reps: int = REPS):
    """Embeddings driven linearly by known parameters, plus replicate noise with structure."""
    g = np.random.default_rng(0)  # the generator's "physics" is fixed across calls
    M = g.normal(size=(P, D))
    C = g.normal(size=(D, D)) / np.sqrt(D)  # correlated within-set noise
    rng = np.random.default_rng(seed)
    theta = rng.uniform(size=(n_sets, P))
    T = np.repeat(theta, reps, axis=0)
    E = T @ M + 0.2 * np.sin(3 * T) @ M + noise * rng.normal(size=(T.shape[0], D)) @ C
    groups = np.repeat(np.arange(n_sets), reps)
    return E, groups, T


def within_cov(S: np.ndarray, groups: np.ndarray) -> np.ndarray:
    means = set_means(S, groups)
    _, inv = np.unique(groups, return_inverse=True)
    R = S - means[inv]
    return R.T @ R / (S.shape[0] - means.shape[0])


@pytest.fixture(scope="module")
def fitted():
    E, groups, T = make_data(120, 1)
    return SummaryMap.fit(E, groups, T, kinds=("pca", "head"), n_components=6, seed=0), (
        E,
        groups,
        T,
    )


def test_names_shapes_and_description(fitted):
    smap, (E, _, _) = fitted
    assert smap.names == (
        *(f"pca_{i}" for i in range(1, 7)),
        "head_0",
        "head_1",
        "head_2",
        "head_3",
    )
    assert smap.transform(E).shape == (E.shape[0], 10)
    assert smap.transform(E[0]).shape == (10,)
    info = smap.to_dict()
    assert info["pca"]["whitening"] == "within" and info["head"]["scaling"] == "within"
    assert info["fingerprint"] == smap.fingerprint() and info["n_summaries"] == 10
    with pytest.raises(ValueError, match="features"):
        smap.transform(E[:, :-1])


def test_save_load_round_trip_is_identical(fitted, tmp_path):
    smap, (E, _, _) = fitted
    path = smap.save(tmp_path / "summaries.npz")
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert "matrix" in data.files
    loaded = SummaryMap.load(path)
    np.testing.assert_array_equal(loaded.transform(E), smap.transform(E))
    assert loaded.fingerprint() == smap.fingerprint() and loaded.names == smap.names
    assert loaded.to_dict() == smap.to_dict()


def test_state_dict_is_strict_json_and_exact(fitted):
    smap, (E, _, _) = fitted
    text = json.dumps(smap.state_dict(), allow_nan=False)
    back = SummaryMap.from_state_dict(json.loads(text))
    np.testing.assert_array_equal(back.transform(E), smap.transform(E))
    assert back.fingerprint() == smap.fingerprint()
    tampered = json.loads(text)
    tampered["offset"][0] += 1.0
    with pytest.raises(StateError, match="fingerprint"):
        SummaryMap.from_state_dict(tampered)


def test_load_refuses_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, matrix=np.zeros((2, 2)))
    with pytest.raises(StateError, match="not a saved SummaryMap"):
        SummaryMap.load(bad)
    with pytest.raises(StateError, match="cannot read"):
        SummaryMap.load(tmp_path / "missing.npz")


def test_fingerprint_changes_with_content(fitted):
    smap, (E, groups, T) = fitted
    other = SummaryMap.fit(E[3:], groups[3:], T[3:], n_components=6)
    fewer = SummaryMap.fit(E, groups, T, n_components=5)
    same = SummaryMap.fit(E, groups, T, kinds=("pca", "head"), n_components=6, seed=0)
    assert same.fingerprint() == smap.fingerprint()
    prints = {smap.fingerprint(), other.fingerprint(), fewer.fingerprint()}
    assert len(prints) == 3
    nudged = SummaryMap(
        smap.matrix * (1 + 1e-12), smap.offset, smap.names, smap.within_var, smap.settings
    )
    assert nudged.fingerprint() != smap.fingerprint()


def test_head_recovers_the_parameters_on_fresh_sets(fitted):
    smap, _ = fitted
    E, groups, T = make_data(80, 7)
    S = set_means(smap.transform(E), groups)[:, 6:]
    theta = set_means(T, groups)
    for j in range(P):
        r = np.corrcoef(S[:, j], theta[:, j])[0, 1]
        assert r**2 > 0.9, (j, r)
    cv = smap.to_dict()["head"]["cv_r2"]
    assert all(v > 0.8 for v in cv)


def test_summaries_have_unit_within_set_variance(fitted):
    smap, (E, groups, _) = fitted
    W = within_cov(smap.transform(E), groups)
    # PCA block: whitened on the fitting data (identity covariance up to the tiny ridge).
    np.testing.assert_allclose(W[:6, :6], np.eye(6), atol=1e-5)
    # Head block: scaled by the out-of-fold replicate spread, so in-sample it is a bit smaller.
    assert np.all((np.diag(W)[6:] > 0.6) & (np.diag(W)[6:] <= 1.05))
    np.testing.assert_allclose(smap.within_var[:6], 1.0, rtol=1e-5)
    # On fresh replicates the whitening still holds approximately.
    E2, g2, _ = make_data(300, 11)
    W2 = within_cov(smap.transform(E2), g2)
    assert np.all(np.abs(np.diag(W2) - 1.0) < 0.25)


def test_without_replicates_falls_back_to_total_covariance(tmp_path):
    E, groups, T = make_data(60, 2, reps=1)
    smap = SummaryMap.fit(E, groups, T, kinds=("pca-whitened", "param-head"), n_components=4)
    info = smap.to_dict()
    assert info["pca"]["whitening"] == "total" and info["head"]["scaling"] == "total"
    S = smap.transform(E)
    np.testing.assert_allclose(S[:, :4].var(axis=0, ddof=1), 1.0, rtol=1e-2)
    assert np.all(np.isfinite(S))
    assert np.isnan(smap.within_var).all()  # unknown without replicates, not the total
    SummaryMap.load(smap.save(tmp_path / "s.npz"))  # NaN survives persistence
    state = json.loads(json.dumps(smap.state_dict(), allow_nan=False))
    assert SummaryMap.from_state_dict(state).fingerprint() == smap.fingerprint()


def test_fit_rejects_bad_arguments():
    E, groups, T = make_data(10, 3)
    with pytest.raises(ValueError, match="params_encoded"):
        SummaryMap.fit(E, groups, None, kinds="head")
    with pytest.raises(ValueError, match="kinds"):
        SummaryMap.fit(E, groups, T, kinds=("pca", "pca"))
    with pytest.raises(ValueError, match="n_components"):
        SummaryMap.fit(E, groups, kinds="pca", n_components=D + 1)
    with pytest.raises(ValueError, match="groups"):
        SummaryMap.fit(E, groups[:-1], kinds="pca", n_components=2)
    pca_only = SummaryMap.fit(E, groups, kinds="pca", n_components=3)
    assert pca_only.names == ("pca_1", "pca_2", "pca_3")


def test_head_targets_one_hot_and_normalised():
    space = default_space()
    sets = space.sample_uniform(5, 0)
    T, names = head_targets(space, sets)
    assert names[:3] == ["void_shape=circle", "void_shape=ellipse", "void_shape=irregular"]
    assert names[3:] == [
        "void_count",
        "base_size",
        "brightness_factor",
        "size_std",
        "position_spread",
    ]
    np.testing.assert_array_equal(T[:, :3].sum(axis=1), 1.0)
    lo, hi = space.raw_bounds
    raw = np.stack([space.to_raw(p) for p in sets])
    np.testing.assert_allclose(T[:, 3:], ((raw - lo) / (hi - lo))[:, 1:], atol=1e-12)


# ---- per-set statistics ----------------------------------------------------------------------


def test_set_means_follow_sorted_labels():
    S = np.array([[1.0], [3.0], [10.0], [20.0], [5.0]])
    groups = np.array(["b", "b", "a", "a", "c"])
    np.testing.assert_allclose(set_means(S, groups), [[15.0], [2.0], [5.0]])


def test_set_statistics_shrink_towards_the_pooled_variance():
    S = np.array([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [1.0, 1.0], [7.0, 7.0]])
    groups = np.array([0, 0, 1, 1, 2])
    st = set_statistics(S, groups, prior_df=2.0)
    # Sample variances: set 0: (2, 8) with 1 df, set 1: (0, 0) with 1 df; pooled over 2 df.
    np.testing.assert_allclose(st.pooled_var, [1.0, 4.0])
    assert st.pooled_df == 2 and list(st.counts) == [2, 2, 1]
    np.testing.assert_allclose(st.mean_var[0], [(2 + 2 * 1) / 3 / 2, (8 + 2 * 4) / 3 / 2])
    np.testing.assert_allclose(st.mean_var[1], [(0 + 2 * 1) / 3 / 2, (0 + 2 * 4) / 3 / 2])
    np.testing.assert_allclose(st.mean_var[2], [1.0, 4.0])  # one replicate: the pooled variance
    np.testing.assert_allclose(st.means, set_means(S, groups))


def test_set_statistics_needs_replicates_or_a_pooled_variance():
    S = np.arange(6.0).reshape(3, 2)
    with pytest.raises(ValueError, match="pooled_var"):
        set_statistics(S, [0, 1, 2])
    st = set_statistics(S, [0, 1, 2], pooled_var=np.array([1.0, 2.0]))
    np.testing.assert_allclose(st.mean_var, [[1.0, 2.0]] * 3)
    with pytest.raises(ValueError, match="pooled_var"):
        set_statistics(S, [0, 1, 2], pooled_var=np.array([1.0, np.nan]))
    # NaN entries are estimated from the replicates when there are some.
    st = set_statistics(S, [0, 0, 1], pooled_var=np.array([5.0, np.nan]))
    np.testing.assert_allclose(st.pooled_var, [5.0, 2.0])
    with pytest.raises(ValueError, match="prior_df"):
        set_statistics(S, [0, 0, 1], prior_df=0)
