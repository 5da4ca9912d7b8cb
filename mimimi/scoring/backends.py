"""Anomaly scorers on clip embeddings, fitted per machine ID on that ID's normal training clips.

A network (or a training-free feature extractor) maps each clip to an embedding ``x`` of ``D`` floats. A
scorer is fitted on the ``(n, D)`` embeddings of one ID's normal clips; a test clip's score is how far it
lies from them (higher = more anomalous):

* ``knn``: mean of the ``k`` smallest cosine distances ``1 - cos(x, r)`` to the references ``r``;
* ``mahalanobis``: ``sqrt((x-μ)ᵀ Σ⁻¹ (x-μ))`` with a shrinkage covariance ``Σ``;
* ``gmm``: negative log-likelihood under a diagonal-covariance Gaussian mixture;
* ``knn-density``: the smallest cosine distance to a reference divided by that reference's typical distance
  to its own nearest references (local density normalisation, Wilkinghoff et al. 2025): a reference in a
  sparse region (a domain with few clips) counts as near from farther away; no domain label needed.

``IDScorers`` holds one fitted scorer per group key (the machine ID); ``cross_fitted_scores`` gives
normal-only scores of training rows for ``fit_threshold``, which turns them into a decision threshold.

Every scorer's ``state()`` holds only torch tensors, Python scalars/strings and lists/dicts of those, so it
can live inside a checkpoint read with ``torch.load(..., weights_only=True)``; ``scorer_from_state`` (or
``cls.from_state``) rebuilds it without sklearn.

>>> knn = make_scorer("knn", k=1).fit([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
>>> knn.score([[2.0, 0.0], [-1.0, 0.0]]).round(6)
array([0., 1.])
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import scipy.stats
import torch

SCORERS = ("knn", "mahalanobis", "gmm", "knn-density")
THRESHOLD_METHODS = ("gamma", "empirical")
VAR_FLOOR = 1e-6  # mahalanobis: Σ = VAR_FLOOR·I when the training rows have no spread (n = 1 or all equal);
#                   otherwise eigenvalues of Σ are clipped at VAR_FLOOR · tr(Σ)/D so Σ⁻¹ always exists
_CHUNK = 2048  # knn: query rows per block, bounds the (rows, n) distance matrix


class ScorerError(ValueError):
    """A scorer's input, parameter or state is unusable; the message is one line naming the problem."""


# --------------------------------------------------------------------------------------------- inputs
def _matrix(X, who: str) -> np.ndarray:
    """Array-like or tensor (n, D) -> float64 ndarray (n, D); not 2-D, D = 0 or non-finite raises."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ScorerError(f"{who}: embeddings are not a float array ({e})") from None
    if A.ndim != 2:
        raise ScorerError(f"{who}: embeddings must be 2-D (n, D), got shape {A.shape}")
    if A.shape[1] == 0:
        raise ScorerError(f"{who}: embeddings have 0 dims")
    bad = int(A.size - np.count_nonzero(np.isfinite(A)))
    if bad:
        raise ScorerError(f"{who}: embeddings hold {bad} non-finite values")
    return A


def _int(value, who: str, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ScorerError(f"{who}: {what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _float(value, who: str, what: str, lo: float, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi:
        raise ScorerError(f"{who}: {what} must be a float in [{lo}, {hi}], got {value!r}")
    return float(value)


def _tensor(a: np.ndarray, dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=dtype, copy=True))  # own copy: the state never aliases


def _state_parts(state, name: str, keys: tuple[str, ...]) -> dict:
    """Check a scorer state's type, name and keys; returns it."""
    if not isinstance(state, Mapping):
        raise ScorerError(f"{name}: state must be a dict, got {type(state).__name__}")
    if state.get("name") != name:
        raise ScorerError(f"{name}: state is for scorer {state.get('name')!r}")
    missing = [k for k in ("params", *keys) if k not in state]
    if missing:
        raise ScorerError(f"{name}: state lacks {', '.join(map(repr, missing))}")
    return dict(state)


def _array(state: Mapping, key: str, name: str, ndim: int) -> np.ndarray:
    t = state[key]
    if not isinstance(t, torch.Tensor) or t.ndim != ndim:
        raise ScorerError(f"{name}: state[{key!r}] must be a {ndim}-D tensor")
    return t.detach().cpu().numpy().copy()


class _Scorer:
    """Shared plumbing: fitted-ness, dimension checks, parameters."""

    name: str = ""
    PARAMS: tuple[str, ...] = ()
    dim: int | None = None  # D of the fitted embeddings
    n_train: int = 0

    def params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self.PARAMS}

    def _fit_input(self, X, what: str = "training") -> np.ndarray:
        A = _matrix(X, self.name)
        if A.shape[0] == 0:
            raise ScorerError(f"{self.name}: no {what} embeddings")
        self.dim, self.n_train = A.shape[1], A.shape[0]
        return A

    def _score_input(self, X) -> np.ndarray:
        if self.dim is None:
            raise ScorerError(f"{self.name}: not fitted")
        A = _matrix(X, self.name)
        if A.shape[1] != self.dim:
            raise ScorerError(f"{self.name}: embeddings have {A.shape[1]} dims, the scorer was fitted on {self.dim}")
        return A

    def _state_head(self) -> dict[str, Any]:
        if self.dim is None:
            raise ScorerError(f"{self.name}: not fitted, nothing to store")
        return {"name": self.name, "params": self.params(), "n_train": int(self.n_train)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args}){'' if self.dim is not None else ' (not fitted)'}"


# --------------------------------------------------------------------------------------------- knn
class KNNScorer(_Scorer):
    """k-nearest-neighbour cosine distance: ``score(x) = mean of the k smallest 1 - x̂·r̂_j`` over references.

    ``x̂ = x/‖x‖``; a zero vector stays zero (cosine 0 to everything, distance 1). ``k`` is clipped to the
    number of references ``n``. Distances lie in ``[0, 2]``; scaling ``x`` does not change them.
    """

    name = "knn"
    PARAMS = ("k",)

    def __init__(self, k: int = 1):
        self.k = _int(k, self.name, "k", 1)
        self.refs: np.ndarray | None = None  # (n, D) float32, rows of unit norm

    @staticmethod
    def _unit(A: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(A, axis=1, keepdims=True)  # (n, 1)
        return A / np.maximum(norm, np.finfo(np.float64).tiny)

    def fit(self, X) -> KNNScorer:
        A = self._fit_input(X, "reference")
        self.refs = self._unit(A).astype(np.float32)
        return self

    def score(self, X) -> np.ndarray:
        Q = self._unit(self._score_input(X))  # (m, D)
        R = self.refs.astype(np.float64)  # (n, D)
        k = min(self.k, R.shape[0])
        out = np.empty(Q.shape[0], dtype=np.float64)
        for i in range(0, Q.shape[0], _CHUNK):
            d = np.clip(1.0 - Q[i:i + _CHUNK] @ R.T, 0.0, 2.0)  # (rows, n) cosine distances
            out[i:i + _CHUNK] = np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)
        return out

    def state(self) -> dict[str, Any]:
        return {**self._state_head(), "refs": _tensor(self.refs, np.float32)}

    @classmethod
    def from_state(cls, state) -> KNNScorer:
        state = _state_parts(state, cls.name, ("refs",))
        obj = cls(**_checked_params(cls, state["params"]))
        obj.refs = _array(state, "refs", cls.name, 2).astype(np.float32)
        obj.n_train, obj.dim = obj.refs.shape
        return obj


# --------------------------------------------------------------------------------------------- mahalanobis
class MahalanobisScorer(_Scorer):
    """Gaussian distance ``score(x) = sqrt((x-μ)ᵀ Σ⁻¹ (x-μ))`` with a shrunk covariance.

    ``μ`` is the training mean and ``S = (1/n) Σ_i (x_i-μ)(x_i-μ)ᵀ``. ``shrinkage="ledoit-wolf"`` takes ``Σ`` from
    ``sklearn.covariance.LedoitWolf``; a float ``a`` in [0, 1] gives ``Σ = (1-a)·S + a·(tr(S)/D)·I``. When the
    rows have no spread (``n = 1`` or all rows equal) ``Σ = VAR_FLOOR·I`` (1e-6). Otherwise eigenvalues of ``Σ``
    are clipped at ``VAR_FLOOR·tr(Σ)/D``, so ``Σ⁻¹`` exists even for ``a = 0`` with ``n <= D``. The state holds
    ``μ`` (D,) and a whitener ``W`` (D, D), ``Σ⁻¹ = W Wᵀ``, so ``score(x) = ‖(x-μ) W‖``.

    With fewer rows than dimensions (an ID's 10 clips of 765-dim embeddings), ``S`` has rank ``r < n <= D`` and
    ``Σ`` is the isotropic ``ν I`` plus a rank-``r`` part: from the SVD of the centred rows ``C = U s Vᵀ`` the
    eigenvalues are ``λ_j = (1-a) s_j²/n + ν`` along ``V`` and ``ν = a tr(S)/D`` elsewhere, so the state holds
    ``V`` (D, r), ``1/λ`` and ``1/ν`` instead of a (D, D) whitener, and
    ``score(x)² = ‖z‖²/ν + Σ_j (z·v_j)² (1/λ_j − 1/ν)`` with ``z = x − μ``: the same distance (the same
    floor) for ``O(n² D)`` instead of ``O(D³)`` to fit and ``O(r D)`` per score.
    """

    name = "mahalanobis"
    PARAMS = ("shrinkage",)

    def __init__(self, shrinkage: Union[str, float] = "ledoit-wolf"):
        if isinstance(shrinkage, str):
            if shrinkage != "ledoit-wolf":
                raise ScorerError(f"{self.name}: shrinkage must be 'ledoit-wolf' or a float in [0, 1], got {shrinkage!r}")
            self.shrinkage: Union[str, float] = shrinkage
        else:
            self.shrinkage = _float(shrinkage, self.name, "shrinkage", 0.0, 1.0)
        self.mean: np.ndarray | None = None  # (D,) float64
        self.whitener: np.ndarray | None = None  # (D, D) float64 (full rank), or None for the low-rank form:
        self.basis: np.ndarray | None = None  # (D, r) the leading directions V
        self.inv_eig: np.ndarray | None = None  # (r,) 1/λ along them
        self.inv_rest: float | None = None  # 1/ν elsewhere
        self.shrinkage_: float | None = None  # the a actually used (Ledoit-Wolf's estimate, or 1 for VAR_FLOOR·I)

    @property
    def precision(self) -> np.ndarray:
        """Σ⁻¹ (D, D) = W Wᵀ (or, in the low-rank form, I/ν + V diag(1/λ − 1/ν) Vᵀ)."""
        if self.whitener is not None:
            return self.whitener @ self.whitener.T
        if self.basis is None:
            raise ScorerError(f"{self.name}: not fitted")
        return self.inv_rest * np.eye(len(self.mean)) + (self.basis * (self.inv_eig - self.inv_rest)) @ self.basis.T

    def fit(self, X) -> MahalanobisScorer:
        A = self._fit_input(X)
        n, D = A.shape
        mu = A.mean(axis=0)  # (D,)
        C = A - mu  # (n, D)
        trace = float(np.einsum("ij,ij->", C, C)) / n  # tr(S) without forming S
        if n == 1 or trace <= 0.0:
            self.mean, self.whitener, self.shrinkage_ = mu, np.eye(D) / math.sqrt(VAR_FLOOR), 1.0
            return self
        if n < D:  # rank-deficient sample covariance: the low-rank form (class docstring), no (D, D) matrix
            if self.shrinkage == "ledoit-wolf":
                from sklearn.covariance import ledoit_wolf_shrinkage  # fitting only

                self.shrinkage_ = float(ledoit_wolf_shrinkage(A))
            else:
                self.shrinkage_ = self.shrinkage
            a, floor = self.shrinkage_, VAR_FLOOR * trace / D
            _, sv, vt = np.linalg.svd(C, full_matrices=False)  # (r,), (r, D)
            self.mean, self.whitener, self.basis = mu, None, vt.T
            self.inv_eig = 1.0 / np.maximum((1.0 - a) * sv ** 2 / n + a * trace / D, floor)
            self.inv_rest = 1.0 / max(a * trace / D, floor)
            return self
        if self.shrinkage == "ledoit-wolf":
            from sklearn.covariance import LedoitWolf  # fitting only; loading a state needs no sklearn

            lw = LedoitWolf(store_precision=False).fit(A)
            sigma, self.shrinkage_ = lw.covariance_, float(lw.shrinkage_)
        else:
            a = self.shrinkage
            sigma = (1.0 - a) * (C.T @ C / n) + a * (trace / D) * np.eye(D)  # (D, D)
            self.shrinkage_ = a
        lam, V = np.linalg.eigh((sigma + sigma.T) / 2)  # symmetric: λ (D,), V (D, D)
        lam = np.maximum(lam, VAR_FLOOR * float(np.trace(sigma)) / D)
        self.mean, self.whitener = mu, V / np.sqrt(lam)  # W = V Λ^-1/2
        return self

    def score(self, X) -> np.ndarray:
        Z = self._score_input(X) - self.mean  # (m, D)
        if self.whitener is not None:
            W = Z @ self.whitener  # (m, D) whitened
            return np.sqrt(np.einsum("ij,ij->i", W, W))
        Q = Z @ self.basis  # (m, r)
        d2 = self.inv_rest * np.einsum("ij,ij->i", Z, Z) + (Q * Q) @ (self.inv_eig - self.inv_rest)
        return np.sqrt(np.maximum(d2, 0.0))

    def state(self) -> dict[str, Any]:
        head = {**self._state_head(), "shrinkage_used": float(self.shrinkage_), "mean": _tensor(self.mean, np.float64)}
        if self.whitener is not None:
            return {**head, "whitener": _tensor(self.whitener, np.float64)}
        return {**head, "basis": _tensor(self.basis, np.float64), "inv_eig": _tensor(self.inv_eig, np.float64),
                "inv_rest": float(self.inv_rest)}

    @classmethod
    def from_state(cls, state) -> MahalanobisScorer:
        low_rank = "basis" in state
        state = _state_parts(state, cls.name, ("mean", "basis", "inv_eig", "inv_rest") if low_rank else ("mean", "whitener"))
        obj = cls(**_checked_params(cls, state["params"]))
        obj.mean = _array(state, "mean", cls.name, 1).astype(np.float64)
        if low_rank:
            obj.basis = _array(state, "basis", cls.name, 2).astype(np.float64)
            obj.inv_eig = _array(state, "inv_eig", cls.name, 1).astype(np.float64)
            obj.inv_rest = float(state["inv_rest"])
            if obj.basis.shape != (obj.mean.size, obj.inv_eig.size):
                raise ScorerError(f"{cls.name}: state basis has shape {tuple(obj.basis.shape)}, mean has "
                                  f"{obj.mean.size} dims and {obj.inv_eig.size} eigenvalues")
        else:
            obj.whitener = _array(state, "whitener", cls.name, 2).astype(np.float64)
            if obj.whitener.shape != (obj.mean.size, obj.mean.size):
                raise ScorerError(f"{cls.name}: state whitener has shape {tuple(obj.whitener.shape)}, mean has "
                                  f"{obj.mean.size} dims")
        obj.dim, obj.n_train = obj.mean.size, int(state.get("n_train", 0))
        obj.shrinkage_ = float(state.get("shrinkage_used", math.nan))
        return obj


# --------------------------------------------------------------------------------------------- gmm
class GMMScorer(_Scorer):
    """Negative log-likelihood under a diagonal Gaussian mixture (weights w_k, means μ_k, variances σ²_k):

    ``score(x) = -log Σ_k w_k Π_d N(x_d; μ_kd, σ²_kd)``
    ``= -logsumexp_k [log w_k - ½ (D log 2π + Σ_d log σ²_kd + Σ_d (x_d-μ_kd)²/σ²_kd)]``.

    Fitted with ``sklearn.mixture.GaussianMixture(covariance_type="diag")``, ``n_components`` clipped to ``n``;
    scoring uses only the stored arrays (numpy), so a loaded state needs no sklearn.
    """

    name = "gmm"
    PARAMS = ("n_components", "reg_covar", "seed")

    def __init__(self, n_components: int = 2, reg_covar: float = 1e-4, seed: int = 0):
        self.n_components = _int(n_components, self.name, "n_components", 1)
        self.reg_covar = _float(reg_covar, self.name, "reg_covar", 0.0)
        self.seed = _int(seed, self.name, "seed", 0)
        self.weights: np.ndarray | None = None  # (K,)
        self.means: np.ndarray | None = None  # (K, D)
        self.variances: np.ndarray | None = None  # (K, D)

    def fit(self, X) -> GMMScorer:
        from sklearn.mixture import GaussianMixture  # fitting only

        A = self._fit_input(X)
        gm = GaussianMixture(n_components=min(self.n_components, A.shape[0]), covariance_type="diag",
                             reg_covar=self.reg_covar, random_state=self.seed).fit(A)
        self.weights = np.asarray(gm.weights_, dtype=np.float64)
        self.means = np.asarray(gm.means_, dtype=np.float64)
        self.variances = np.asarray(gm.covariances_, dtype=np.float64)
        return self

    def score(self, X) -> np.ndarray:
        A = self._score_input(X)  # (m, D)
        const = np.log(self.weights) - 0.5 * (self.dim * math.log(2 * math.pi) + np.log(self.variances).sum(axis=1))  # (K,)
        log_joint = np.empty((A.shape[0], self.weights.size))  # (m, K): log w_k + log N(x; μ_k, σ²_k)
        for j in range(self.weights.size):  # K is small; (m, D) memory per component
            log_joint[:, j] = const[j] - 0.5 * (((A - self.means[j]) ** 2) / self.variances[j]).sum(axis=1)
        top = log_joint.max(axis=1, keepdims=True)  # (m, 1) for a stable logsumexp
        return -(top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1)))

    def state(self) -> dict[str, Any]:
        return {**self._state_head(), "weights": _tensor(self.weights, np.float64),
                "means": _tensor(self.means, np.float64), "variances": _tensor(self.variances, np.float64)}

    @classmethod
    def from_state(cls, state) -> GMMScorer:
        state = _state_parts(state, cls.name, ("weights", "means", "variances"))
        obj = cls(**_checked_params(cls, state["params"]))
        obj.weights = _array(state, "weights", cls.name, 1).astype(np.float64)
        obj.means = _array(state, "means", cls.name, 2).astype(np.float64)
        obj.variances = _array(state, "variances", cls.name, 2).astype(np.float64)
        K = obj.weights.size
        if obj.means.shape[0] != K or obj.variances.shape != obj.means.shape:
            raise ScorerError(f"{cls.name}: state has {K} weights, means {tuple(obj.means.shape)}, "
                              f"variances {tuple(obj.variances.shape)}")
        obj.dim, obj.n_train = obj.means.shape[1], int(state.get("n_train", 0))
        return obj


# --------------------------------------------------------------------------------------------- knn-density
class DensityKNNScorer(_Scorer):
    """Local-density-normalised nearest neighbour: ``score(x) = min_r d(x, r) / c_r`` with ``d`` the cosine
    distance and ``c_r`` the mean distance from reference ``r`` to its ``k_ref`` nearest other references
    (``k_ref`` clipped to ``n - 1``; 1 for a single reference, and floored at a tiny positive value).

    >>> s = DensityKNNScorer(k_ref=1).fit([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> bool(s.score([[0.95, 0.05]])[0] < s.score([[0.5, 0.5]])[0])
    True
    """

    name = "knn-density"
    PARAMS = ("k_ref",)

    def __init__(self, k_ref: int = 16):
        self.k_ref = _int(k_ref, self.name, "k_ref", 1)
        self.refs: np.ndarray | None = None  # (n, D) unit rows
        self.scale: np.ndarray | None = None  # (n,) each reference's typical distance to its neighbours

    def fit(self, X) -> DensityKNNScorer:
        A = KNNScorer._unit(self._fit_input(X, "reference"))
        n = len(A)
        if n == 1:
            self.scale = np.ones(1)
        else:
            d = np.clip(1.0 - A @ A.T, 0.0, 2.0)  # (n, n); the diagonal is excluded below
            np.fill_diagonal(d, np.inf)
            k = min(self.k_ref, n - 1)
            self.scale = np.maximum(np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1), 1e-12)
        self.refs = A.astype(np.float32)
        return self

    def score(self, X) -> np.ndarray:
        Q = KNNScorer._unit(self._score_input(X))
        R = self.refs.astype(np.float64)
        out = np.empty(len(Q))
        for i in range(0, len(Q), _CHUNK):
            d = np.clip(1.0 - Q[i:i + _CHUNK] @ R.T, 0.0, 2.0) / self.scale  # (rows, n)
            out[i:i + _CHUNK] = d.min(axis=1)
        return out

    def state(self) -> dict[str, Any]:
        return {**self._state_head(), "refs": _tensor(self.refs, np.float32), "scale": _tensor(self.scale, np.float64)}

    @classmethod
    def from_state(cls, state) -> DensityKNNScorer:
        state = _state_parts(state, cls.name, ("refs", "scale"))
        obj = cls(**_checked_params(cls, state["params"]))
        obj.refs = _array(state, "refs", cls.name, 2).astype(np.float32)
        obj.scale = _array(state, "scale", cls.name, 1).astype(np.float64)
        obj.n_train, obj.dim = obj.refs.shape
        return obj


# --------------------------------------------------------------------------------------------- factory
Scorer = Union[KNNScorer, MahalanobisScorer, GMMScorer, DensityKNNScorer]
_CLASSES: dict[str, type] = {c.name: c for c in (KNNScorer, MahalanobisScorer, GMMScorer, DensityKNNScorer)}


def _scorer_class(name) -> type:
    if name not in _CLASSES:
        raise ScorerError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}")
    return _CLASSES[name]


def _checked_params(cls: type, params) -> dict[str, Any]:
    if not isinstance(params, Mapping):
        raise ScorerError(f"{cls.name}: params must be a dict, got {type(params).__name__}")
    unknown = [p for p in params if p not in cls.PARAMS]
    if unknown:
        raise ScorerError(f"{cls.name}: unknown parameter {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(cls.PARAMS)})")
    return dict(params)


def make_scorer(name: str, **params) -> Scorer:
    """An unfitted scorer by name (one of ``SCORERS``); unknown names and parameters raise ScorerError."""
    cls = _scorer_class(name)
    return cls(**_checked_params(cls, params))


def scorer_from_state(state: Mapping) -> Scorer:
    """Rebuild a fitted scorer from its ``state()`` (which carries its ``name`` and ``params``)."""
    if not isinstance(state, Mapping):
        raise ScorerError(f"scorer state must be a dict, got {type(state).__name__}")
    return _scorer_class(state.get("name")).from_state(state)


# --------------------------------------------------------------------------------------------- per ID
class IDScorers:
    """One fitted scorer per machine ID (or any group key string)."""

    def __init__(self, name: str, **params):
        self.name = name
        self.params = params
        make_scorer(name, **params)  # validate name and params now, not at fit time
        self._scorers: dict[str, Scorer] = {}

    def fit(self, embeddings: Mapping[str, Any]) -> IDScorers:
        """``{group: (n_i, D) normal embeddings}`` -> a fresh scorer fitted per group (replaces earlier fits)."""
        if not isinstance(embeddings, Mapping) or not embeddings:
            raise ScorerError("IDScorers: embeddings must be a non-empty {group: (n, D) array} mapping")
        fitted = {}
        for group, X in embeddings.items():
            if not isinstance(group, str):
                raise ScorerError(f"IDScorers: group keys must be strings, got {group!r}")
            try:
                fitted[group] = make_scorer(self.name, **self.params).fit(X)
            except ScorerError as e:
                raise ScorerError(f"group {group!r}: {e}") from None
        self._scorers = fitted
        return self

    def groups(self) -> list[str]:
        return sorted(self._scorers)

    def scorer(self, group: str) -> Scorer:
        """The fitted scorer of ``group``; unknown groups raise ScorerError naming the known ones."""
        if group not in self._scorers:
            known = ", ".join(map(repr, self.groups())) or "none (not fitted)"
            raise ScorerError(f"unknown group {group!r}; known groups: {known}")
        return self._scorers[group]

    def score(self, group: str, X) -> np.ndarray:
        """(m, D) embeddings of clips of ``group`` -> (m,) float64 scores from that group's scorer."""
        return self.scorer(group).score(X)

    def state(self) -> dict[str, Any]:
        if not self._scorers:
            raise ScorerError("IDScorers: not fitted, nothing to store")
        return {"name": self.name, "params": dict(self.params),
                "groups": {g: self._scorers[g].state() for g in self.groups()}}

    @classmethod
    def from_state(cls, state: Mapping) -> IDScorers:
        if not isinstance(state, Mapping) or not {"name", "params", "groups"} <= set(state):
            raise ScorerError("IDScorers: state must be a dict with 'name', 'params' and 'groups'")
        obj = cls(state["name"], **_checked_params(_scorer_class(state["name"]), state["params"]))
        groups = state["groups"]
        if not isinstance(groups, Mapping) or not groups:
            raise ScorerError("IDScorers: state holds no groups")
        for group, sub in groups.items():
            if not isinstance(sub, Mapping) or sub.get("name") != obj.name:
                raise ScorerError(f"IDScorers: state of group {group!r} is not a {obj.name!r} scorer")
            obj._scorers[str(group)] = scorer_from_state(sub)
        return obj

    def __repr__(self) -> str:
        return f"IDScorers({self.name!r}, {self.params!r}, groups={self.groups()})"


# --------------------------------------------------------------------------------------------- calibration
def _held_indices(held_out, n: int) -> np.ndarray:
    h = np.asarray(held_out)
    if h.dtype == bool:
        if h.shape != (n,):
            raise ScorerError(f"cross_fitted_scores: boolean held_out has shape {h.shape}, X has {n} rows")
        return np.flatnonzero(h)
    if h.ndim != 1 or (h.size and not np.issubdtype(h.dtype, np.integer)):
        raise ScorerError("cross_fitted_scores: held_out must be a boolean mask or a 1-D integer index array")
    h = h.astype(np.int64)
    if h.size and (h.min() < -n or h.max() >= n):
        raise ScorerError(f"cross_fitted_scores: held_out indices outside 0..{n - 1}")
    h = np.where(h < 0, h + n, h)
    if np.unique(h).size != h.size:
        raise ScorerError("cross_fitted_scores: held_out has repeated indices")
    return h


def cross_fitted_scores(name: str, X, held_out, *, folds: int = 5, seed: int = 0, **params) -> np.ndarray:
    """Scores of X[held_out] (boolean mask or index array), each from a scorer fitted on X WITHOUT that row's fold.

    Held-out rows are split into ``min(folds, n_held)`` folds by a seeded permutation; the scorer for fold
    ``f`` is fitted on every row not in ``f`` (all non-held rows always, and the other folds' rows). These are
    normal-only scores for calibrating a threshold without test data. Returns (n_held,) float64 in the order
    of ``held_out`` (ascending row order for a mask). A fold whose fit set would be empty raises ScorerError.
    """
    A = _matrix(X, "cross_fitted_scores")
    folds = _int(folds, "cross_fitted_scores", "folds", 1)
    make_scorer(name, **params)  # fail on a bad name/param even when nothing is held out
    idx = _held_indices(held_out, A.shape[0])  # (n_held,) row numbers
    out = np.empty(idx.size, dtype=np.float64)
    if idx.size == 0:
        return out
    n_folds = min(folds, idx.size)
    fold = np.empty(idx.size, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(idx.size)] = np.arange(idx.size) % n_folds  # (n_held,)
    for f in range(n_folds):
        mine = fold == f
        keep = np.ones(A.shape[0], dtype=bool)
        keep[idx[mine]] = False
        if not keep.any():
            raise ScorerError(f"cross_fitted_scores: fold {f} leaves no rows to fit on "
                              f"({A.shape[0]} rows, {idx.size} held out in {n_folds} folds)")
        out[mine] = make_scorer(name, **params).fit(A[keep]).score(A[idx[mine]])
    return out


def fit_threshold(scores, method: str = "gamma", quantile: float = 0.9, min_scores: int = 3) -> float | None:
    """Decision threshold from NORMAL scores only (a clip is anomalous when its score >= the threshold).

    ``"gamma"``: ``scipy.stats.gamma.ppf(quantile, *scipy.stats.gamma.fit(scores))`` (shape, loc, scale all
    free, as the DCASE 2023 baseline). If the fit fails (e.g. all scores equal) or gives a non-finite value,
    the ``"empirical"`` threshold is returned instead. ``"empirical"``: ``np.quantile(scores, quantile)``.
    None when there are fewer than ``min_scores`` scores; any non-finite score raises ScorerError.
    """
    if method not in THRESHOLD_METHODS:
        raise ScorerError(f"fit_threshold: unknown method {method!r}; choose one of {', '.join(THRESHOLD_METHODS)}")
    if isinstance(quantile, bool) or not isinstance(quantile, numbers.Real) or not 0.0 < quantile < 1.0:
        raise ScorerError(f"fit_threshold: quantile must be in (0, 1), got {quantile!r}")
    min_scores = _int(min_scores, "fit_threshold", "min_scores", 1)
    s = np.asarray(scores, dtype=np.float64).ravel()  # (n,)
    bad = int(s.size - np.count_nonzero(np.isfinite(s)))
    if bad:
        raise ScorerError(f"fit_threshold: {bad} non-finite scores")
    if s.size < min_scores:
        return None
    empirical = float(np.quantile(s, quantile))
    if method == "empirical":
        return empirical
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # a bad fit is caught by the finiteness check below
            threshold = float(scipy.stats.gamma.ppf(quantile, *scipy.stats.gamma.fit(s)))
    except (RuntimeError, ValueError, FloatingPointError, OverflowError):  # scipy's FitError is a RuntimeError
        return empirical
    return threshold if math.isfinite(threshold) else empirical
