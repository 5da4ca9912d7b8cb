"""mimimi.scoring.backends against brute-force numpy, scipy and sklearn oracles; state round trips through torch.load."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from sklearn.covariance import LedoitWolf
from sklearn.mixture import GaussianMixture

from mimimi.scoring import backends as S

PARAMS = {"knn": {"k": 3}, "mahalanobis": {"shrinkage": "ledoit-wolf"}, "gmm": {"n_components": 2},
          "knn-density": {"k_ref": 4}}


def blob(seed: int, n: int = 40, d: int = 6, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def two_clusters(seed: int, n: int, d: int = 8) -> np.ndarray:
    """Half the rows near 5·e0, half near 5·e1; small noise in every dim."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, d))
    centres[0, 0] = centres[1, 1] = 5.0
    return centres[np.arange(n) % 2] + 0.3 * rng.normal(size=(n, d))


def brute_cosine(Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(m, n) 1 - cos, one pair at a time."""
    return np.array([[1 - q @ r / (np.linalg.norm(q) * np.linalg.norm(r)) for r in R] for q in Q])


def round_trip(state: dict, tmp_path) -> dict:
    path = tmp_path / "state.pt"
    torch.save({"scorer": state}, path)
    return torch.load(path, weights_only=True)["scorer"]


def only_plain(obj) -> bool:
    """True when obj is built from tensors, Python scalars/strings, lists and str-keyed dicts only."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and only_plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(map(only_plain, obj))
    return isinstance(obj, (torch.Tensor, int, float, str, bool))


# --------------------------------------------------------------------------------------------- knn
def test_knn_reference_point_scores_zero_and_matches_brute_force():
    R, Q = blob(0, n=30), blob(1, n=7)
    knn = S.KNNScorer(k=1).fit(R)
    np.testing.assert_allclose(knn.score(R[:5]), 0.0, atol=1e-6)
    np.testing.assert_allclose(knn.score(Q), brute_cosine(Q, R).min(axis=1), rtol=1e-5, atol=1e-6)
    k3 = S.KNNScorer(k=3).fit(R).score(Q)
    np.testing.assert_allclose(k3, np.sort(brute_cosine(Q, R), axis=1)[:, :3].mean(axis=1), rtol=1e-5, atol=1e-6)
    assert knn.refs.dtype == np.float32 and np.allclose(np.linalg.norm(knn.refs, axis=1), 1, atol=1e-6)


def test_knn_k_clipped_to_references():
    R, Q = blob(2, n=3), blob(3, n=4)
    got = S.KNNScorer(k=10).fit(R).score(Q)
    np.testing.assert_allclose(got, brute_cosine(Q, R).mean(axis=1), rtol=1e-5, atol=1e-6)


def test_knn_scale_invariant():
    R, Q = blob(4), blob(5, n=6)
    base = S.KNNScorer(k=2).fit(R).score(Q)
    scaled = S.KNNScorer(k=2).fit(R * 1e3).score(Q * 0.01)
    np.testing.assert_allclose(scaled, base, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- mahalanobis
def test_mahalanobis_fixed_shrinkage_matches_scipy():
    X, Q = blob(6, n=80, d=5), blob(7, n=6, d=5, shift=0.5)
    a = 0.2
    Sm = np.cov(X, rowvar=False, bias=True)
    sigma = (1 - a) * Sm + a * np.trace(Sm) / 5 * np.eye(5)
    VI = np.linalg.inv(sigma)
    want = [scipy_mahalanobis(q, X.mean(axis=0), VI) for q in Q]
    m = S.MahalanobisScorer(shrinkage=a).fit(X)
    np.testing.assert_allclose(m.score(Q), want, rtol=1e-9)
    np.testing.assert_allclose(m.precision, VI, rtol=1e-8, atol=1e-10)


def test_mahalanobis_ledoit_wolf_matches_sklearn():
    X, Q = blob(8, n=30, d=10), blob(9, n=5, d=10, shift=1.0)
    lw = LedoitWolf().fit(X)
    m = S.MahalanobisScorer().fit(X)
    np.testing.assert_allclose(np.linalg.inv(m.precision), lw.covariance_, rtol=1e-8, atol=1e-12)
    assert m.shrinkage_ == pytest.approx(lw.shrinkage_)
    VI = np.linalg.inv(lw.covariance_)
    np.testing.assert_allclose(m.score(Q), [scipy_mahalanobis(q, lw.location_, VI) for q in Q], rtol=1e-8)


@pytest.mark.parametrize("shrinkage", ["ledoit-wolf", 0.0, 0.5])
def test_mahalanobis_fewer_rows_than_dims(shrinkage):
    X = blob(10, n=5, d=765)
    m = S.MahalanobisScorer(shrinkage=shrinkage).fit(X)
    near, far = m.score(X + 0.01), m.score(X + 3.0)
    assert np.isfinite(near).all() and np.isfinite(far).all()
    assert far.min() > near.max()


def test_mahalanobis_single_row_uses_variance_floor():
    x = np.array([[1.0, -2.0, 0.5]])
    m = S.MahalanobisScorer().fit(x)
    np.testing.assert_allclose(m.precision, np.eye(3) / S.VAR_FLOOR)
    q = x + np.array([[3.0, 0.0, 4.0]])  # distance 5 from the only row
    np.testing.assert_allclose(m.score(q), 5.0 / np.sqrt(S.VAR_FLOOR))
    assert m.score(x)[0] == 0.0


def test_mahalanobis_far_scores_higher_than_near():
    X = blob(11, n=60, d=4)
    m = S.MahalanobisScorer().fit(X)
    d = np.linspace(0, 6, 7)[:, None] * np.ones((1, 4))  # points moving away from the mean
    assert np.all(np.diff(m.score(X.mean(axis=0) + d)) > 0)


# --------------------------------------------------------------------------------------------- gmm
def test_gmm_nll_matches_sklearn():
    X = np.vstack([blob(12, n=50, d=4), blob(13, n=50, d=4, shift=4.0)])
    Q = blob(14, n=10, d=4, shift=2.0)
    g = S.GMMScorer(n_components=2, reg_covar=1e-4, seed=0).fit(X)
    gm = GaussianMixture(2, covariance_type="diag", reg_covar=1e-4, random_state=0).fit(X)
    np.testing.assert_allclose(g.weights, gm.weights_)
    np.testing.assert_allclose(g.score(Q), -gm.score_samples(Q), rtol=1e-6)
    np.testing.assert_allclose(g.score(X), -gm.score_samples(X), rtol=1e-6)


def test_gmm_components_clipped():
    X = blob(15, n=3, d=4)
    g = S.GMMScorer(n_components=8).fit(X)
    assert g.weights.shape == (3,) and g.means.shape == (3, 4)
    assert np.isfinite(g.score(blob(16, n=2, d=4))).all()


# --------------------------------------------------------------------------------------------- all scorers
@pytest.mark.parametrize("name", S.SCORERS)
def test_state_round_trip(name, tmp_path):
    X, Q = blob(17, n=25, d=5), blob(18, n=8, d=5, shift=0.7)
    s = S.make_scorer(name, **PARAMS[name]).fit(X)
    state = s.state()
    assert only_plain(state)
    back = S.scorer_from_state(round_trip(state, tmp_path))
    assert type(back) is type(s) and back.params() == s.params()
    if name == "knn":
        np.testing.assert_array_equal(back.score(Q), s.score(Q))
    else:
        np.testing.assert_allclose(back.score(Q), s.score(Q), rtol=1e-12)
    assert type(s).from_state(state).dim == 5


def test_id_scorers_round_trip(tmp_path):
    emb = {"00": blob(19, n=20, d=5), "02": blob(20, n=30, d=5, shift=2.0)}
    ids = S.IDScorers("mahalanobis", shrinkage=0.1).fit(emb)
    assert ids.groups() == ["00", "02"]
    Q = blob(21, n=6, d=5, shift=1.0)
    assert not np.allclose(ids.score("00", Q), ids.score("02", Q))  # each group has its own fit
    state = ids.state()
    assert only_plain(state)
    back = S.IDScorers.from_state(round_trip(state, tmp_path))
    assert back.groups() == ids.groups()
    for g in ids.groups():
        np.testing.assert_allclose(back.score(g, Q), ids.score(g, Q), rtol=1e-12)


@pytest.mark.parametrize("name", S.SCORERS)
def test_off_manifold_scores_higher(name):
    X = two_clusters(22, n=120)
    train, held = X[:100], X[100:]
    off = np.zeros((2, 8))
    off[0, 2] = 5.0  # a direction the normals never take
    off[1, 0] = -5.0  # opposite to a cluster
    s = S.make_scorer(name, **PARAMS[name]).fit(train)
    assert s.score(off).min() > s.score(held).max()


# --------------------------------------------------------------------------------------------- cross-fitting
def test_cross_fitted_is_leave_fold_out():
    X = blob(23, n=12, d=4)
    held = np.arange(5)  # 5 held rows in 5 folds: leave-one-out among them
    got = S.cross_fitted_scores("knn", X, held, folds=5, k=1)
    D = brute_cosine(X[:5], X)
    D[np.arange(5), np.arange(5)] = np.inf  # a row never scores against itself
    np.testing.assert_allclose(got, D.min(axis=1), rtol=1e-5, atol=1e-6)
    assert got.min() > 1e-3
    assert S.KNNScorer().fit(X).score(X[:5]).max() < 1e-6  # while in-sample it would be ~0


def test_cross_fitted_deterministic_and_mask_equals_indices():
    X = blob(24, n=40, d=4)
    mask = np.zeros(40, bool)
    mask[::2] = True
    a = S.cross_fitted_scores("knn", X, mask, folds=4, seed=3, k=2)
    b = S.cross_fitted_scores("knn", X, np.flatnonzero(mask), folds=4, seed=3, k=2)
    c = S.cross_fitted_scores("knn", X, mask, folds=4, seed=4, k=2)
    assert a.shape == (20,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    all_held = S.cross_fitted_scores("gmm", X, np.ones(40, bool), folds=3, n_components=1)
    assert all_held.shape == (40,) and np.isfinite(all_held).all()


def test_cross_fitted_empty_fold_raises():
    X = blob(25, n=6, d=3)
    with pytest.raises(S.ScorerError, match="fold 0 leaves no rows to fit on"):
        S.cross_fitted_scores("knn", X, np.ones(6, bool), folds=1)
    with pytest.raises(S.ScorerError, match="repeated"):
        S.cross_fitted_scores("knn", X, [1, 1])


# --------------------------------------------------------------------------------------------- thresholds
def test_fit_threshold_gamma_close_to_true_quantile():
    a, loc, scale = 2.0, 1.0, 0.5
    s = scipy.stats.gamma.rvs(a, loc=loc, scale=scale, size=2000, random_state=np.random.default_rng(26))
    want = scipy.stats.gamma.ppf(0.9, a, loc=loc, scale=scale)
    assert S.fit_threshold(s, "gamma", 0.9) == pytest.approx(want, rel=0.03)
    small = s[:30]  # few scores, high quantile: the gamma fit and np.quantile disagree
    want_small = scipy.stats.gamma.ppf(0.99, *scipy.stats.gamma.fit(small))
    assert S.fit_threshold(small, "gamma", 0.99) == pytest.approx(want_small, rel=1e-9)
    assert abs(want_small - np.quantile(small, 0.99)) > 0.05


def test_fit_threshold_empirical_min_scores_and_fallback():
    s = np.random.default_rng(27).normal(size=50)
    assert S.fit_threshold(s, "empirical", 0.8) == np.quantile(s, 0.8)
    assert S.fit_threshold([0.1, 0.2], min_scores=3) is None
    assert S.fit_threshold([0.1, 0.2, 0.3], "empirical", min_scores=3) == pytest.approx(np.quantile([0.1, 0.2, 0.3], 0.9))
    assert S.fit_threshold([0.4] * 10, "gamma") == pytest.approx(0.4)  # gamma fit fails on constants


@pytest.mark.parametrize("q", [0.0, 1.0, 1.5, -0.1])
def test_fit_threshold_bad_quantile(q):
    with pytest.raises(S.ScorerError, match="quantile must be in"):
        S.fit_threshold([1.0, 2.0, 3.0], quantile=q)


def test_fit_threshold_non_finite_and_method():
    with pytest.raises(S.ScorerError, match="1 non-finite scores"):
        S.fit_threshold([1.0, np.nan, 3.0, 4.0])
    with pytest.raises(S.ScorerError, match="unknown method 'median'"):
        S.fit_threshold([1.0, 2.0, 3.0], method="median")


# --------------------------------------------------------------------------------------------- errors
def test_error_messages():
    with pytest.raises(S.ScorerError, match=r"unknown scorer 'lof'; choose one of knn, mahalanobis, gmm, knn-density"):
        S.make_scorer("lof")
    with pytest.raises(S.ScorerError, match=r"knn: unknown parameter 'n_components' \(known: k\)"):
        S.make_scorer("knn", n_components=2)
    with pytest.raises(S.ScorerError, match="mahalanobis: embeddings have 3 dims, the scorer was fitted on 5"):
        S.MahalanobisScorer().fit(blob(28, d=5)).score(np.zeros((2, 3)))
    ids = S.IDScorers("knn").fit({"00": blob(29), "02": blob(30)})
    with pytest.raises(S.ScorerError, match=r"unknown group '04'; known groups: '00', '02'"):
        ids.score("04", blob(31))
    with pytest.raises(S.ScorerError, match="knn: no reference embeddings"):
        S.KNNScorer().fit(np.zeros((0, 4)))
    with pytest.raises(S.ScorerError, match="gmm: not fitted"):
        S.GMMScorer().score(blob(32))


@pytest.mark.parametrize("make, match", [
    (lambda: S.KNNScorer(k=0), "k must be an int >= 1"),
    (lambda: S.GMMScorer(n_components=0), "n_components must be an int >= 1"),
    (lambda: S.MahalanobisScorer(shrinkage=1.5), "shrinkage must be a float in"),
    (lambda: S.MahalanobisScorer(shrinkage="oas"), "shrinkage must be 'ledoit-wolf'"),
    (lambda: S.KNNScorer().fit(np.ones(4)), r"must be 2-D \(n, D\)"),
    (lambda: S.KNNScorer().fit([[1.0, np.inf]]), "1 non-finite values"),
    (lambda: S.KNNScorer().fit(blob(33)).score([[np.nan] + [0.0] * 5]), "1 non-finite values"),
    (lambda: S.IDScorers("gmm", k=1), "gmm: unknown parameter 'k'"),
    (lambda: S.scorer_from_state({"name": "knn", "params": {}}), "knn: state lacks 'refs'"),
])
def test_validation(make, match):
    with pytest.raises(S.ScorerError, match=match):
        make()


@pytest.mark.parametrize("shrinkage", ["ledoit-wolf", 0.0, 0.3])
def test_mahalanobis_low_rank_form_equals_the_full_matrix(shrinkage):
    """Fewer rows than dims: the SVD form gives the distances the (D, D) shrunk covariance gives."""
    X, Q = blob(12, n=9, d=40), blob(13, n=7, d=40, shift=0.4)
    m = S.MahalanobisScorer(shrinkage=shrinkage).fit(X)
    assert m.whitener is None and m.basis.shape[0] == 40  # the low-rank form was used
    a = m.shrinkage_
    Sm = np.cov(X, rowvar=False, bias=True)
    sigma = (1 - a) * Sm + a * np.trace(Sm) / 40 * np.eye(40)
    lam, V = np.linalg.eigh(sigma)
    VI = (V / np.maximum(lam, S.VAR_FLOOR * np.trace(sigma) / 40)) @ V.T
    if shrinkage == "ledoit-wolf":
        assert a == pytest.approx(LedoitWolf().fit(X).shrinkage_)
    np.testing.assert_allclose(m.precision, VI, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(m.score(Q), [scipy_mahalanobis(q, X.mean(axis=0), VI) for q in Q], rtol=1e-6)
    again = S.scorer_from_state(m.state())
    np.testing.assert_allclose(again.score(Q), m.score(Q))
