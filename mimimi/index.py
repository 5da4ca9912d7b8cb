"""``python -m mimimi.index ROOT [--ground-truth DIR] [--list-unmatched]`` (also ``mimimi index``): print what a
dataset root holds, the command over :func:`mimimi.data.index.index_dataset`; errors end in one ``error:`` line."""
from __future__ import annotations

import argparse
import logging
import sys

from mimimi.data import index as library
from mimimi.data.index import DatasetError, counts, index_dataset


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mimimi.index", description=library.__doc__.split("\n\n")[0])
    ap.add_argument("root", help="dataset root (DCASE 2020-2025 Task 2 or MIMII layout)")
    ap.add_argument("--ground-truth", default=None,
                    help="folder of the published ground truth of an evaluation set (fills hidden labels)")
    ap.add_argument("--list-unmatched", action="store_true", help="print every file that was not indexed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        idx = index_dataset(args.root, ground_truth=args.ground_truth)
    except DatasetError as e:
        sys.exit(f"error: {e}")
    layouts = ", ".join(sorted(set(idx.clips.layout)))
    print(f"{len(idx.clips)} clips under {idx.root} ({layouts})")
    print(counts(idx.clips).to_string())
    if len(idx.attributes):
        print(f"{len(idx.attributes)} attribute row(s) from attributes_XX.csv")
    if idx.unmatched:
        print(f"{len(idx.unmatched)} file(s) not in any layout")
        if args.list_unmatched:
            print("\n".join(str(p) for p in idx.unmatched))


if __name__ == "__main__":
    main()
