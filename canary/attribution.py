"""Which feature of a release explains a regression.

Pure: the standard library only (a test enforces no Django import).

The members of a release bucket independently (``flags.engine.bucket``
hashes the flag key with the merchant), so in a percentage phase the
merchants form a factorial design: at 50% each of two flags covers half of
the merchants, and a quarter have both. Each member rollout's compare
checks already estimate that flag's *own* effect: the merchants served its
treatment against those served its control, each against its own
baseline. The other members are spread alike over both groups, so their
effects cancel out of the difference (a main effect, in the language of
factorial experiments).

Two things can make that estimate the wrong one to act on, and each one
makes the release roll back as a whole:

* The phase is no factorial design: a pilot or internal phase serves every
  feature to the same merchants, and a 100% phase serves every feature to
  everyone. No contrast can separate the features there.
* An interaction: the feature hurts only together with another one (or
  only without it). ``interaction`` compares the feature's effect among the
  merchants that have the other member's treatment with its effect among
  those that do not; a difference beyond chance (two-sided, at the
  release's interaction alpha split over the pairs) means the regression
  belongs to the combination, not to one feature.

When every active member says *worse* at once, there is nobody left to
keep and nothing to tell apart: the release rolls back as a whole too.
Otherwise the members that say *worse* are rolled back, each through its
own level-1 rollback, and the others go on.

Limits (docs/releases.md): interactions of three or more features are not
tested; an interaction that is too small to show in the data at hand is
taken for none (main effects are assumed additive until shown otherwise),
so with few merchants in a cell the test has little power; the main effect
of a feature is averaged over the others' shares in that phase.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from canary.sequential import _group
from canary.windows import ERROR_RATE, MerchantAggregate

PARTIAL, WHOLE = "partial", "whole"
DEFAULT_INTERACTION_ALPHA = 0.01
_NORMAL = NormalDist()


def _contrast(
    metric: str,
    treated: Sequence[MerchantAggregate],
    control: Sequence[MerchantAggregate],
) -> tuple[float, float] | None:
    """Return the difference in differences and its variance, or None."""
    treated_group = _group(metric, treated)
    control_group = _group(metric, control)
    if treated_group is None or control_group is None:
        return None
    return (
        treated_group.estimate - control_group.estimate,
        treated_group.total_variance + control_group.total_variance,
    )


def _unit(metric: str, value: float) -> float:
    return value if metric == ERROR_RATE else math.expm1(value)


def interaction(
    *,
    metric: str,
    treated: Sequence[MerchantAggregate],
    control: Sequence[MerchantAggregate],
    other_treated: Collection[str],
    alpha: float,
) -> dict:
    """Return how this feature's effect differs with the other's treatment.

    ``treated``/``control`` are this member's compare aggregates (merchants
    served its treatment / its control), ``other_treated`` the merchants
    served the other member's treatment in the same range. The answer:
    ``with`` and ``without`` (this feature's effect among the merchants
    with / without the other's treatment, in the metric's unit, None when a
    cell is empty), ``difference`` and ``z``, ``cells`` (merchants per
    cell), ``testable`` and ``significant`` (two-sided at ``alpha``).
    """
    inside = set(other_treated)
    cells = {
        "treated_with": [a for a in treated if a.merchant in inside],
        "treated_without": [a for a in treated if a.merchant not in inside],
        "control_with": [a for a in control if a.merchant in inside],
        "control_without": [a for a in control if a.merchant not in inside],
    }
    counts = {name: len(items) for name, items in cells.items()}
    with_other = _contrast(metric, cells["treated_with"], cells["control_with"])
    without = _contrast(metric, cells["treated_without"], cells["control_without"])
    answer: dict = {
        "cells": counts,
        "with": _unit(metric, with_other[0]) if with_other else None,
        "without": _unit(metric, without[0]) if without else None,
        "difference": None,
        "z": None,
        "alpha": alpha,
        "testable": False,
        "significant": False,
    }
    if with_other is None or without is None:
        return answer
    # Both cells need two merchants a side: one merchant per cell gives no
    # spread to judge a difference by.
    if min(counts.values()) < 2:
        return answer
    difference = with_other[0] - without[0]
    variance = with_other[1] + without[1]
    if variance <= 0:
        return answer
    z = difference / math.sqrt(variance)
    answer.update(
        difference=difference,
        z=z,
        testable=True,
        significant=abs(z) > _NORMAL.inv_cdf(1 - alpha / 2),
    )
    return answer


@dataclass(frozen=True)
class Attribution:
    """What a release does about a check that says *worse*."""

    scope: str  # PARTIAL: roll back ``flags`` only; WHOLE: every member
    flags: tuple[str, ...]
    reason: str
    evidence: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "scope": self.scope,
            "flags": list(self.flags),
            "reason": self.reason,
            "evidence": self.evidence,
        }


def attribute(
    *,
    active: Sequence[str],
    worse: Mapping[str, Sequence[str]],
    factorial: bool,
    phase_text: str,
    interactions: Mapping[str, Mapping[str, Mapping]] | None = None,
) -> Attribution:
    """Decide which active members a *worse* answer rolls back.

    ``active`` are the flag keys of the members still in play, ``worse``
    maps each member whose check(s) say worse to those checks' names,
    ``factorial`` says whether the phase is a percentage below 100% (the
    only kind where the members' effects can be told apart), and
    ``interactions[flag][other]`` is ``interaction``'s answer for each
    worse member against each other active member (from the failing
    check's last run).
    """
    blamed = tuple(key for key in active if key in worse)
    names = ", ".join(blamed) or "none"
    if len(active) == 1:
        return Attribution(WHOLE, tuple(active), f"{names} is the last feature left")
    if not factorial:
        return Attribution(
            WHOLE,
            tuple(active),
            f"{phase_text} serves every feature to the same merchants: a "
            f"regression there cannot be attributed to one feature ({names} "
            "said worse)",
        )
    if len(blamed) == len(active):
        return Attribution(
            WHOLE,
            tuple(active),
            "every feature's own effect says worse: there is no feature to keep",
        )
    found: dict[str, dict] = {}
    for key in blamed:
        for other, answer in (interactions or {}).get(key, {}).items():
            if other in active and answer.get("significant"):
                found[f"{key}x{other}"] = dict(answer)
    if found:
        pair = next(iter(found))
        first, second = pair.split("x", 1)
        answer = found[pair]
        return Attribution(
            WHOLE,
            tuple(active),
            f"the effect of {first} depends on {second} (an interaction: "
            f"{_fmt(answer.get('with'))} with {second}, "
            f"{_fmt(answer.get('without'))} without, z {answer['z']:.2f}): the "
            "regression belongs to the combination, not to one feature",
            {"interactions": found},
        )
    untested = sorted(
        f"{key}x{other}"
        for key in blamed
        for other, answer in (interactions or {}).get(key, {}).items()
        if other in active and not answer.get("testable")
    )
    reason = (
        f"{names}: its own effect says worse while "
        f"{', '.join(k for k in active if k not in worse)} do not"
    )
    if untested:
        reason += (
            f" (no interaction testable yet for {', '.join(untested)}: too few "
            "merchants in a cell; effects taken as additive)"
        )
    return Attribution(PARTIAL, blamed, reason, {"untested": untested})


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}"
