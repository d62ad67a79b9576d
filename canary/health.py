"""Pure evaluation of health-check measurements and phase gates.

No Django import (a test enforces it): the controller loads rows, turns them
into the small frozen values below, and asks this module three questions:

* ``judge``: what is the verdict of one measurement (pass, fail,
  inconclusive, error), and why;
* ``check_state_update``: how does that verdict move the check's per-phase
  state (failed / inconclusive / errored once a limit is exceeded), and when
  is the check due next;
* ``phase_gate``: may the current phase advance, must it hold, pause or
  fail.

The semantics follow DESIGN.md "Check semantics": missing data never
promotes, a limit ``N`` is crossed by the ``N+1``-th occurrence, errors are
retried sooner than the interval.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace


class Verdict:
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    # A sequential comparison without enough evidence either way.
    NOT_YET = "not_yet"


# What a check says about the treatment, whatever its mode: a sequential
# comparison answers these directly; a threshold check's pass reads as
# "not worse", a failure as "worse", anything else as "not yet".
WORSE, NOT_WORSE, NOT_YET = "worse", "not_worse", "not_yet"


def answer_of(verdict: str | None) -> str:
    """Return the answer (worse / not_worse / not_yet) a verdict gives."""
    if verdict == Verdict.PASS:
        return NOT_WORSE
    if verdict == Verdict.FAIL:
        return WORSE
    return NOT_YET


class CheckStatus:
    PENDING = "pending"
    PASSING = "passing"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERRORED = "errored"


class GateAction:
    ADVANCE = "advance"
    HOLD = "hold"
    # Everything is ready but the phase needs an operator's approval: the
    # controller moves the rollout to awaiting_approval.
    AWAIT_APPROVAL = "await_approval"
    PAUSE = "pause"
    FAIL = "fail"


# Severity order of on_failure actions: the most severe one wins.
ON_FAILURE_SEVERITY: dict[str, int] = {
    "pause": 0,
    "rollback_1": 1,
    "rollback_2": 2,
    "rollback_3": 3,
}

_COMPARATORS = {
    "lt": (lambda value, limit: value < limit, "<"),
    "lte": (lambda value, limit: value <= limit, "<="),
    "gt": (lambda value, limit: value > limit, ">"),
    "gte": (lambda value, limit: value >= limit, ">="),
    "eq": (
        lambda value, limit: math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12),
        "=",
    ),
}
COMPARATORS = frozenset(_COMPARATORS)
MODES = frozenset({"absolute", "relative", "cohort"})


@dataclass(frozen=True, slots=True)
class CheckRules:
    """The rules of one health check (a HealthCheck row without its state)."""

    comparator: str = "lt"
    threshold: float | None = None
    mode: str = "absolute"
    relative_tolerance: float = 0.2
    interval: float = 30.0
    min_samples: int = 1
    failure_limit: int = 0
    inconclusive_limit: int = 3
    consecutive_error_limit: int = 3
    no_data: str = Verdict.INCONCLUSIVE
    on_failure: str = "rollback_1"


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict of one measurement and what it was compared with."""

    verdict: str
    message: str
    # The bound the value was compared with (threshold, or the baseline
    # moved by the tolerance in relative mode); None when not applicable.
    limit: float | None = None

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "message": self.message, "limit": self.limit}


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def _no_data(rules: CheckRules, why: str) -> Judgement:
    verdict = Verdict.FAIL if rules.no_data == Verdict.FAIL else Verdict.INCONCLUSIVE
    suffix = (
        " (this check treats no data as a failure)" if verdict == Verdict.FAIL else ""
    )
    return Judgement(verdict, f"{why}{suffix}")


def judge(
    rules: CheckRules,
    *,
    value: float | None,
    error: str | None = None,
    samples: int | None = None,
    baseline: float | None = None,
    cohort: Mapping | None = None,
) -> Judgement:
    """Return the verdict of one measurement; never ``pass`` without data.

    ``error`` (a provider failure) gives ``error``. No value (or zero
    samples) gives the check's ``no_data`` verdict. Absolute mode compares
    the value with the threshold; relative mode with the baseline moved by
    ``relative_tolerance`` in the allowed direction (``lt``/``lte``: up to
    ``baseline * (1 + tolerance)``; ``gt``/``gte``: down to ``baseline *
    (1 - tolerance)``; ``eq``: within ``|baseline| * tolerance``). Cohort
    mode takes the verdict of a cohort comparison (``cohort["verdict"]``,
    as ``canary.analysis`` returns it). A NaN value is inconclusive.
    """
    if error is not None:
        return Judgement(Verdict.ERROR, f"provider error: {error}")
    if rules.mode == "cohort":
        if not cohort:
            return _no_data(rules, "no cohort data")
        verdict = cohort.get("verdict")
        if verdict not in (Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE):
            return Judgement(
                Verdict.ERROR, f"cohort comparison gave no verdict ({verdict!r})"
            )
        message = str(cohort.get("explanation") or f"cohort comparison: {verdict}")
        return Judgement(verdict, message)
    if value is None or samples == 0:
        return _no_data(rules, "no data")
    if isinstance(value, float) and math.isnan(value):
        return Judgement(Verdict.INCONCLUSIVE, "the value is not a number (NaN)")
    compare, symbol = _COMPARATORS[rules.comparator]
    if rules.mode == "relative":
        if baseline is None or (isinstance(baseline, float) and math.isnan(baseline)):
            return Judgement(Verdict.INCONCLUSIVE, "no baseline to compare with")
        tolerance = rules.relative_tolerance
        if rules.comparator == "eq":
            allowed = abs(baseline) * tolerance
            ok = abs(value - baseline) <= allowed
            message = (
                f"{_fmt(value)} within {_fmt(allowed)} of baseline {_fmt(baseline)}"
                if ok
                else f"{_fmt(value)} differs from baseline {_fmt(baseline)} by more than "
                f"{tolerance:.0%}"
            )
            return Judgement(Verdict.PASS if ok else Verdict.FAIL, message, baseline)
        if rules.comparator in ("lt", "lte"):
            limit = baseline + abs(baseline) * tolerance
        else:
            limit = baseline - abs(baseline) * tolerance
        ok = compare(value, limit)
        relation = "within" if ok else "beyond"
        message = (
            f"{_fmt(value)} {symbol if ok else 'not ' + symbol} {_fmt(limit)} "
            f"(baseline {_fmt(baseline)}, {relation} {tolerance:.0%} tolerance)"
        )
        return Judgement(Verdict.PASS if ok else Verdict.FAIL, message, limit)
    if rules.threshold is None:
        return Judgement(Verdict.ERROR, "the check has no threshold")
    ok = compare(value, rules.threshold)
    message = (
        f"{_fmt(value)} {symbol if ok else 'not ' + symbol} {_fmt(rules.threshold)}"
    )
    return Judgement(Verdict.PASS if ok else Verdict.FAIL, message, rules.threshold)


@dataclass(frozen=True, slots=True)
class CheckState:
    """A check's counters within the current phase."""

    status: str = CheckStatus.PENDING
    pass_count: int = 0
    consecutive_failures: int = 0
    consecutive_errors: int = 0
    inconclusive_count: int = 0


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What one verdict did to a check."""

    state: CheckState
    # The status this verdict moved the check into when it crossed a limit
    # (failed, inconclusive or errored); None otherwise.
    crossed: str | None
    # Seconds until the check is due again (sooner after an error).
    next_delay: float
    message: str


def error_retry_delay(rules: CheckRules, consecutive_errors: int) -> float:
    """Return how soon an erroring check is retried: a quarter of the
    interval (at least 1 s), doubling with each error in a row, never more
    than the interval."""
    base = max(1.0, rules.interval / 4)
    return float(min(rules.interval, base * 2 ** max(0, consecutive_errors - 1)))


_STICKY = frozenset({CheckStatus.FAILED, CheckStatus.INCONCLUSIVE, CheckStatus.ERRORED})


def check_state_update(
    rules: CheckRules, state: CheckState, verdict: str
) -> CheckOutcome:
    """Return the check's state after one more verdict in the same phase.

    * fail: consecutive failures + 1 (a pass resets them); more than
      ``failure_limit`` fails the check (limit 0: the first failure).
    * inconclusive: the phase's inconclusive count + 1; more than
      ``inconclusive_limit`` turns the check inconclusive.
    * error: consecutive errors + 1 (any other verdict resets them); more
      than ``consecutive_error_limit`` errors the check. Retried sooner.
    * pass: passing samples + 1.

    A crossed limit sticks for the rest of the phase (until a reset); a
    failure outranks the other two.
    """
    failures, errors = state.consecutive_failures, state.consecutive_errors
    inconclusive, passes = state.inconclusive_count, state.pass_count
    delay = float(rules.interval)
    if verdict == Verdict.PASS:
        passes, failures, errors = passes + 1, 0, 0
        message = f"pass ({passes} passing, {rules.min_samples} needed)"
    elif verdict == Verdict.FAIL:
        failures, errors = failures + 1, 0
        message = f"failure {failures} in a row (limit {rules.failure_limit})"
    elif verdict == Verdict.INCONCLUSIVE:
        inconclusive, errors = inconclusive + 1, 0
        message = (
            f"inconclusive result {inconclusive} (limit {rules.inconclusive_limit})"
        )
    elif verdict == Verdict.NOT_YET:
        # Waiting for evidence is not a failure to measure: nothing counts
        # toward a limit, and only a "not worse" keeps the check passing.
        failures, errors = 0, 0
        message = "not yet: not enough evidence either way"
    elif verdict == Verdict.ERROR:
        errors += 1
        delay = error_retry_delay(rules, errors)
        message = f"error {errors} in a row (limit {rules.consecutive_error_limit})"
    else:
        raise ValueError(f"unknown verdict {verdict!r}")

    if failures > rules.failure_limit:
        status = CheckStatus.FAILED
    elif state.status in _STICKY:
        status = state.status
    elif inconclusive > rules.inconclusive_limit:
        status = CheckStatus.INCONCLUSIVE
    elif errors > rules.consecutive_error_limit:
        status = CheckStatus.ERRORED
    elif verdict == Verdict.PASS and passes >= rules.min_samples:
        status = CheckStatus.PASSING
    else:
        # Only a pass keeps a check passing: a failure, an inconclusive
        # result or an error under its limit holds the phase until the next
        # pass.
        status = CheckStatus.PENDING
    crossed = status if status in _STICKY and status != state.status else None
    if crossed == CheckStatus.FAILED:
        message = (
            f"failed: {failures} consecutive failure(s) exceed the failure limit "
            f"{rules.failure_limit}"
        )
    elif crossed == CheckStatus.INCONCLUSIVE:
        message = (
            f"inconclusive: {inconclusive} inconclusive result(s) exceed the limit "
            f"{rules.inconclusive_limit}"
        )
    elif crossed == CheckStatus.ERRORED:
        message = (
            f"errored: {errors} consecutive error(s) exceed the limit "
            f"{rules.consecutive_error_limit}"
        )
    new_state = replace(
        state,
        status=status,
        pass_count=passes,
        consecutive_failures=failures,
        consecutive_errors=errors,
        inconclusive_count=inconclusive,
    )
    return CheckOutcome(new_state, crossed, delay, message)


@dataclass(frozen=True, slots=True)
class PhaseRules:
    """What the gate needs to know about a phase."""

    index: int
    min_duration: float = 0.0
    max_duration: float | None = None
    requires_approval: bool = False
    is_last: bool = False
    # "prove": advance only when every check passes ("not worse"); "guard":
    # advance after min_duration unless a check failed ("worse").
    gate: str = "prove"


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One check as the gate sees it."""

    name: str
    state: CheckState
    min_samples: int = 1
    on_failure: str = "rollback_1"
    # Dry-run checks are measured and shown but never decide.
    dry_run: bool = False
    # Why the check is not passing yet, in words (e.g. how much more
    # traffic a comparison needs); shown in a hold or max_duration pause.
    note: str = ""


@dataclass(frozen=True, slots=True)
class GateDecision:
    """What the controller should do with the current phase, and why.

    ``on_failure`` is set for ``fail``: the most severe ``on_failure`` of the
    failed checks (pause < rollback_1 < rollback_2 < rollback_3).
    ``remaining`` is the number of seconds until ``min_duration`` passes (0
    once it has).
    """

    action: str
    reasons: tuple[str, ...] = ()
    on_failure: str | None = None
    checks: tuple[str, ...] = field(default=())
    remaining: float = 0.0


def phase_gate(
    now: dt.datetime,
    phase: PhaseRules,
    phase_started_at: dt.datetime,
    check_states: Iterable[GateCheck],
    approved: bool,
    *,
    elapsed: float | None = None,
) -> GateDecision:
    """Decide whether the current phase advances, holds, pauses or fails.

    In order: any failed check -> ``fail`` (with the most severe
    on_failure); any inconclusive or errored check (past its limit) ->
    ``pause``; otherwise the phase advances only when ``min_duration`` has
    passed, every check has at least ``min_samples`` passing results and
    is passing now, and approval is given where required (else
    ``await_approval``). A ``guard`` phase skips the passing condition: it
    advances once ``min_duration`` has passed unless a check failed or is
    stuck. Dry-run checks take no part. Past ``max_duration`` without being able to
    advance -> ``pause``. Anything short of that -> ``hold``: missing data
    never promotes. ``elapsed`` is the phase's time so far for both
    durations (the rollout's running time); without it, the wall time since
    ``phase_started_at``.
    """
    checks = [c for c in check_states if not c.dry_run]
    failed = [c for c in checks if c.state.status == CheckStatus.FAILED]
    if failed:
        worst = max(failed, key=lambda c: ON_FAILURE_SEVERITY.get(c.on_failure, 1))
        return GateDecision(
            GateAction.FAIL,
            tuple(f"check {c.name} failed" for c in failed),
            on_failure=worst.on_failure,
            checks=tuple(c.name for c in failed),
        )
    stuck = [
        c
        for c in checks
        if c.state.status in (CheckStatus.INCONCLUSIVE, CheckStatus.ERRORED)
    ]
    if stuck:
        return GateDecision(
            GateAction.PAUSE,
            tuple(
                f"check {c.name} is {c.state.status}: missing or erroring data never promotes"
                for c in stuck
            ),
            checks=tuple(c.name for c in stuck),
        )
    if elapsed is None:
        elapsed = (now - phase_started_at).total_seconds()
    remaining = max(0.0, phase.min_duration - elapsed)
    reasons: list[str] = []
    waiting: list[str] = []
    if remaining > 0:
        reasons.append(
            f"min_duration: {elapsed:.0f}s of {phase.min_duration:.0f}s elapsed"
        )
    for check in checks:
        if phase.gate == "guard":
            # A guard phase waits for nothing but its soak: only a failure
            # (above) or a stuck check stops it.
            continue
        note = f" ({check.note})" if check.note else ""
        if check.state.pass_count < check.min_samples:
            waiting.append(check.name)
            reasons.append(
                f"check {check.name}: {check.state.pass_count} of {check.min_samples} "
                f"passing samples{note}"
            )
        elif check.state.status != CheckStatus.PASSING:
            waiting.append(check.name)
            reasons.append(
                f"check {check.name} is {check.state.status}, not passing{note}"
            )
    if not reasons:
        if phase.requires_approval and not approved:
            return GateDecision(
                GateAction.AWAIT_APPROVAL,
                # Phases are numbered from 1 wherever a person reads them.
                (f"phase {phase.index + 1} requires approval",),
            )
        what = (
            "complete the rollout"
            if phase.is_last
            else f"leave phase {phase.index + 1}"
        )
        return GateDecision(GateAction.ADVANCE, (f"all gates open: {what}",))
    if phase.max_duration is not None and elapsed > phase.max_duration:
        return GateDecision(
            GateAction.PAUSE,
            (
                f"max_duration: {elapsed:.0f}s exceeds {phase.max_duration:.0f}s",
                *reasons,
            ),
            checks=tuple(waiting),
            remaining=remaining,
        )
    return GateDecision(
        GateAction.HOLD, tuple(reasons), checks=tuple(waiting), remaining=remaining
    )
