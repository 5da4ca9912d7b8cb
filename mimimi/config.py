"""One typed config tree: dataclasses are the schema, YAML files only override them.

Unknown keys raise, values are type-checked, and a run stores the fully resolved tree
(``to_dict``) it ran with.

>>> cfg = merge(Config(), {"features": {"n_fft": 512}})
>>> cfg.features.n_fft, cfg.features.n_freq
(512, 257)
>>> merge(Config(), {"features": {"nfft": 512}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mimimi.config.ConfigError: unknown key 'features.nfft' (known: sample_rate, channel, n_fft, ...)
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mimimi.nn.autoencoder import AEConfig
from mimimi.nn.network import ComplexNetConfig


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass(frozen=True)
class FeatureConfig:
    """How a wav becomes network input. Every field is part of the feature-cache key."""

    sample_rate: int = 16000  # Hz; other rates are resampled on load
    channel: Union[int, Literal["mean"]] = 0  # which channel of a multi-channel file; "mean" averages
    n_fft: int = 1024  # STFT size -> n_fft // 2 + 1 frequency bins (513)
    hop_length: int = 512  # STFT hop, Hann window of n_fft samples
    n_mels: int = 128  # log-mel bins for the autoencoder baseline
    normalize: Literal["clip", "none"] = "clip"  # "clip": real and imag parts to zero mean, unit std per clip
    segment_frames: int = 64  # network input is (1, n_freq, segment_frames)
    eval_hop_frames: int = 64  # hop between evaluation segments; the last one is aligned to the clip end
    # how the feature cache stores the complex STFT: complex64, or float16 (real, imaginary) pairs at half the
    # disk (read back as complex64; about 3 significant digits, mimimi.features)
    stft_cache_dtype: Literal["complex64", "float16"] = "complex64"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "segment_frames", "eval_hop_frames"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"features.{name} must be positive, got {getattr(self, name)}")
        if isinstance(self.channel, int) and self.channel < 0:
            raise ConfigError(f"features.channel must be >= 0 or 'mean', got {self.channel}")

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def min_samples(self) -> int:
        """Shortest waveform that still gives one full segment (centred STFT: 1 + n // hop frames)."""
        return (self.segment_frames - 1) * self.hop_length


@dataclass(frozen=True)
class DataConfig:
    """Where the clips are and where their features are cached."""

    root: str = "data/synthetic"  # dataset root (DCASE or MIMII layout)
    cache_dir: str = ""  # feature cache; "": beside the root (mimimi.features.cache_dir_for); safe to delete
    machine_types: tuple[str, ...] = ()  # the types train.classes=all pools; empty: every type under root


@dataclass(frozen=True)
class ModelConfig:
    """Which model (``mimimi.kinds``): ``complex`` (the network), ``magnitude`` (same backbone fed |STFT|),
    ``ae`` (DCASE 2020 baseline), ``stats-knn`` (no training: per-clip log-mel mean and std)."""

    name: Literal["complex", "magnitude", "ae", "stats-knn"] = "complex"
    net: ComplexNetConfig = field(default_factory=ComplexNetConfig)  # complex and magnitude
    ae: AEConfig = field(default_factory=AEConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (seed values of the reference where it gives them)."""

    machine_type: str = ""  # one model per machine type; set by --machine-type or the search
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4  # Adam
    weight_decay: float = 0.0
    patience: int = 20  # early stopping: epochs without a better train.monitor value
    val_fraction: float = 0.1  # of each ID's normal training clips, held out for validation
    segments_per_clip: int = 0  # segments per training clip per epoch: 0 = every segment (random offsets)
    sampler: Literal["uniform", "balanced"] = "uniform"  # balanced: each class drawn equally often
    # the classifier's classes: "type", the machine type's IDs (the paper); "all", every (machine type, ID)
    # pair under data.root, or of data.machine_types when given (the 41-class setup of the DCASE 2020
    # leaders). Validation, scorers and the checkpoint stay per type either way.
    classes: Literal["type", "all"] = "type"
    # split each of those classes by the training clip's attributes (the name's part after NNNN_, DCASE 2021+:
    # "fan/00/vel_12", the 2022+ top systems' section x attribute classes); a clip without any ("" in 2020 and
    # MIMII, "noAttribute") keeps "<type>/<ID>". Scorers stay per ID: ce is -log of the summed probability of
    # the ID's classes, pred_id the ID of the likeliest class. Classifiers only.
    attributes: bool = False
    arcface_margin: float = 0.5  # additive angular margin of the arcface head (model.net.head), radians
    # the validation figure that picks the best checkpoint, stops early and chooses the back-end
    # (mimimi.scoring.objective): cv_proxy_auc (every clip, cross-fitted), val_proxy_auc (held-out clips only), or
    # val_loss (lowest; the back-end is then chosen on cv_proxy_auc); *_network: the best network-only back-end's
    monitor: Literal["val_loss", "val_proxy_auc", "cv_proxy_auc", "val_proxy_auc_network",
                     "cv_proxy_auc_network"] = "cv_proxy_auc_network"
    loss_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # cross-entropy of the magnitude, complex, fused heads
    seed: int = 0
    num_workers: int = 0  # DataLoader workers; features come from the cache, so 0 is usually enough
    device: str = "auto"  # auto: cuda when available, else cpu
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # training steps (mimimi.precision); auto: bf16 where native
    # torch.compile of the training steps (mimimi.training.compile_decision): "auto" compiles on CPU when the run's
    # planned work repays the compile time several times over (BENCHMARKS.md measures both), never on CUDA yet
    compile: Union[bool, Literal["auto"]] = "auto"
    progress: bool = True  # tqdm bars and per-epoch lines on stderr

    def __post_init__(self) -> None:
        if len(self.loss_weights) != 3:
            raise ConfigError(f"train.loss_weights needs 3 weights (magnitude, complex, fused), got {self.loss_weights}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.segments_per_clip < 0:
            raise ConfigError(f"train.segments_per_clip must be >= 0 (0: every segment), got {self.segments_per_clip}")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ConfigError(f"train.compile must be true, false or auto, got {self.compile!r}")
        if not 0 <= self.arcface_margin < 1.5:
            raise ConfigError(f"train.arcface_margin must be in [0, 1.5) radians, got {self.arcface_margin}")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentations of training segments (complex models only), each applied per sample with its probability."""

    mixup_prob: float = 0.5  # Dirichlet mixup across machine IDs; the target is the mixing weights
    mixup_alpha: float = 0.5
    mixup_k: int = 2  # clips mixed together
    mask_prob: float = 0.25  # spectral masking: one frequency band and one time band set to 0
    mask_max_bins: int = 32
    mask_max_frames: int = 8
    noise_prob: float = 0.25  # complex Gaussian noise injection
    noise_snr_db: float = 20.0
    shift_prob: float = 0.2  # frequency shift by whole bins
    shift_max_bins: int = 4

    def __post_init__(self) -> None:
        for name in ("mixup_prob", "mask_prob", "noise_prob", "shift_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mixup_alpha <= 0:
            raise ConfigError(f"augment.mixup_alpha must be positive, got {self.mixup_alpha}")


_SCORERS = ("ce", "recon", "knn", "mahalanobis", "gmm", "knn-density", "knn-domain", "mahalanobis-domain", "stats-knn",
            "knn-stats", "fusion")


@dataclass(frozen=True)
class ScoringConfig:
    """Anomaly scoring back-ends (``mimimi.scoring.fitted``), fitted per machine ID on the training normals.

    ``ce`` is the paper's cross-entropy against the clip's own ID (classifiers), ``recon`` the autoencoder's
    reconstruction error; ``knn``, ``mahalanobis`` and ``gmm`` score the clip's embedding against its ID's
    training embeddings; ``knn-density`` normalises kNN by each reference's local density; ``knn-domain`` and
    ``mahalanobis-domain`` keep each domain's references apart (DCASE 2021+: the smaller distance wins);
    ``stats-knn`` is kNN on the clip's log-mel statistics (no network); ``knn-stats`` and ``fusion`` combine. Evaluation reports all of them. ``scorer`` is what decisions use: ``default``
    lets validation choose among ``candidates`` (``mimimi.scoring.objective``; ``knn-stats`` where nothing was
    chosen), a name fixes it.
    """

    scorer: Literal["default", "ce", "recon", "knn", "mahalanobis", "gmm", "knn-density", "knn-domain",
                    "mahalanobis-domain", "stats-knn", "knn-stats", "fusion"] = "default"
    candidates: tuple[str, ...] = ()  # the back-ends validation chooses among; empty: every one of the kind
    knn_k: int = 1  # nearest training embeddings averaged (cosine distance)
    density_k: int = 16  # knn-density: a reference's typical distance = the mean to its density_k nearest others
    gmm_components: int = 2  # diagonal-covariance Gaussians per machine ID
    mahalanobis_shrinkage: Union[float, Literal["ledoit-wolf"]] = "ledoit-wolf"
    fusion: Literal["mean", "min"] = "mean"  # how `fusion` combines the z-normalised back-ends
    folds: int = 5  # cross-fitting: each clip scored by back-ends fitted on the other folds of its ID
    aggregate: Literal["mean", "max"] = "mean"  # segment scores -> clip score (ce, recon)
    threshold_method: Literal["gamma", "empirical"] = "gamma"  # fitted to normal validation scores only
    threshold_quantile: float = 0.9  # of the normal scores: about 10 % of new normal clips flagged
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # the network's scoring passes (validation too)

    def __post_init__(self) -> None:
        if self.knn_k < 1 or self.gmm_components < 1 or self.folds < 2 or self.density_k < 1:
            raise ConfigError("scoring.knn_k and scoring.gmm_components must be >= 1, scoring.folds >= 2")
        if not 0 < self.threshold_quantile < 1:
            raise ConfigError(f"scoring.threshold_quantile must be in (0, 1), got {self.threshold_quantile}")
        if bad := [c for c in self.candidates if c not in _SCORERS]:
            raise ConfigError(f"scoring.candidates: unknown back-end(s) {bad}; known: {list(_SCORERS)}")


@dataclass(frozen=True)
class ValidationConfig:
    """The leak-free objective (``mimimi.scoring.objective``): the type's normal training clips against proxy
    outliers, never a test clip. Proxies: ``mimimi.data.corrupt`` corruptions of some of those clips, and
    normal clips of the other machine types under the data root."""

    proxy_kinds: tuple[str, ...] = ("tone", "impulses", "tilt", "stretch")
    severity: float = 0.5
    other_types: int = 4  # normal clips per other machine type used as proxies (0: none)
    max_clips_per_id: int = 8  # clips per ID that get corrupted, held-out ones first (memory: 1.3 MB per STFT)
    # validation clips per ID each epoch (all held-out ones, then a seeded sample), and the clips whose
    # cross-fitted scores set the thresholds: bounds validation's share of an epoch and the back-ends' fitting
    # at any data size; the best checkpoint's back-ends are refitted on every clip at the end (finalize)
    max_references_per_id: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.other_types < 0 or self.max_clips_per_id < 1 or self.max_references_per_id < 2:
            raise ConfigError("validation.other_types must be >= 0, validation.max_clips_per_id >= 1 and "
                              "validation.max_references_per_id >= 2")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` where that is lossless, else raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where} must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _check_type(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where} must be null, got {value!r}")
        return None
    if isinstance(tp, type):
        if isinstance(value, bool) and tp is not bool:
            raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(f"{where} must be {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported schema type {tp}")


def merge(base: Any, overrides: dict[str, Any], where: str = "") -> Any:
    """Return a copy of dataclass ``base`` with ``overrides`` applied, recursively and strictly."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {overrides!r}")
    fields = {f.name: f for f in dataclasses.fields(base)}
    hints = typing.get_type_hints(type(base))
    changes = {}
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"unknown key {path!r} (known: {', '.join(fields)})")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, path)
        else:
            changes[key] = _check_type(value, hints[key], path)
    try:
        return dataclasses.replace(base, **changes)
    except (ConfigError, ValueError) as e:  # a __post_init__ check of the schema
        raise ConfigError(f"{where}: {e}" if where and not isinstance(e, ConfigError) else str(e)) from None


def load_config(*paths: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then each YAML file in order, then ``overrides``."""
    cfg = Config()
    for p in paths:
        p = Path(p)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        try:
            cfg = merge(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    if overrides:
        cfg = merge(cfg, overrides)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved tree as plain YAML/JSON-able data."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
