"""``python -m mimimi.synth --out DIR ...`` (also ``mimimi synth``): write a SYNTHETIC MIMII-like dataset with
:func:`mimimi.data.synth.generate` and print a one-line summary; errors end in one ``error:`` line.

``--layout`` takes the generator's layouts (``dcase2020``, ``dcase2021``, ``dcase2022``) or a DCASE year, which
stands for the layout its files have (``mimimi.data.dcase.layout_of``: ``dcase2023`` .. ``dcase2025`` write
``dcase2022``), so a command that names the year it imitates keeps working.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

from mimimi.data import dcase
from mimimi.data.synth import (ANOMALY_SETS, DEFAULT_DOMAIN_SHIFT, DEFAULT_IDS, FAILS_LIKE_REAL, LAYOUTS,
                               MACHINE_TYPES, MAX_DOMAIN_SHIFT, SAMPLE_RATE, SECTION_LAYOUTS, TARGET_SNR_DROP_DB,
                               TEMPORAL_SET, check_id, check_layout, check_type, generate, layout_defaults)


def _csv(valid: Callable[[str], str]) -> Callable[[str], list[str]]:
    def parse(s: str) -> list[str]:
        items = [p.strip() for p in s.split(",") if p.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        try:
            return [valid(p) for p in items]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _positive(kind: type) -> Callable[[str], float]:
    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {s!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be positive, got {s}")
        return v
    return parse


def _snr(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if math.isnan(v) or v == -math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of dB or inf, got {s}")
    return v


def _seed(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _shift(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not 0.0 <= v <= MAX_DOMAIN_SHIFT:
        raise argparse.ArgumentTypeError(f"must be within 0..{MAX_DOMAIN_SHIFT:g}, got {s}")
    return v


def _layout(s: str) -> str:
    """A layout the generator writes, or a year standing for its layout: ``dcase2023`` -> ``dcase2022``."""
    try:
        return check_layout(dcase.layout_of(s))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _counts(s: str) -> dict[str, int]:
    """``00=40,02=20`` -> {"00": 40, "02": 20}."""
    out: dict[str, int] = {}
    for item in (p.strip() for p in s.split(",")):
        mid, eq, v = item.partition("=")
        if not item or not eq:
            raise argparse.ArgumentTypeError(f"expected ID=COUNT pairs like 00=40,02=20, got {s!r}")
        try:
            mid = check_id(mid.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if mid in out:
            raise argparse.ArgumentTypeError(f"id {mid} given twice")
        out[mid] = _positive(int)(v.strip())
    return out


# generate() keyword -> CLI destination, for the presets
_PRESET_DESTS = {"ids": "ids", "train_counts": "train_counts", "n_train": "train", "n_test_normal": "test_normal",
                 "n_test_anomaly": "test_anomaly", "seconds": "seconds", "snr_db": "snr", "anomalies": "anomalies",
                 "seed": "seed"}
PRESETS: dict[str, dict] = {"fails-like-real": FAILS_LIKE_REAL, "temporal": TEMPORAL_SET}


def main(argv: list[str] | None = None) -> int:
    """``python -m mimimi.synth --out DIR ...``: write a synthetic dataset and print a one-line summary."""
    sections, sectioned = layout_defaults("dcase2021"), layout_defaults("dcase2022")
    ap = argparse.ArgumentParser(prog="python -m mimimi.synth",
                                 description="Write a SYNTHETIC MIMII-like dataset in a DCASE Task 2 dev layout "
                                             "(2020, 2021 or 2022-2025; scores on it say nothing about real "
                                             "recordings).")
    ap.add_argument("--out", required=True, type=Path, help="output root")
    ap.add_argument("--machine-types", type=_csv(check_type), default=list(MACHINE_TYPES),
                    help=f"comma-separated, from {','.join(MACHINE_TYPES)} (default: all)")
    ap.add_argument("--layout", type=_layout, default="dcase2020", metavar="{" + ",".join(LAYOUTS) + "}",
                    help="dcase2020 (machine IDs), dcase2021 or dcase2022 (the 2022-2025 names: sections, source "
                         "and target domains; see mimimi.data.synth); a year stands for its layout (dcase2023, "
                         "dcase2024, dcase2025: dcase2022) (default: dcase2020)")
    ap.add_argument("--ids", "--sections", dest="ids", type=_csv(check_id), default=None,
                    help=f"comma-separated two-digit IDs, or sections for dcase2021/dcase2022 (default: "
                         f"{','.join(DEFAULT_IDS)}; sections {','.join(sections[0])} for dcase2021, "
                         f"{','.join(sectioned[0])} for dcase2022)")
    ap.add_argument("--train", type=_positive(int), default=40,
                    help="normal training clips per ID (per section: source domain) (default: 40)")
    ap.add_argument("--target-train", type=_positive(int), default=None,
                    help=f"dcase2021/dcase2022: target-domain training clips per section (default: {sections[1]} "
                         f"for dcase2021, {sectioned[1]} for dcase2022)")
    ap.add_argument("--domain-shift", type=_shift, default=None,
                    help=f"dcase2021/dcase2022: the target domain runs at 1+S times the source speed, its background "
                         f"{TARGET_SNR_DROP_DB:g}*S dB louder; 0 = no shift (default: {DEFAULT_DOMAIN_SHIFT:g})")
    ap.add_argument("--test-normal", type=_positive(int), default=10,
                    help="normal test clips per ID (per section and domain) (default: 10)")
    ap.add_argument("--test-anomaly", type=_positive(int), default=10,
                    help="anomalous test clips per ID (per section and domain) (default: 10)")
    ap.add_argument("--seconds", type=_positive(float), default=10.0, help="clip length (default: 10)")
    ap.add_argument("--seed", type=_seed, default=0, help="non-negative integer (default: 0)")
    ap.add_argument("--snr", type=_snr, default=6.0,
                    help="machine vs background, dB; inf = no background (default: 6)")
    ap.add_argument("--workers", type=_positive(int), default=min(os.cpu_count() or 1, 4),
                    help="processes; the files do not depend on it (default: CPUs, at most 4)")
    ap.add_argument("--train-counts", type=_counts, default=None, metavar="ID=N,...",
                    help="normal training clips of the IDs named, e.g. 00=40,02=20,04=3,06=3 (others: --train)")
    ap.add_argument("--anomalies", choices=list(ANOMALY_SETS), default="default",
                    help="anomaly kinds: default, off-manifold (sounds no ID makes) or temporal (changes of timing "
                         "or phase that leave the log-mel statistics as they are); see mimimi.data.synth")
    ap.add_argument("--preset", choices=list(PRESETS), default=None,
                    help="start from a recommended set (fails-like-real: FAILS_LIKE_REAL; temporal: TEMPORAL_SET, "
                         f"{TEMPORAL_SET['n_train']} training clips per ID, temporal anomalies); other options "
                         "override it")
    pre, _ = ap.parse_known_args(argv)  # the preset only changes defaults, so explicit options still win
    preset = PRESETS.get(pre.preset, {})
    ap.set_defaults(**{_PRESET_DESTS[k]: (list(v) if k == "ids" else v) for k, v in preset.items()})
    args = ap.parse_args(argv)
    if round(args.seconds * SAMPLE_RATE) < 1:
        ap.error(f"--seconds {args.seconds} is shorter than one sample")
    default_ids, default_target = layout_defaults(args.layout)
    ids = list(dict.fromkeys(args.ids or default_ids))
    counts = args.train_counts
    if counts is not None and counts is preset.get("train_counts"):
        counts = {m: v for m, v in counts.items() if m in ids}  # a preset's counts, for the IDs asked for
    unknown = sorted(set(counts or {}) - set(ids))
    if unknown:
        ap.error(f"--train-counts names id(s) {','.join(unknown)}, which are not in --ids {','.join(ids)}")
    t = time.perf_counter()
    try:
        files = generate(args.out, args.machine_types, ids, args.train, args.test_normal, args.test_anomaly,
                         args.seconds, args.seed, args.snr, args.workers, train_counts=counts,
                         anomalies=args.anomalies, layout=args.layout, n_target_train=args.target_train,
                         domain_shift=args.domain_shift)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n_train = {m: (counts or {}).get(m, args.train) for m in ids}
    train = (str(args.train) if len(set(n_train.values())) == 1 and not counts
             else ",".join(f"{m}={v}" for m, v in n_train.items()))
    kinds = "" if args.anomalies == "default" else f", {args.anomalies} anomalies"
    took = f"({time.perf_counter() - t:.1f} s)"
    if args.layout in SECTION_LAYOUTS:
        n_target = default_target if args.target_train is None else args.target_train
        shift = DEFAULT_DOMAIN_SHIFT if args.domain_shift is None else args.domain_shift
        print(f"wrote {len(files)} synthetic clips to {args.out} ({args.layout} layout): "
              f"{','.join(dict.fromkeys(args.machine_types))} x sections {','.join(ids)} x ({train} source + "
              f"{n_target} target train, {args.test_normal} normal + {args.test_anomaly} anomaly test per domain), "
              f"domain shift {shift:g}, {args.seconds:g} s, SNR {args.snr:g} dB, seed {args.seed}{kinds} {took}")
        return 0
    print(f"wrote {len(files)} synthetic clips to {args.out}: {','.join(dict.fromkeys(args.machine_types))} x ids "
          f"{','.join(ids)} x ({train} train + {args.test_normal} normal + "
          f"{args.test_anomaly} anomaly test), {args.seconds:g} s, SNR {args.snr:g} dB, seed {args.seed}{kinds} "
          f"{took}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
