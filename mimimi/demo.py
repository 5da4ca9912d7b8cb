"""``make demo``: the embedded default, end to end on this machine.

For now: synthesize a small MIMII-like dataset (if absent) -> index it -> featurize it into the
cache -> print what was built. Later issues extend it to the tuning search.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


from mimimi.config import ConfigError, load_config
from mimimi.data import synth
from mimimi.data.audio import AudioError
from mimimi.data.dataset import ClipSegments, TrainSegments, id_map
from mimimi.data.index import DatasetError, counts, index_dataset, select
from mimimi.features import FeatureCache

# The embedded default: small enough to synthesize and featurize in well under a minute on 2 cores.
DEFAULT_SYNTH = dict(machine_types=("fan", "pump", "slider", "valve"), ids=("00", "02", "04", "06"),
                     n_train=40, n_test_normal=10, n_test_anomaly=10, seconds=10.0, seed=0, workers=2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mimimi.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", default=["configs/base.yaml"], help="YAML overrides")
    ap.add_argument("--data-root", default=None, help="default: data.root of the config (synthesized if absent)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(*args.config)
        root = Path(args.data_root or cfg.data.root)
        if not root.exists():
            t = time.perf_counter()
            files = synth.generate(root, **DEFAULT_SYNTH)
            print(f"synthesized {len(files)} clips into {root} in {time.perf_counter() - t:.1f} s")
        idx = index_dataset(root)
        clips = idx.clips
        print(f"\n{len(clips)} clips under {root}" + (f" ({len(idx.unmatched)} other files)" if idx.unmatched else ""))
        print(counts(clips).to_string())

        cache = FeatureCache(cfg.data.cache_dir, cfg.features)
        t = time.perf_counter()
        n = cache.warm(clips.path, kinds=("stft", "logmel"))
        print(f"\nfeaturized {n} new entries in {time.perf_counter() - t:.1f} s; "
              f"cache {cache.cache_dir} holds {cache.size_bytes() / 2**20:.1f} MiB")
    except (ConfigError, DatasetError, AudioError) as e:
        sys.exit(f"error: {e}")

    first = clips.iloc[0]
    mtype = select(clips, machine_type=first.machine_type)
    ids = id_map(mtype)
    stft = cache.get(first.path, "stft")
    logmel = cache.get(first.path, "logmel")
    x, y = TrainSegments(select(mtype, split="train"), cache, ids)[0]
    item = ClipSegments(select(mtype, split="test"), cache, ids)[0]
    print(f"\nfeature shapes ({first.machine_type}, ID map {ids}):")
    print(f"  clip complex STFT       {tuple(stft.shape)} {stft.dtype}")
    print(f"  clip log-mel            {tuple(logmel.shape)} {logmel.dtype}")
    print(f"  training segment        {tuple(x.shape)} {x.dtype} -> class {y}")
    print(f"  evaluation segments     {tuple(item.x.shape)} per clip")


if __name__ == "__main__":
    main()
