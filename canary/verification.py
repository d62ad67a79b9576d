"""After a rollback: decide from the verification window's answers (pure).

A rollback at level L restores the flag (and at 2 and 3 the deployment and
its migrations). The verification window then measures the merchants that
were treated when the rollback happened against their own pre-rollout
baselines (the compare checks, canary.sequential), and this module turns
their latest answers into one action:

* any check says ``worse``: the fault outlived the rollback (it is not in
  the flag: a bad deployment, a bad migration), so **escalate** to L + 1,
  if that level is allowed (``max_level``; 2 and 3 need a deployment) and
  automatic escalation was not stopped; otherwise **exhausted** (no level
  left) or **stopped** (an operator stopped automatic escalation);
* every check says ``not_worse``: **recovered**;
* the window is over and neither: **ended** without evidence of harm;
* otherwise **wait**.

Worse wins over not worse: one metric still harmed is enough. Acting on
the first ``worse`` is sound because the comparisons are always valid
(their error guarantee holds however often they are looked at).

Standard library only (a test enforces no Django import).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

WORSE, NOT_WORSE, NOT_YET = "worse", "not_worse", "not_yet"

WAIT = "wait"
RECOVERED = "recovered"
ESCALATE = "escalate"
EXHAUSTED = "exhausted"
STOPPED = "stopped"
ENDED = "ended"

LEVEL_NAMES: dict[int, str] = {
    1: "flag restore",
    2: "deployment revert",
    3: "migration revert",
}


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """The latest answer of one compare check in the window.

    ``comparison`` is ``canary.sequential.Comparison.as_dict()`` when the
    measurement had one (None for an error or no data).
    """

    name: str
    answer: str
    comparison: Mapping | None = None
    note: str = ""
    check_run: int | None = None
    measured_at: str | None = None


@dataclass(frozen=True, slots=True)
class WindowRules:
    """What the decision needs to know about the rollout and the window."""

    level: int
    max_level: int
    has_deployment: bool
    auto_escalate: bool
    until: dt.datetime
    checks: tuple[str, ...]  # the compare checks that must answer


@dataclass(frozen=True, slots=True)
class VerifyDecision:
    """One action and everything that explains it."""

    action: str
    level: int  # the level verified, or the one to escalate to
    reason: str
    checks: tuple[dict, ...] = field(default_factory=tuple)


def level_text(level: int) -> str:
    """Return "level 2 (deployment revert)"."""
    return f"level {level} ({LEVEL_NAMES.get(level, '?')})"


def _signed(metric: str, value: float | None) -> str:
    if value is None:
        return "?"
    if metric == "error_rate":
        return f"{value * 100:+.2f} pp"
    return f"{value * 100:+.1f}%"


def _plain(metric: str, value: float | None) -> str:
    if value is None:
        return "?"
    if metric == "error_rate":
        return f"{value * 100:.2f} pp"
    return f"{value * 100:.1f}%"


def check_evidence(item: CheckAnswer) -> dict:
    """Return the audit record of one answer: estimate, interval, margin,
    evidence (merchants, events), rule and answer."""
    c = dict(item.comparison or {})
    return {
        "check": item.name,
        "answer": item.answer,
        "metric": c.get("metric"),
        "estimate": c.get("estimate"),
        "lower": c.get("lower"),
        "upper": c.get("upper"),
        "margin": c.get("margin"),
        "alpha": c.get("alpha"),
        "rule": c.get("rule"),
        "evidence": {
            "merchants": c.get("treated_merchants"),
            "events": c.get("treated_events"),
            "control_merchants": c.get("control_merchants"),
            "control_events": c.get("control_events"),
        },
        "explanation": c.get("explanation") or item.note,
        "check_run": item.check_run,
        "measured_at": item.measured_at,
    }


def answer_text(item: CheckAnswer) -> str:
    """Return one sentence: "check error_rate worse: +2.10 pp [+1.20 pp,
    +3.00 pp] above margin 0.50 pp (12 merchants, 4300 events)"."""
    c = item.comparison or {}
    metric = str(c.get("metric") or "")
    words = item.answer.replace("_", " ")
    if not c or c.get("estimate") is None:
        return f"check {item.name} {words}" + (f" ({item.note})" if item.note else "")
    relation = {
        WORSE: "above margin",
        NOT_WORSE: "below margin",
    }.get(item.answer, "around margin")
    evidence = ""
    if c.get("treated_merchants") is not None:
        evidence = (
            f" ({c.get('treated_merchants')} merchants, "
            f"{c.get('treated_events')} events)"
        )
    return (
        f"check {item.name} {words}: {_signed(metric, c.get('estimate'))} "
        f"[{_signed(metric, c.get('lower'))}, {_signed(metric, c.get('upper'))}] "
        f"{relation} {_plain(metric, c.get('margin'))}{evidence}"
    )


def _refusal(rules: WindowRules, level: int) -> str:
    """Return why ``level`` cannot be reached automatically, or ""."""
    if level > 3:
        return "level 3 (migration revert) is the last level"
    if level > rules.max_level:
        return f"level {level} is above the rollout's max_level {rules.max_level}"
    if level >= 2 and not rules.has_deployment:
        return f"level {level} reverts a deployment and the rollout has none recorded"
    return ""


def verification_decide(
    rules: WindowRules, answers: Sequence[CheckAnswer], now: dt.datetime
) -> VerifyDecision:
    """Return what the window's latest answers call for (see the module)."""
    by_name = {a.name: a for a in answers}
    evidence = tuple(check_evidence(by_name[n]) for n in rules.checks if n in by_name)
    after = f"after the {level_text(rules.level)} rollback"
    worse = [
        by_name[n] for n in rules.checks if n in by_name and by_name[n].answer == WORSE
    ]
    if worse:
        said = "; ".join(answer_text(a) for a in worse)
        harm = (
            f"{after}, the formerly treated merchants are still worse than their "
            f"own baselines: {said}"
        )
        target = rules.level + 1
        refused = _refusal(rules, target)
        if refused:
            return VerifyDecision(
                EXHAUSTED,
                rules.level,
                f"{harm}; no automatic escalation: {refused}",
                evidence,
            )
        if not rules.auto_escalate:
            return VerifyDecision(
                STOPPED,
                rules.level,
                f"{harm}; automatic escalation was stopped by an operator: "
                f"escalate by hand to {level_text(target)} if needed",
                evidence,
            )
        return VerifyDecision(
            ESCALATE,
            target,
            f"automatic escalation to {level_text(target)}: {harm}; the fault is "
            f"not in the flag",
            evidence,
        )
    if rules.checks and all(
        n in by_name and by_name[n].answer == NOT_WORSE for n in rules.checks
    ):
        said = "; ".join(answer_text(by_name[n]) for n in rules.checks)
        return VerifyDecision(
            RECOVERED,
            rules.level,
            f"recovered {after}: {said}",
            evidence,
        )
    if now >= rules.until:
        waiting = [
            answer_text(by_name[n]) if n in by_name else f"check {n} never measured"
            for n in rules.checks
        ]
        return VerifyDecision(
            ENDED,
            rules.level,
            f"verification window of the {level_text(rules.level)} rollback ended "
            "without evidence of harm: " + ("; ".join(waiting) or "no compare check"),
            evidence,
        )
    return VerifyDecision(WAIT, rules.level, "verifying", evidence)
