"""The rehearsal's own stage code and readers: what runs inside a measured subprocess where no MIMIMI command
does the job (synthesising the set, the training DataLoader's delivery, the pyfunc model's load), and what
reads a finished search back (its trials from Tune's ``result.json`` files, its disk, its MLflow artifacts),
with the GPU estimate the delivery is compared with.

``python -c`` runs a stage function (``bench.rehearsal.stage_command``); each returns a dict, printed as the
last line of its stdout.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bench.rehearsal_measure import du_bytes

MIB = 2**20

# ---------------------------------------------------------------------------------------------- the GPU side
# What one A10G-class GPU trains at, from the network's forward FLOPs per segment (mimimi.nn.forward_flops).
# Sources: NVIDIA A10 Tensor Core GPU datasheet (the A10G of AWS g5 instances is the same GA102 chip; NVIDIA
# publishes no separate A10G datasheet; Baseten, "NVIDIA A10 vs A10G for ML model inference", compares them:
# a little more CUDA-core and less tensor-core throughput on the A10G): FP32 31.2 TFLOPS (CUDA cores), BF16
# tensor 125 TFLOPS dense. A training step costs about 3x the forward FLOPs (the backward pass about twice the
# forward: Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1, C ~ 6N = 3 x 2N).
# Fractions of peak reached: assumptions, stated in the report: complex convolutions as real cuDNN
# convolutions at batch 32 with batch norm and PReLU passes between them (memory-bound on a 600 GB/s card).
GPU = {
    "name": "NVIDIA A10G class (Ampere GA102, 24 GB GDDR6, 600 GB/s)",
    "source": ("NVIDIA A10 Tensor Core GPU datasheet (FP32 31.2 TFLOPS, BF16 tensor 125 TFLOPS dense); the A10G "
               "is the same GA102 chip with less tensor-core throughput (Baseten, \"NVIDIA A10 vs A10G for ML "
               "model inference\"), so its bf16 fraction below is set low"),
    "training_flops_per_forward": 3.0,
    "training_flops_source": "Kaplan et al. 2020, Scaling Laws for Neural Language Models, section 2.1 (C = 6N)",
    "precisions": {
        "fp32": {"peak_tflops": 31.2, "fraction": 0.30},
        "bf16": {"peak_tflops": 125.0, "fraction": 0.10},
    },
}


def gpu_training_rates(forward_flops: float) -> dict[str, float]:
    """Segments per second one A10G-class GPU trains at, per precision (``GPU``'s peaks and fractions).

    >>> {k: round(v) for k, v in gpu_training_rates(2.35e9).items()}
    {'fp32': 1328, 'bf16': 1773}
    """
    step = GPU["training_flops_per_forward"] * forward_flops
    return {p: v["fraction"] * v["peak_tflops"] * 1e12 / step for p, v in GPU["precisions"].items()}


# ---------------------------------------------------------------------------------------------- stages
def synthesise(root: str, score_root: str, machine_types: list[str], ids: list[str], train: int, test_normal: int,
               test_anomaly: int, seconds: float, score_files: int, workers: int, seed: int = 0) -> dict[str, Any]:
    """The rehearsal's set (``mimimi.data.synth.generate``, DCASE 2020 layout) and, beside it, a flat folder of
    ``score_files`` clips for ``mimimi score`` (the same generator, another seed, test clips of every ID)."""
    from mimimi.data import synth

    start = time.perf_counter()
    written = synth.generate(root, machine_types=machine_types, ids=ids, n_train=train, n_test_normal=test_normal,
                             n_test_anomaly=test_anomaly, seconds=seconds, seed=seed, workers=workers)
    set_s = time.perf_counter() - start
    per_id = math.ceil(score_files / len(ids))
    scratch = Path(score_root).with_name(Path(score_root).name + "-scratch")
    made = synth.generate(scratch, machine_types=machine_types[:1], ids=ids, n_train=1,
                          n_test_normal=math.ceil(per_id / 2), n_test_anomaly=per_id // 2 + 1, seconds=seconds,
                          seed=seed + 1, workers=workers)
    tests = sorted((p for p in made if p.parent.name == "test"), key=lambda p: (p.name.split("_")[-1], p.name))
    out = Path(score_root)
    out.mkdir(parents=True, exist_ok=True)
    for p in tests[:score_files]:  # names keep the ID (normal_id_02_00000003.wav): mimimi score reads it
        p.rename(out / p.name)
    for p in scratch.rglob("*"):
        if p.is_file():
            p.unlink()
    for d in sorted(scratch.rglob("*"), reverse=True) + [scratch]:
        d.rmdir()
    return {"clips": len(written), "score_files": min(score_files, len(tests)), "set_s": set_s,
            "score_folder_s": time.perf_counter() - start - set_s}


def _train_dataset(data_root: str, machine_type: str, configs: list[str]):
    """The training dataset of one run, as ``mimimi.training.prepare`` and ``_loader`` build it (without the
    validation set-up): (config as it runs, kind, dataset, sampler, classes)."""
    import pandas as pd

    from mimimi import kinds
    from mimimi.config import load_config
    from mimimi.data.index import index_dataset
    from mimimi.features import FeatureCache, cache_dir_for
    from mimimi.training import (class_map, class_names, make_sampler, other_type_proxies, split_train_val,
                                 training_clips)

    cfg = load_config(*configs, overrides={"data": {"root": data_root}, "train": {"machine_type": machine_type}})
    kind, t = kinds.of(cfg), cfg.train
    index = index_dataset(data_root).clips
    clips = training_clips(cfg, index)
    classes = class_map(cfg, clips, index, other_type_proxies(cfg, index))
    cfg = kind.resolve(cfg, len(classes.names))
    train_clips, _ = split_train_val(clips, t.val_fraction, t.seed)
    named = train_clips.assign(machine_id=class_names(train_clips, t.attributes))
    cache = FeatureCache(cache_dir_for(data_root, cfg.data.cache_dir), cfg.features)
    class_of = {n: i for i, n in enumerate(classes.names)}
    ds = kind.train_dataset(cfg, pd.concat([named, classes.pool], ignore_index=True), cache, class_of)
    return cfg, kind, ds, make_sampler(cfg, kind, ds, len(classes.names)), classes, len(train_clips)


def delivery(data_root: str, machine_type: str, num_workers: list[int], configs: list[str] = (),
             torch_threads: int = 1) -> dict[str, Any]:
    """Segments per second the training DataLoader delivers from the feature cache, two whole epochs per
    ``num_workers`` value (worker start included, as every epoch pays it: the loader's workers are not
    persistent): the first with the cache's pages dropped from the OS page cache (``drop_pages``: every entry
    read from disk, as a node's first epoch, or every epoch where the cache is larger than the node's memory),
    the second right after it (the pages it read still in memory: later epochs where the cache fits), so no
    setting inherits pages an earlier one read; the augmentations the training loop then applies in the
    training process, timed alone; and the network's forward FLOPs per segment with the GPU estimate they give.
    ``torch_threads``: the training process's intra-op threads (a Ray Train worker gets its CPUs as
    ``OMP_NUM_THREADS``; more threads than free cores make torch's parallel regions wait on descheduled threads,
    many times slower). Cost: two epochs of reads per ``num_workers`` value, linear in the training clips."""
    import torch
    from torch.utils.data import DataLoader

    from mimimi import augment
    from mimimi.features import cache_dir_for
    from mimimi.nn import forward_flops

    torch.set_num_threads(torch_threads)
    start = time.perf_counter()
    cfg, kind, ds, sampler, classes, n_clips = _train_dataset(data_root, machine_type, list(configs))
    t, f = cfg.train, cfg.features
    dataset_s = time.perf_counter() - start
    rows, cache_dir = [], cache_dir_for(data_root, cfg.data.cache_dir)
    for w in num_workers:
        loader = DataLoader(ds, batch_size=t.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=w,
                            generator=torch.Generator().manual_seed(t.seed), drop_last=len(ds) > t.batch_size)
        dropped = drop_pages(cache_dir)
        cold = _epoch(loader)
        rows.append({"num_workers": w, **_epoch(loader), "pages_dropped": dropped,
                     "cold_epoch_s": cold["epoch_s"], "cold_segments_per_s": cold["segments_per_s"]})
    # the training loop's augmentations (mimimi.training._augment), in the training process, on real batches
    g, n_ids, a = torch.Generator().manual_seed(t.seed), len(classes.names), cfg.augment
    batches = []
    for i, (x, y) in enumerate(DataLoader(ds, batch_size=t.batch_size, shuffle=False)):
        batches.append((x, y))
        if i >= 9:
            break
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for x, y in batches:
        x = augment.spectral_mask(x, a.mask_prob, a.mask_max_bins, a.mask_max_frames, g)
        x = augment.add_noise(x, a.noise_prob, a.noise_snr_db, g)
        x = augment.frequency_shift(x, a.shift_prob, a.shift_max_bins, g)
        augment.dirichlet_mixup(x, y, n_ids, a.mixup_prob, a.mixup_alpha, a.mixup_k, g)
        n += len(x)
    augment_rate, augment_cpu_rate = n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)
    flops = forward_flops(kind.build(cfg, n_ids), (1, 1, f.n_freq, f.segment_frames)) if kind.classifier else None
    return {"train_clips": n_clips, "items": len(ds), "segments_per_clip": len(ds) / max(n_clips, 1),
            "batch_size": t.batch_size, "dataset_s": dataset_s, "loader": rows,
            "augment_segments_per_s": augment_rate, "augment_segments_per_cpu_s": augment_cpu_rate,
            "torch_threads": torch.get_num_threads(),
            "forward_flops_per_segment": flops, "segment_shape": [1, f.n_freq, f.segment_frames]}


def _epoch(loader) -> dict[str, Any]:
    """One pass over ``loader``: its segments, wall time, first batch's wait, and rates."""
    t0 = time.perf_counter()
    first, n, n_first = None, 0, 0
    for x, _ in loader:
        n += len(x)
        if first is None:
            first, n_first = time.perf_counter() - t0, len(x)
    wall = time.perf_counter() - t0
    return {"segments": n, "epoch_s": wall, "first_batch_s": first,
            "segments_per_s": n / wall if wall > 0 else math.nan,
            "after_first_batch_segments_per_s": (n - n_first) / (wall - first) if n > n_first else math.nan}


def drop_pages(folder: Path) -> bool:
    """Ask the OS to drop the pages of every ``.npy`` file (cache entry) under ``folder`` from its page cache
    (``posix_fadvise`` DONTNEED: clean pages only, no privileges needed); False where the platform cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in folder.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def load_pyfunc(tracking_uri: str, model_uri: str) -> dict[str, Any]:
    """``mlflow.pyfunc.load_model`` of a registered model through ``Tracker.load_pyfunc``: import and load
    times, in this (fresh) process."""
    start = time.perf_counter()
    from mimimi.tracking import Tracker

    imported = time.perf_counter()
    model = Tracker(tracking_uri, create=False).load_pyfunc(model_uri)
    loaded = time.perf_counter()
    return {"model_uri": model_uri, "import_s": imported - start, "load_s": loaded - imported,
            "loaded": type(model).__name__}


# ---------------------------------------------------------------------------------------------- readers
def search_ids(output: str) -> dict[str, Any]:
    """The parent run and registered version a search printed (``tuning.search.summarize``), and its lines
    about the space (keys left out) and concurrency.

    >>> search_ids("fan: train.classes left out: one type\\nfan: 2 trials (0 errored), parent run ab12, "
    ...            "registered mimimi-fan v3\\n")
    {'parent_run_id': 'ab12', 'model_version': 3, 'notes': ['fan: train.classes left out: one type']}
    """
    m = re.search(r"parent run (\w+), registered mimimi-\S+ v(\d+)", output)
    notes = [ln.strip() for ln in output.splitlines() if any(w in ln for w in (" left out: ", "at a time", "at once"))]
    return {"parent_run_id": m[1] if m else None, "model_version": int(m[2]) if m else None, "notes": notes}


def trials(storage: Path, name: str, machine_type: str) -> list[dict[str, Any]]:
    """Each trial of a finished search from Tune's ``result.json`` (one JSON object per report), split as
    ``bench.ray_overhead.trial_breakdown`` splits it, with its sampled values and the disk it took: Tune's
    trial folder (results) and the Train run's (``train-<trial name>``: the checkpoint Tune points at)."""
    import pandas as pd

    from bench.ray_overhead import trial_breakdown

    out = []
    for result in sorted((storage / name / machine_type).glob("*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        trial_dir, trial_id = result.parent, rows[-1].get("trial_id", "?")
        train_dirs = list((storage / name).glob(f"train-*_{trial_id}"))
        out.append({
            "trial": trial_dir.name, "trial_id": trial_id, "params": rows[-1].get("config", {}), "epochs": len(rows),
            **trial_breakdown(pd.DataFrame(rows)),
            "epoch_seconds": [r.get("epoch_seconds") for r in rows],
            "validation_seconds": [r.get("validation_seconds") for r in rows],  # included in epoch_seconds
            # its two parts: the network over the validation clips, the back-ends' fits and scores
            "validation_network_seconds": [r.get("validation_network_seconds") for r in rows],
            "validation_backend_seconds": [r.get("validation_backend_seconds") for r in rows],
            "tune_trial_mib": du_bytes(trial_dir) / MIB,
            "train_run_mib": sum(du_bytes(d) for d in train_dirs) / MIB,
            "checkpoint_mib": sum(du_bytes(c) for d in train_dirs for c in d.glob("checkpoint_*")) / MIB,
        })
    return out


def _local(uri: str) -> Path | None:
    parts = urlsplit(uri)
    return Path(unquote(parts.path)) if parts.scheme in ("file", "") else None


def mlflow_disk(tracking_uri: str, parent_run_id: str) -> dict[str, Any]:
    """The MLflow store's bytes after a search of one type: the sqlite file, and per run (each trial's, the
    type's parent run's, the search run's) its artifact folder and the logged models it made (MLflow 3 keeps
    those under ``<experiment>/models/m-<id>``, each ``MLmodel`` naming its run); the rest of the store."""
    from mimimi.tracking import Tracker

    tracker = Tracker(tracking_uri, create=False)
    parent = tracker.get_run(parent_run_id)
    children = tracker.child_runs(parent_run_id)
    search = tracker.get_run(parent.parent_run_id) if parent.parent_run_id else None
    db = _local(tracking_uri.replace("sqlite:///", "file:///", 1))
    root = db.parent / "artifacts" if db else None
    models: dict[str, float] = {}  # run id -> MiB of the models it logged
    for mlmodel in (root.glob("*/models/*/artifacts/MLmodel") if root else ()):
        m = re.search(r"^run_id: *(\w+)", mlmodel.read_text(errors="replace"), re.M)
        if m:
            models[m[1]] = models.get(m[1], 0.0) + du_bytes(mlmodel.parents[1]) / MIB

    def size(run) -> dict[str, float]:
        path = _local(run.artifact_uri)
        return {"artifacts_mib": du_bytes(path) / MIB if path else math.nan, "models_mib": models.get(run.run_id, 0.0)}

    out = {"db_mib": du_bytes(db) / MIB if db else math.nan, "trial_runs": [size(c) for c in children],
           "type_run": size(parent),
           "search_run": size(search) if search else {"artifacts_mib": 0.0, "models_mib": 0.0},
           "artifacts_total_mib": du_bytes(root) / MIB if root else math.nan}
    counted = sum(sum(r.values()) for r in [*out["trial_runs"], out["type_run"], out["search_run"]])
    out["other_mib"] = out["artifacts_total_mib"] - counted
    return out
