"""The plan of a search and its data: ``make_plan`` turns the arguments and the search YAMLs into a frozen
``Plan`` (nothing read from the data or the stores, nothing written); ``prepare_data`` makes the synthetic set
when the plan needs one and checks the machine types; ``warm_cache`` fills the feature cache once before the
trials start.
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mimimi import kinds
from mimimi.config import Config, load_config, merge
from mimimi.data import synth
from mimimi.data.index import index_dataset, select
from mimimi.features import FeatureCache, cache_dir_for
from tuning.interrupts import SearchError
from tuning.space import SEARCH_CONFIGS, SearchConfig, SyntheticData, load_search_config

FIRST_SHOT = "first-shot"  # the Tune experiment, state entry and run names of a first-shot search


@dataclass(frozen=True)
class Plan:
    """Everything a search will do, decided from the arguments and the search YAMLs; nothing is read from
    the data or the stores, nothing is written (``make_plan``)."""

    storage: str  # --storage-path: an absolute local folder or a URI (s3://…)
    search_configs: tuple[str, ...]  # search YAMLs after base and per-type (smoke/embedded first)
    data_root: str
    synthetic: SyntheticData | None  # generated at data_root when absent
    regenerate: bool  # the embedded default: also when data_root was made with other settings
    machine_types: tuple[str, ...] | None  # None: every type under data_root
    configs: tuple[str, ...] = ()  # --config: MIMIMI YAMLs for every trial
    num_samples: int | None = None
    max_concurrent: int | None = None
    smoke_test: bool = False
    name: str | None = None  # None: a new search-<date>-<time>, or with resume the latest one
    resume: bool = False
    tracking_uri: str | None = None  # None: the resumed search's, else Tracker's default
    experiment: str = "mimimi"
    address: str | None = None
    num_cpus: float | None = None
    use_gpu: bool = False
    verbose: bool = False
    first_shot: bool = False  # one configuration for every type: no per-type search YAML, no per-type tuning
    fixed: bool = False  # no search: one trial of the configuration as given (with first_shot: the train mode)

    def type_config(self, machine_type: str) -> tuple[SearchConfig, Config]:
        """The search settings and the trials' base config of one machine type (first-shot: the per-type
        search YAMLs are not read, so every type gets the same settings and space)."""
        scfg = load_search_config("" if self.first_shot else machine_type, list(self.search_configs))
        settings = {k: v for k, v in (("num_samples", self.num_samples), ("max_concurrent", self.max_concurrent))
                    if v}
        if self.fixed:
            scfg, settings = replace(scfg, space={}), {**settings, "num_samples": 1}
        if settings:
            scfg = replace(scfg, search=merge(scfg.search, settings))
        base = load_config(*self.configs, overrides=scfg.config)
        cache = str(cache_dir_for(self.data_root, base.data.cache_dir))  # absolute: Tune moves each trial's cwd
        return scfg, merge(base, {"data": {"root": self.data_root, "cache_dir": cache},
                                  "train": {"machine_type": machine_type, "progress": False,
                                            **monitor_for(scfg.search.metric)}})


def monitor_for(metric: str) -> dict:
    """``train.monitor`` for a search ``metric``: the trials keep their best checkpoint by what the search
    compares them on (a metric that is not a validation figure leaves ``train.monitor`` as configured).

    >>> monitor_for("val_loss"), monitor_for("fan/cv_proxy_auc")
    ({'monitor': 'val_loss'}, {})
    """
    return {"monitor": metric} if metric in ("cv_proxy_auc", "val_proxy_auc", "val_loss", "cv_proxy_auc_network",
                                             "val_proxy_auc_network") else {}


def make_plan(args: argparse.Namespace) -> Plan:
    storage = args.storage_path if "://" in args.storage_path else str(Path(args.storage_path).resolve())
    first = []
    if args.smoke_test:
        first.append(str(SEARCH_CONFIGS / "smoke.yaml"))  # next to the package: `ray submit` copies this file
    elif not args.data_root:  # the embedded default: synthetic data and a laptop-sized budget
        first.append(str(SEARCH_CONFIGS / "embedded.yaml"))
    if args.first_shot:  # (type, section) classes; without --data-root, synthetic data in the 2023 layout
        first.append(str(SEARCH_CONFIGS / "first_shot.yaml"))
    extra = first + list(args.search_config)
    synthetic = None if args.data_root else load_search_config("", extra).synthetic
    if not args.data_root and synthetic is None:
        raise SearchError(f"no --data-root, and the search configs {extra} give no synthetic: set")
    suffix = "-first-shot" if args.first_shot else ""  # its own synthetic set (the 2023 layout)
    if args.data_root:
        data_root = str(Path(args.data_root).resolve())
    elif args.smoke_test:
        data_root = (str(Path(storage) / f"smoke-data{suffix}") if "://" not in storage
                     else str(Path(f"runs/smoke-data{suffix}").resolve()))
    else:
        data_root = str(Path(f"data/synthetic{suffix}").resolve())
    return Plan(storage=storage, search_configs=tuple(extra), data_root=data_root, synthetic=synthetic,
                regenerate=synthetic is not None and not args.smoke_test,
                machine_types=tuple(args.machine_types.split(",")) if args.machine_types else None,
                configs=tuple(args.config), num_samples=args.num_samples, max_concurrent=args.max_concurrent,
                smoke_test=args.smoke_test, name=args.name, resume=args.resume, tracking_uri=args.tracking_uri,
                experiment=args.experiment, address=args.address, num_cpus=args.num_cpus, use_gpu=args.use_gpu,
                verbose=args.verbose, first_shot=args.first_shot, fixed=args.fixed)


def prepare_data(plan: Plan) -> tuple[str, ...]:
    """Generate the plan's synthetic set when it is absent (or, for the embedded default, stale); return the
    machine types to search (the plan's, each checked to have clips)."""
    root = Path(plan.data_root)
    if plan.synthetic is not None:
        spec_file = root / ".spec.json"  # dot files are not indexed
        wanted = json.dumps(asdict(plan.synthetic), sort_keys=True)
        stale = plan.regenerate and root.exists() and (not spec_file.is_file() or spec_file.read_text() != wanted)
        if stale:
            print(f"{root} was generated with other settings: regenerating it")
            shutil.rmtree(root)
        if not root.exists():
            print(f"generating the synthetic dataset into {root} …")
            synth.generate(str(root), **asdict(plan.synthetic), workers=2)
            spec_file.write_text(wanted)
    found = sorted(set(index_dataset(root).clips.machine_type))
    types = plan.machine_types or tuple(found)
    if missing := [t for t in types if t not in found]:
        raise SearchError(f"{root}: no clips of machine type(s) {missing} (found {found})")
    return tuple(types)


def warm_cache(base: Config, clips, machine_type: str | None, progress: bool) -> None:
    """Decode and transform the training clips once, in the driver, instead of in every trial at once (of
    every type when a trial may train on all of them: ``machine_type`` None)."""
    train = select(clips, machine_type=machine_type, split="train")
    cache = FeatureCache(cache_dir_for(base.data.root, base.data.cache_dir), base.features)
    cache.warm(train.path, kinds=kinds.of(base).features, progress=progress)
