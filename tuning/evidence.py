"""What the objective study found about data like the data at hand: does the search metric rank trials there?

``make accuracy`` (``python -m bench.accuracy --only objective``) writes ``tuning/objective_evidence.yaml``: for
each data set of the study, Spearman's ρ of the default search metric with the test figure over its trials
and the 95 % bootstrap interval. ``profile`` says which study set the data resembles, ``evidence_line`` what
the search prints and records: plainly, when no interval lies above 0 there.

>>> profile({"00": 6, "02": 2}, two_domains=False)
('fails-like-real', 'IDs with 2 to 6 training clips')
>>> profile({"00": 900, "02": 880}, two_domains=False)[0]
'100 clips per ID'
"""
from __future__ import annotations

from pathlib import Path

import yaml


EVIDENCE = Path(__file__).with_name("objective_evidence.yaml")  # data, not a config: beside this module


def profile(clips_per_id: dict[str, int], two_domains: bool) -> tuple[str, str]:
    """(the objective study's set that the data resembles, why in words)."""
    counts = sorted(clips_per_id.values())
    lo, hi = counts[0], counts[-1]
    clips = f"{lo} training clips per ID" if lo == hi else f"IDs with {lo} to {hi} training clips"
    if two_domains:
        return "first-shot 2023", "a source and a target domain"
    if lo >= 100:
        return "100 clips per ID", clips
    if lo < 5 or hi >= 4 * lo:
        return "fails-like-real", clips
    return "synthetic", clips


def evidence_line(metric: str, clips_per_id: dict[str, int], two_domains: bool, path: Path = EVIDENCE) -> str:
    """One line on how well ``metric`` ranked trials on the study's data most like this, or that no study of
    it exists; empty when nothing is known."""
    name, why = profile(clips_per_id, two_domains)
    found = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    row = found.get(name)
    if not row or row.get("metric") != metric:
        return f"note: no objective study of {metric} on data like this ({why}): how well it ranks trials is not known"
    where = f"on data like this ({why}; the objective study's {name!r} set, ACCURACY.md)"
    net = row.get("network")
    networks = (f"; against what the trials' networks are worth, ρ = {net['rho']:+.2f} "
                f"[{net['interval'][0]:+.2f}, {net['interval'][1]:+.2f}]" if net else "")
    if 2 * row.get("at_best", 0) > row["trials"]:  # the delivered figure hardly moved between trials
        return (f"{where} {row['at_best']} of {row['trials']} trials delivered the same, best test figure: which "
                f"trial is chosen hardly matters there{networks}")
    lo, hi = row["interval"]
    shown = f"ρ = {row['rho']:+.2f} [{lo:+.2f}, {hi:+.2f}] over {row['trials']} trials"
    if lo > 0:
        return f"{where} {metric} ranked trials: {shown}{networks}"
    if hi < 0:
        return (f"note: {where} {metric} ranked trials in reverse ({shown}: the interval lies below 0){networks}: "
                "compare the chosen trial with stats-knn before trusting it")
    return (f"note: {where} {metric} did not rank trials reliably ({shown}: the interval includes 0){networks}: take "
            "the chosen trial as one of the good ones, not as the best")
