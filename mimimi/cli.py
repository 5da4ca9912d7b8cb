"""``mimimi <command> [options]``: one console script for the platform's commands. Each command is the
module's own CLI (``mimimi score --help`` is ``python -m mimimi.score --help``), and every documented
``python -m …`` / ``python tuning/search.py`` keeps working.

>>> sorted(COMMANDS)
['auth', 'cache', 'download', 'evaluate', 'index', 'score', 'search', 'synth', 'train']
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name -> (module with main(argv), what it does)
    "search": ("tuning.search", "tune per machine type (Ray Tune + Optuna), track in MLflow"),
    "train": ("mimimi.train", "train one model for one machine type"),
    "evaluate": ("mimimi.evaluate", "evaluate a checkpoint or an MLflow run on the test split"),
    "score": ("mimimi.score", "score new recordings with a checkpoint, a logged or a registered model"),
    "synth": ("mimimi.synth", "generate a synthetic MIMII-like dataset"),
    "download": ("mimimi.download", "download and verify the DCASE 2020–2025 Task 2 / MIMII archives"),
    "index": ("mimimi.index", "show what a dataset root holds"),
    "cache": ("mimimi.cache", "fill the feature cache of a dataset root"),
    "auth": ("mimimi.auth", "a cluster's secrets: Ray token, MLflow users (cluster/README.md, Security)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "usage: mimimi <command> [options]\n\ncommands:\n" + "\n".join(
        f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()) + \
        "\n\n`mimimi <command> --help` shows a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mimimi: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:  # Ctrl-C while a command's libraries load (seconds on a small machine): exit 130 in one line
        code = importlib.import_module(COMMANDS[name][0]).main(rest)
    except KeyboardInterrupt:
        if name == "search":
            from tuning.interrupts import INTERRUPTED  # standard library only

            print(INTERRUPTED, file=sys.stderr)
        else:
            print(f"mimimi {name}: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
