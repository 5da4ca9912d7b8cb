"""``python -m mimimi.download --dataset NAME ...`` (also ``mimimi download``): download, verify and unpack a
DCASE Task 2 year or MIMII with :mod:`mimimi.data.download` (see its docstring for what goes where); errors end in
one ``error:`` line on stderr."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from mimimi.data.download import (DATASETS, STATE_DIR, TIMEOUT, ZENODO_URL, DownloadError, archive_urls, download,
                                  plan)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mimimi.download",
        description="Download, verify (size + MD5) and unpack DCASE 2020-2025 Task 2 / MIMII archives from Zenodo. "
        "Interrupted downloads resume; re-running skips what is done.",
    )
    p.add_argument("--dataset", required=True, choices=list(DATASETS))
    p.add_argument("--part", nargs="+", metavar="PART",
                   help="dcase2021..dcase2025 only: dev, eval-train (additional training set), eval-test "
                   "(evaluation test set) or eval (both); comma- or space-separated (default: all)")
    p.add_argument("--machine-types", nargs="+", metavar="TYPE",
                   help="comma- or space-separated (default: all of the chosen parts')")
    p.add_argument("--snr", nargs="+", metavar="DB",
                   help="mimii only: 6, 0, -6 (default: all); write a leading negative as --snr=-6,0")
    p.add_argument("--out", type=Path, help="folder to unpack into (DCASE 2021-2025: into OUT/dcase<year>/); "
                   "required unless --urls")
    p.add_argument("--base-url", default=ZENODO_URL, help=f"Zenodo or a mirror of it (default: {ZENODO_URL})")
    p.add_argument("--keep-archives", action="store_true",
                   help=f"keep the zips in OUT/{STATE_DIR}/ (DCASE 2021-2025: OUT/dcase<year>/{STATE_DIR}/)")
    p.add_argument("--dry-run", action="store_true", help="list what would be downloaded, change nothing")
    p.add_argument("--urls", action="store_true",
                   help="print the archives' Zenodo addresses, one a line, without any request")
    p.add_argument("--retries", type=int, default=1, help="downloads again after a checksum mismatch (default: 1)")
    p.add_argument("--timeout", type=float, default=TIMEOUT[1], help="read timeout in seconds (default: 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; errors end in one ``error:`` line on stderr (exit 2: arguments, 1: download)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.out is None and not args.urls:
        parser.error("the following arguments are required: --out")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    timeout = (TIMEOUT[0], args.timeout)
    try:
        if args.urls:
            for url in archive_urls(args.dataset, args.machine_types, args.snr, args.part):
                print(url)
            return 0
        if args.dry_run:
            archives = plan(args.dataset, args.machine_types, args.out, snr=args.snr, parts=args.part,
                            base_url=args.base_url, timeout=timeout)
            total = 0
            for a in archives:
                if a.remote is None:
                    print(f"done  {a.key}  ->  {a.extract_to}")
                else:
                    total += a.remote.size
                    print(f"get   {a.key}  {a.remote.size / 1e9:.2f} GB  md5 {a.remote.md5}  {a.remote.url}"
                          f"  ->  {a.extract_to}")
            print(f"{sum(a.remote is not None for a in archives)} archive(s) to download, {total / 1e9:.2f} GB")
            return 0
        paths = download(args.dataset, args.machine_types, args.out, snr=args.snr, parts=args.part,
                         base_url=args.base_url,
                         keep_archives=args.keep_archives, retries=args.retries, progress=not args.no_progress,
                         timeout=timeout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
