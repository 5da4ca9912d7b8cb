"""Search configs: a typed schema for ``configs/search/*.yaml`` and its translation to Ray Tune.

A search config has five sections::

    search:    budget, metric, ASHA and Optuna settings (SearchSettings)
    resources: per-trial Ray resources (Resources)
    space:     {dotted config key: {type: loguniform|uniform|choice|randint, low/high | values}}
    config:    overrides of the MIMIMI config tree applied to every trial
    synthetic: the dataset to generate when the search has no --data-root (SyntheticData; embedded.yaml
               and smoke.yaml set it)

``configs/search/base.yaml`` is read first, then ``configs/search/<machine type>.yaml`` when it exists,
then any ``--search-config`` files. Unknown keys (also dotted keys that are not in the MIMIMI config
tree) are errors.

>>> p = Param(type="loguniform", low=1e-5, high=1e-2)
>>> p.sample_value()
1e-05
>>> nest({"train.lr": 0.1, "augment.mixup_prob": 0.5})
{'train': {'lr': 0.1}, 'augment': {'mixup_prob': 0.5}}
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mimimi.config import Config, ConfigError, merge, to_dict
from mimimi.data.dcase import layout_of

SEARCH_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "search"


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    type: Literal["loguniform", "uniform", "choice", "randint"]
    low: Union[float, None] = None
    high: Union[float, None] = None
    values: Union[tuple[Any, ...], None] = None

    def __post_init__(self) -> None:
        if self.type == "choice":
            if not self.values:
                raise ConfigError("a choice needs a non-empty 'values' list")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ConfigError(f"a {self.type} needs low < high, got low={self.low} high={self.high}")
            if self.type == "loguniform" and self.low <= 0:
                raise ConfigError(f"a loguniform needs low > 0, got {self.low}")

    def sample_value(self) -> Any:
        """A value inside the space, used to check the key against the config schema."""
        if self.type == "choice":
            return self.values[0]
        return int(self.low) if self.type == "randint" else self.low

    def to_tune(self):
        from ray import tune

        if self.type == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        if self.type == "randint":
            return tune.randint(int(self.low), int(self.high))
        return tune.choice(list(self.values))


@dataclass(frozen=True)
class SearchSettings:
    num_samples: int = 20  # trials per machine type
    max_concurrent: int = 2  # trials at once; Tune does not reserve the workers' resources, so cap it here
    # normal training clips vs proxy outliers, scored by the back-end validation chose (mimimi.scoring.objective);
    # never the test split. cv_proxy_auc (cross-fitted, every clip), val_proxy_auc (held-out clips) or val_loss
    metric: str = "cv_proxy_auc_network"
    tie_break: str = "val_loss"  # trials tied on the metric: the lower value of this at their best epoch wins
    mode: Literal["min", "max"] = "max"
    seed: int = 0  # Optuna TPE sampler seed
    grace_period: int = 5  # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: int = 2
    max_failures: int = 2  # a crashing trial is retried this many times
    time_budget_s: Union[float, None] = None  # stop starting new trials after this many seconds


@dataclass(frozen=True)
class Resources:
    workers: int = 1  # Ray Train workers per trial (DDP when > 1)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # used only when the cluster has GPUs
    trial_cpus: float = 0.25  # the trial's own driver function (it builds and waits on the TorchTrainer)


@dataclass(frozen=True)
class SearchConfig:
    search: SearchSettings = field(default_factory=SearchSettings)
    resources: Resources = field(default_factory=Resources)
    space: dict = field(default_factory=dict)  # dotted key -> Param
    config: dict = field(default_factory=dict)  # MIMIMI config overrides for every trial
    synthetic: "SyntheticData | None" = None  # generated when there is no --data-root


@dataclass(frozen=True)
class SyntheticData:
    """The synthetic MIMII-like set (``mimimi.data.synth.generate``'s arguments) a search without
    ``--data-root`` trains on."""

    machine_types: tuple[str, ...] = ("fan", "pump", "slider", "valve")
    ids: tuple[str, ...] = ("00", "02", "04", "06")
    n_train: int = 12  # normal training clips per ID
    n_test_normal: int = 8
    n_test_anomaly: int = 8
    seconds: float = 5.0
    seed: int = 0
    # the DCASE layout: dcase2020 (machine IDs), dcase2021 or dcase2022 (ids are sections; a target domain
    # with n_target_train clips per section, shifted by domain_shift: mimimi.data.synth); a year stands for its
    # layout (dcase2023 -> dcase2022, as mimimi.data.dcase.layout_of; stored as the layout)
    layout: str = "dcase2020"
    n_target_train: Union[int, None] = None  # None: the layout's default (3 for 2021, 10 for 2022-2025)
    domain_shift: Union[float, None] = None  # None: the synthesizer's default

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "layout", layout_of(self.layout))  # frozen: set once, here
        except ValueError as e:
            raise ConfigError(f"synthetic.layout: {e}") from None
        classes = len(self.ids) * (len(self.machine_types) if self.layout == "dcase2022" else 1)
        if not self.machine_types or classes < 2:
            raise ConfigError("synthetic needs machine_types and at least two classes for the classifier: two ids "
                              "(with layout dcase2022, whose one section per type trains with train.classes: all, "
                              "two machine types will do)")
        if min(self.n_train, self.n_test_normal, self.n_test_anomaly) < 1 or self.seconds <= 0:
            raise ConfigError("synthetic clip counts must be >= 1 and seconds > 0")


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _deep_update(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a search config must be a mapping")
    unknown = set(data) - {"search", "resources", "space", "config", "synthetic"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)} (known: search, resources, space, config, "
                          "synthetic)")
    return data


def load_search_config(machine_type: str, extra: list[str | Path] = (), directory: Path = SEARCH_CONFIGS) -> SearchConfig:
    """base.yaml, then <machine_type>.yaml if present, then ``extra`` files; strictly checked."""
    paths = [directory / "base.yaml"]
    if (directory / f"{machine_type}.yaml").exists():
        paths.append(directory / f"{machine_type}.yaml")
    paths += [Path(p) for p in extra]
    raw: dict = {}
    for p in paths:
        if not p.exists():
            raise ConfigError(f"{p}: search config not found")
        try:
            raw = _deep_update(raw, _read(p))
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}" if str(p) not in str(e) else str(e)) from None
    return parse(raw)


def parse(raw: dict) -> SearchConfig:
    base = SearchConfig()
    settings = merge(base.search, raw.get("search", {}), "search")
    resources = merge(base.resources, raw.get("resources", {}), "resources")
    space = {}
    for key, spec in (raw.get("space") or {}).items():
        if spec is None:  # a per-type file may drop a dimension with `key: null`
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"space.{key} must be a mapping like {{type: uniform, low: 0, high: 1}}")
        try:
            param = merge(Param(type="choice", values=(0,)), {"values": None, **spec}, f"space.{key}")
        except ConfigError as e:
            raise ConfigError(f"space.{key}: {e}") from None
        space[key] = param
    overrides = raw.get("config") or {}
    check = merge(Config(), overrides)  # unknown config keys raise here
    for key, param in space.items():
        try:
            merge(check, nest({key: param.sample_value()}))
        except ConfigError as e:
            raise ConfigError(f"space.{key} is not a setting of the MIMIMI config ({e})") from None
    if settings.mode not in ("min", "max"):
        raise ConfigError(f"search.mode must be min or max, got {settings.mode}")
    synthetic = merge(SyntheticData(), raw["synthetic"], "synthetic") if raw.get("synthetic") else None
    return SearchConfig(settings, resources, space, overrides, synthetic)


def apply_params(base: Config, params: dict[str, Any]) -> Config:
    """The config of one trial: ``base`` with Tune's sampled ``params`` (``{dotted key: value}``) applied."""
    return merge(base, nest(params))


def trial_config(base: Config, params: dict[str, Any]) -> dict:
    """The config tree of one trial as plain data (``best_config.json``): ``apply_params`` as a dict."""
    return to_dict(apply_params(base, params))


def prune_space(scfg: SearchConfig, base: Config, machine_types: int, attributes: bool) -> tuple[SearchConfig, list[str]]:
    """The search space without keys that cannot change anything on the data at hand, and one line per key
    left out: ``train.classes`` where the data holds one machine type (``all`` then trains the same classes as
    ``type``), ``train.attributes`` where no training clip has attributes, the ArcFace settings where no trial
    can use the ArcFace head. A space that this leaves empty runs one trial: the others would repeat it.

    >>> scfg = parse({"space": {"train.classes": {"type": "choice", "values": ["type", "all"]}}})
    >>> pruned, why = prune_space(scfg, Config(), machine_types=1, attributes=False)
    >>> list(pruned.space), why[0].split(":")[0], pruned.search.num_samples, why[1].split(":")[0]
    ([], 'train.classes left out', 1, '1 trial, not 20')
    """
    space, notes = dict(scfg.space), []

    def drop(keys: list[str], why: str) -> None:
        if gone := [k for k in keys if k in space]:
            for k in gone:
                space.pop(k)
            notes.append(f"{', '.join(gone)} left out: {why}")

    if machine_types < 2:
        drop(["train.classes"], "the data holds one machine type, so 'all' trains the same classes as 'type'")
    if not attributes:
        drop(["train.attributes"], "no training clip has attributes")
    heads = set(space["model.net.head"].values) if "model.net.head" in space else {base.model.net.head}
    if "arcface" not in heads:
        drop(["model.net.arcface_scale", "train.arcface_margin"], f"no trial uses the ArcFace head ({', '.join(heads)})")
    search = scfg.search
    if not space and scfg.space and search.num_samples > 1:  # every trial would train the same settings
        search = replace(search, num_samples=1)
        notes.append(f"1 trial, not {scfg.search.num_samples}: nothing is left to search, so every trial would "
                     "train the same settings")
    return SearchConfig(search, scfg.resources, space, scfg.config, scfg.synthetic), notes
