"""The default search on the full DCASE 2020 development set on ``cluster/gpu.yaml``: time and money, projected
from a rehearsal's measured costs (``bench.rehearsal``) and stated assumptions; ``bench.rehearsal_report``
renders it into REHEARSAL.md and docs/sizing.md quotes it.

What is measured (the rehearsal's largest size): segments per training clip and the network's forward FLOPs
(delivery stage), the CPU training rate and each epoch's validation split into the network's part and the
back-ends' (the trials' ``epoch_seconds``, ``validation_network_seconds``, ``validation_backend_seconds``), a
trial's fixed cost (worker start, set-up, the rest), ``mimimi evaluate``'s cost per test clip. What is
assumed (each named in ``ASSUMED`` and in the report): one GPU's training rate (``GPU`` in
``bench.rehearsal_stages``), that the validation's network part speeds up as training does on the GPU while
its back-end part runs at this CPU's speed, the instance prices, the GPU nodes' start-up, the test clips.

Cost: O(types) arithmetic; nothing here reads data.
"""
from __future__ import annotations

from typing import Any

import yaml

from bench.harness import REPO
from bench.rehearsal_stages import gpu_training_rates
from bench.report import md_table

# DCASE 2020 Task 2 development set, normal training clips per type (docs/sizing.md); 4 machine IDs each,
# test 100 normal + 100-400 anomalous clips per ID (../shared/reference/paper.md)
DCASE2020_TRAIN = {"fan": 3675, "pump": 3349, "slider": 2804, "valve": 3291}
TEST_CLIPS_PER_TYPE = (4 * 200, 4 * 500)
PRICES = {  # USD per hour, on-demand Linux, us-east-1; the region in cluster/gpu.yaml may differ a little
    "g5.xlarge": (1.006, "\"Amazon EC2 On-Demand Pricing: Instance Families, Regional Multipliers\" (2026), us-east-1, "
                         "June 2026"),
    "m5.2xlarge": (0.384, "twice m5.xlarge's $0.192 (npblue.com, \"EC2 Pricing\", us-east-1); EC2 prices a size "
                          "linearly within a family"),
}
NODE_START_S = 600  # a GPU node's launch, image pull and Ray start before its first trial (assumed)
IDLE_S = 600  # cluster/gpu.yaml's idle_timeout_minutes: the GPU nodes run this long after their last trial
ASSUMED = [
    "one GPU trains at the A10G-class estimate of the GPU data-path section (fp32, the default "
    "`train.precision`; bf16 with `precision: auto`), or at what this CPU's DataLoader delivered at the default "
    "`train.num_workers` if that is less (the augmentations run on the GPU), with the cache's pages in memory: "
    "a type's training clips take about 1.3 MB each in the STFT cache (fan's 3 675: 4.7 GB), which a "
    "g5.xlarge's 16 GiB holds after the first epoch, whose reads from disk are not projected",
    "validation's network part runs on the GPU at the ratio of the GPU's training rate to this CPU's; its "
    "back-end part (fits, cross-fitting, proxy scores) runs on the GPU node's CPU at this CPU's speed",
    "a trial's fixed cost (worker start, set-up) as measured here on CPU (an upper bound on a GPU node); the rest "
    "of its time after the epochs (mostly `finalize`'s pass of the network over every training clip) sped up "
    "like validation's network part",
    f"{NODE_START_S // 60} minutes to start the GPU nodes once per search; they stay up {IDLE_S // 60} minutes after "
    "the last trial (`idle_timeout_minutes`)",
    f"{TEST_CLIPS_PER_TYPE[0]}-{TEST_CLIPS_PER_TYPE[1]} test clips per type, evaluated on the head at this CPU's "
    "cost per clip; the machine types are searched one after the other (as `tuning/search.py` does)",
    "instance prices: " + "; ".join(f"{k} ${v:.3f}/h ({src})" for k, (v, src) in PRICES.items()),
]


def expected_epochs(grace: int, reduction: int, max_epochs: int) -> float:
    """Mean epochs per trial under ASHA when each rung keeps 1/``reduction`` of the trials reaching it
    (rungs at grace, grace x reduction, ...; the last runs to ``max_epochs``): an upper bound, as early
    stopping (``train.patience``) can end a trial sooner.

    >>> expected_epochs(5, 2, 30)
    11.25
    >>> expected_epochs(30, 2, 30)
    30.0
    """
    rungs, r = [], grace
    while r < max_epochs:
        rungs.append(r)
        r *= reduction
    edges = [0, *rungs, max_epochs]
    return sum((edges[i + 1] - edges[i]) / reduction ** i for i in range(len(edges) - 1)
               if edges[i + 1] > edges[i]) if rungs else float(max_epochs)


def _defaults() -> dict[str, Any]:
    """The default search (configs/search/base.yaml), the training config its trials run with (the config
    defaults under its overrides), and the cluster (cluster/gpu.yaml), as shipped."""
    from mimimi.config import Config, merge
    from tuning.space import load_search_config

    scfg = load_search_config("fan")
    s, train = scfg.search, merge(Config(), scfg.config).train
    cluster = yaml.safe_load((REPO / "cluster" / "gpu.yaml").read_text())
    nodes = cluster["available_node_types"]
    head = nodes[cluster["head_node_type"]]["node_config"]["InstanceType"]
    gpu = next(v for k, v in nodes.items() if k != cluster["head_node_type"])["node_config"]["InstanceType"]
    return {"trials": s.num_samples, "max_concurrent": s.max_concurrent, "grace": s.grace_period,
            "reduction": s.reduction_factor, "epochs": train.epochs, "val_fraction": train.val_fraction,
            "loader_workers": train.num_workers, "max_workers": int(cluster["max_workers"]), "head": head,
            "gpu": gpu}


def measured(res: dict[str, Any], loader_workers: int) -> dict[str, Any] | None:
    """The measured inputs from the rehearsal's largest size that has trials and a delivery result; the GPU is
    fed at the loader's rate with ``loader_workers`` (the trials' ``train.num_workers``)."""
    for size in ("full", "quarter"):
        x = res.get("sizes", {}).get(size, {})
        trials = x.get("trials") or []
        delivery = (x.get("stages", {}).get("delivery") or {}).get("result") or {}
        evaluate = x.get("stages", {}).get("evaluate")
        if not trials or not delivery.get("forward_flops_per_segment") or not evaluate:
            continue
        epochs = [(e, v, n, b) for t in trials for e, v, n, b in zip(
            t["epoch_seconds"], t.get("validation_seconds") or [], t.get("validation_network_seconds") or [],
            t.get("validation_backend_seconds") or []) if e and v and n is not None and b is not None]
        if not epochs:
            continue
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        train_s = mean([e - v for e, v, _, _ in epochs])
        return {
            "size": size, "train_clips": delivery["train_clips"], "segments_per_clip": delivery["segments_per_clip"],
            "forward_flops": delivery["forward_flops_per_segment"],
            # the loader at the default train.num_workers feeds the GPU (augmented there, not on this CPU)
            "fed_segments_per_s": next((r["segments_per_s"] for r in delivery["loader"]
                                        if r["num_workers"] == loader_workers),
                                       max(r["segments_per_s"] for r in delivery["loader"])),
            "loader": {r["num_workers"]: r["segments_per_s"] for r in delivery["loader"]},
            # the same with the cache's pages dropped (read from disk: a node's first epoch); older runs lack it
            "loader_from_disk": {r["num_workers"]: r["cold_segments_per_s"] for r in delivery["loader"]
                                 if r.get("pages_dropped")},
            "cpu_train_segments_per_s": delivery["items"] / train_s,
            "validation_network_s": mean([n for _, _, n, _ in epochs]),
            "validation_backend_s": mean([b for _, _, _, b in epochs]),
            "trial_fixed_s": mean([t["worker_start_s"] + t["setup_s"] for t in trials]),
            "trial_other_s": mean([t["other_s"] for t in trials]),  # mostly finalize: a network pass, every clip
            "evaluate_s_per_clip": evaluate["per_clip"]["wall_s"],
        }
    return None


def project(res: dict[str, Any]) -> dict[str, Any] | None:
    """Per type and in total: GPU-hours, wall hours and dollars of the default search, for fp32 and bf16
    (``None`` where the rehearsal measured too little)."""
    d = _defaults()
    m = measured(res, d["loader_workers"])
    if m is None:
        return None
    ep = expected_epochs(d["grace"], d["reduction"], d["epochs"])
    at_once = min(d["max_concurrent"], d["max_workers"])
    out = {"measured": m, "defaults": d, "expected_epochs": ep, "at_once": at_once, "assumed": ASSUMED,
           "precisions": {}}
    for precision, gpu_rate in gpu_training_rates(m["forward_flops"]).items():
        rate = min(gpu_rate, m["fed_segments_per_s"])
        speedup = rate / m["cpu_train_segments_per_s"]
        val_s = m["validation_network_s"] / speedup + m["validation_backend_s"]
        rows = {}
        for mtype, n in DCASE2020_TRAIN.items():
            train_s = n * (1 - d["val_fraction"]) * m["segments_per_clip"] / rate
            trial_s = ep * (train_s + val_s) + m["trial_fixed_s"] + m.get("trial_other_s", 0.0) / speedup
            gpu_s = d["trials"] * trial_s
            evaluate_s = [c * m["evaluate_s_per_clip"] for c in TEST_CLIPS_PER_TYPE]
            wall_s = gpu_s / at_once + sum(evaluate_s) / 2
            rows[mtype] = {"epoch_train_s": train_s, "epoch_validation_s": val_s, "trial_s": trial_s,
                           "gpu_hours": gpu_s / 3600, "wall_hours": wall_s / 3600}
        wall_h = sum(r["wall_hours"] for r in rows.values()) + NODE_START_S / 3600
        gpu_node_h = sum(r["gpu_hours"] for r in rows.values()) + at_once * (NODE_START_S + IDLE_S) / 3600
        dollars = gpu_node_h * PRICES[d["gpu"]][0] if d["gpu"] in PRICES else None
        head = wall_h * PRICES[d["head"]][0] if d["head"] in PRICES else None
        out["precisions"][precision] = {
            "gpu_segments_per_s": rate, "speedup_over_this_cpu": speedup, "types": rows, "wall_hours": wall_h,
            "gpu_node_hours": gpu_node_h, "gpu_dollars": dollars, "head_dollars": head,
            "dollars": None if dollars is None or head is None else dollars + head,
            "validation_share": sum(ep * r["epoch_validation_s"] for r in rows.values())
            / sum(ep * (r["epoch_train_s"] + r["epoch_validation_s"]) for r in rows.values())}
    return out


def render(p: dict[str, Any] | None) -> list[str]:
    """The projection's section of REHEARSAL.md."""
    md = ["", "## Projection: the default search on the DCASE 2020 development set, on cluster/gpu.yaml", ""]
    if p is None:
        return md + ["Not computed: the run measured no trial epochs with the validation split, or no delivery "
                     "or evaluation stage."]
    m, d = p["measured"], p["defaults"]
    md += [f"**A projection, not a measurement.** The default search (`configs/search/base.yaml`: "
           f"{d['trials']} trials per type, up to {d['epochs']} epochs, ASHA grace {d['grace']} and reduction "
           f"{d['reduction']}: about {p['expected_epochs']:.2f} epochs per trial; {d['max_concurrent']} trials at "
           f"once) on `cluster/gpu.yaml` ({d['head']} head, up to {d['max_workers']} {d['gpu']} GPU workers: "
           f"{p['at_once']} busy at a time), over the four MIMII types' {sum(DCASE2020_TRAIN.values()):,} "
           "training clips.", "",
           f"Measured here (the {m['size']} size, {m['train_clips']} training clips): {m['segments_per_clip']:.2f} "
           f"segments per training clip per epoch; {m['forward_flops'] / 1e9:.2f} GFLOP per segment forward; "
           f"training at {m['cpu_train_segments_per_s']:.1f} segments/s on one CPU thread; validation per epoch "
           f"{m['validation_network_s']:.1f} s in the network and {m['validation_backend_s']:.1f} s in the "
           f"back-ends; a trial's worker start and set-up {m['trial_fixed_s']:.0f} s, its time after the epochs "
           f"{m.get('trial_other_s', 0):.0f} s; `evaluate` "
           f"{1000 * m['evaluate_s_per_clip']:.0f} ms per test clip; the DataLoader fed "
           f"{m['fed_segments_per_s']:,.0f} segments/s at the default `train.num_workers` "
           f"({d['loader_workers']}; " + ", ".join(f"{v:,.0f} with {k}" for k, v in m.get("loader", {}).items())
           + " loader workers, the cache's pages in memory"
           + ("; read from disk, as in a node's first epoch: " + ", ".join(
               f"{v:,.0f} with {k}" for k, v in m["loader_from_disk"].items()) if m.get("loader_from_disk") else "")
           + ").", "", "Assumed:", ""]
    md += [f"- {a}" for a in p["assumed"]]
    rows, totals = [], []
    for precision, x in p["precisions"].items():
        for mtype, r in x["types"].items():
            rows.append([precision, mtype, DCASE2020_TRAIN[mtype], r["epoch_train_s"], r["epoch_validation_s"],
                         r["trial_s"] / 60, r["gpu_hours"], r["wall_hours"]])
        cost = ("price unknown for these instance types" if x["dollars"] is None else
                f"**${x['dollars']:,.0f}** (GPU nodes ${x['gpu_dollars']:,.0f}, head ${x['head_dollars']:,.0f})")
        totals.append(f"- {precision}: one GPU at {x['gpu_segments_per_s']:,.0f} segments/s "
                      f"({x['speedup_over_this_cpu']:.0f}x this CPU thread); **{x['wall_hours']:.1f} h** wall for the "
                      f"four types, {x['gpu_node_hours']:.1f} GPU-node hours; {cost}; validation takes "
                      f"{100 * x['validation_share']:.0f} % of the epochs' time.")
    md += ["", md_table(["precision", "machine type", "training clips", "epoch: training s", "epoch: validation s",
                         "trial min", "GPU-hours", "wall hours"], rows), ""] + totals
    return md


def load_projection(res: dict[str, Any]) -> dict[str, Any] | None:
    """The projection computed now from a rehearsal.json's measurements and the shipped configs, or the one the
    file stored where its measurements do not suffice."""
    return project(res) or res.get("projection")

