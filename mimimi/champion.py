"""The champion rule: when the registry alias ``champion`` of ``mimimi-<type>`` moves to a new version.

A pure function of two figures, the candidate's and the current champion's test pAUC
(``test/<type>/mean_pauc``, higher is better); ``mimimi.tracking.update_champion`` reads them from MLflow,
applies the rule, moves the alias and records the decision in the candidate's run.

>>> decide(0.80, None, has_champion=False)
Decision(promote=True, reason='no champion yet: the first version becomes champion')
>>> decide(0.81, 0.80)
Decision(promote=True, reason="0.81 beats the champion's 0.8")
>>> decide(0.80, 0.80)
Decision(promote=False, reason="0.8 does not beat the champion's 0.8")
"""
from __future__ import annotations

import math
from typing import NamedTuple

ALIAS = "champion"
RULE = ("the alias 'champion' moves to a new version only if its {metric} is strictly higher than the current "
        "champion's; the first version becomes champion; a missing or NaN figure never beats a recorded one")


class Decision(NamedTuple):
    promote: bool  # move the alias to the candidate
    reason: str  # one line, recorded with the decision


def _known(v: float | None) -> bool:
    return v is not None and not math.isnan(v)


def decide(candidate: float | None, champion: float | None, *, has_champion: bool = True) -> Decision:
    """Whether a candidate with figure ``candidate`` replaces the champion whose figure is ``champion``
    (higher is better; ``None`` or NaN: not recorded). Ties keep the champion.

    >>> decide(float("nan"), 0.5).promote, decide(0.5, None).promote, decide(None, None).promote
    (False, True, False)
    >>> decide(float("nan"), None, has_champion=False).promote  # something must answer @champion
    True
    """
    if not has_champion:
        return Decision(True, "no champion yet: the first version becomes champion")
    if not _known(candidate):
        return Decision(False, "the candidate has no recorded figure: the champion stays")
    if not _known(champion):
        return Decision(True, f"{candidate:.6g} beats the champion, which has no recorded figure")
    if candidate > champion:
        return Decision(True, f"{candidate:.6g} beats the champion's {champion:.6g}")
    return Decision(False, f"{candidate:.6g} does not beat the champion's {champion:.6g}")
