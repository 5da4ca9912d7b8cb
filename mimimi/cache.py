"""The ``mimimi cache`` command: fill the feature cache of a dataset root (every wav decoded and transformed
once), and say how big it is.

    python -m mimimi.cache --data-root DIR [--kinds stft,logmel] [--cache-dir DIR] [--config FILE] [--workers N]

The library is ``mimimi.features`` (``FeatureCache``).
"""
from __future__ import annotations

import argparse
import sys

from mimimi.config import ConfigError, load_config
from mimimi.data.audio import AudioError
from mimimi.data.index import DatasetError, index_dataset
from mimimi.features import KINDS, FeatureCache, cache_dir_for, usable_cpus


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mimimi.cache", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--cache-dir", default=None, help="default: data.cache_dir of the config, else beside the root "
                                                      "(<root>-mimimi-cache)")
    ap.add_argument("--config", action="append", default=[], help="YAML overrides (repeatable)")
    ap.add_argument("--kinds", default="stft", help="comma-separated: stft,logmel")
    ap.add_argument("--workers", type=int, default=None,
                    help=f"processes that decode and transform (default: every usable core, {usable_cpus()} here)")
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error(f"--workers must be >= 1, got {args.workers}")
    kinds = [k for k in args.kinds.split(",") if k]
    if bad := [k for k in kinds if k not in KINDS]:
        ap.error(f"unknown feature kind(s) {bad}; choose from {list(KINDS)}")
    try:
        cfg = load_config(*args.config)
        idx = index_dataset(args.data_root)
        cache = FeatureCache(cache_dir_for(args.data_root, args.cache_dir or cfg.data.cache_dir), cfg.features)
        n = cache.warm(idx.clips.path, kinds, workers=args.workers)
    except (ConfigError, DatasetError, AudioError) as e:
        sys.exit(f"error: {e}")
    size = cache.size_bytes() / 2**20
    print(f"{len(idx.clips)} clips, {n} newly featurized, cache {cache.cache_dir} = {size:.1f} MiB")


if __name__ == "__main__":
    main()
