"""Chart data for the rollout page, from the report's plain data (pure).

The functions here read what ``canary.report.report_build`` returns (check
runs, phases, the gate decisions of the audit log, cohort totals) and
return small frozen records; no database and no drawing, so they are
tested on hand-written report data. The 0-based phase index of the models
is kept; labels people read are 1-based (``PhaseStart.label``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

# Decision kinds marked on the charts, from the gate decisions of the audit
# log (canary.report_evidence) and the rollback escalations.
ADVANCE, WAIT, PAUSE, ROLLBACK = "advance", "wait", "pause", "rollback"
ESCALATION, AWAIT_APPROVAL, ABORT, RESUME = (
    "escalation",
    "await_approval",
    "abort",
    "resume",
)
# (A wait is every run that said "not yet": its dot, not a separate marker.)
DECISION_KINDS = (ADVANCE, PAUSE, ROLLBACK, ESCALATION, AWAIT_APPROVAL, ABORT)
DECISION_LABELS = {
    ADVANCE: "advance",
    WAIT: "wait (not yet)",
    PAUSE: "pause",
    ROLLBACK: "rollback",
    ESCALATION: "escalation",
    AWAIT_APPROVAL: "awaiting approval",
    ABORT: "abort",
    RESUME: "resume",
}
NO_VALUE_LABEL = "no value (no data or error)"
# Colours of a run's answer (the dots) and of the decision markers.
ANSWER_COLOURS = {"worse": "#c62828", "not_worse": "#2e7d32", "not_yet": "#1565c0"}
DECISION_COLOURS = {
    ADVANCE: "#2e7d32",
    WAIT: "#1565c0",
    PAUSE: "#ef6c00",
    ROLLBACK: "#c62828",
    ESCALATION: "#6a1b9a",
    AWAIT_APPROVAL: "#00838f",
    ABORT: "#455a64",
    RESUME: "#9e9d24",
}


@dataclass(frozen=True, slots=True)
class RunPoint:
    """One check run: when, its estimate (or value) and interval."""

    run_id: int
    at: dt.datetime
    phase: int
    value: float | None
    lower: float | None
    upper: float | None
    answer: str
    verdict: str


@dataclass(frozen=True, slots=True)
class Marker:
    """A decision: what, when, in which phase, and why."""

    kind: str
    at: dt.datetime
    phase: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class PhaseStart:
    index: int
    name: str
    at: dt.datetime
    share: float | None  # percent of merchants treated; None for a pilot

    @property
    def label(self) -> str:
        return f"phase {self.index + 1} ({self.name})"


@dataclass(frozen=True, slots=True)
class CheckChart:
    """Everything the chart of one check shows."""

    check: str
    dry_run: bool
    unit: str  # the y axis title
    scale: float  # multiply stored values by this to get the unit
    bound: float | None  # the margin or threshold, stored units
    bound_label: str
    points: tuple[RunPoint, ...]
    markers: tuple[Marker, ...]
    phases: tuple[PhaseStart, ...]


@dataclass(frozen=True, slots=True)
class ShareStep:
    at: dt.datetime
    share: float  # percent of merchants on the treatment
    label: str


@dataclass(frozen=True, slots=True)
class PhaseComparison:
    """The treatment and the control (baseline) variation in one phase."""

    phase: int
    name: str
    treatment_rate: float | None  # error rate, percent
    control_rate: float | None
    treatment_events: int
    control_events: int

    @property
    def label(self) -> str:
        return f"phase {self.phase + 1} ({self.name})"


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def phase_starts_data(report: dict) -> tuple[PhaseStart, ...]:
    """Return the phases that started, with when and the share they treat."""
    starts = []
    for phase in report.get("phases", []):
        at = _time(phase.get("started_at"))
        if at is None:
            continue
        share = (
            float(phase["percentage"])
            if phase.get("target_type") == "percentage"
            and phase.get("percentage") is not None
            else None
        )
        starts.append(PhaseStart(phase["index"], phase["name"], at, share))
    return tuple(starts)


def decision_markers_data(report: dict) -> tuple[Marker, ...]:
    """Return every decision, oldest first: the gate decisions per phase
    (advance, pause, rollback, awaiting approval, abort, resume), the
    rollback escalations, and ``wait`` where the current phase's gate is
    holding now (the check runs that said *not yet* show each wait)."""
    markers: list[Marker] = []
    for phase in report.get("evidence", []):
        for decision in phase.get("decisions", []):
            at = _time(decision.get("at"))
            if at is not None:
                markers.append(
                    Marker(
                        decision["decision"],
                        at,
                        phase["index"],
                        decision.get("reason", ""),
                    )
                )
    for event in report.get("decisions", []):
        if event.get("action") == "rollout.rollback_escalated":
            at = _time(event.get("at"))
            if at is not None:
                markers.append(
                    Marker(ESCALATION, at, None, event.get("explanation", ""))
                )
    markers.sort(key=lambda m: m.at)
    return tuple(markers)


def _unit(check: dict) -> tuple[str, float, float | None, str]:
    """Return (axis title, scale, bound, bound label) of a check."""
    metric = check.get("metric")
    if check.get("mode") == "compare" and metric:
        if metric == "error_rate":
            unit = "treated − baseline error rate (pp)"
        else:
            unit = f"treated vs baseline {metric} (% change)"
        return unit, 100.0, check.get("margin"), "margin"
    bound = check.get("threshold")
    runs = check.get("runs") or []
    limits = [run["limit"] for run in runs if run.get("limit") is not None]
    if limits:
        bound = limits[-1]
    from canary.report_verdict import _SYMBOLS

    symbol = _SYMBOLS.get(check.get("comparator"), check.get("comparator") or "")
    return "value", 1.0, bound, f"threshold {symbol}".strip()


def check_charts_data(report: dict) -> tuple[CheckChart, ...]:
    """Return one chart per check: every run's estimate (a compare check's
    difference, else the measured value) with its interval, the margin or
    threshold, the phase starts and the decisions."""
    phases = phase_starts_data(report)
    markers = decision_markers_data(report)
    charts = []
    for check in report.get("checks", []):
        unit, scale, bound, bound_label = _unit(check)
        compare = check.get("mode") == "compare"
        points = []
        for run in check.get("runs", []):
            at = _time(run.get("measured_at"))
            if at is None:
                continue
            value = run.get("estimate") if compare else run.get("value")
            if value is None:
                value = run.get("value")
            points.append(
                RunPoint(
                    run_id=run["id"],
                    at=at,
                    phase=run["phase"],
                    value=value,
                    lower=run.get("lower"),
                    upper=run.get("upper"),
                    answer=run.get("answer") or "",
                    verdict=run.get("verdict") or "",
                )
            )
        charts.append(
            CheckChart(
                check=check["name"],
                dry_run=bool(check.get("dry_run")),
                unit=unit,
                scale=scale,
                bound=bound,
                bound_label=bound_label,
                points=tuple(points),
                markers=markers,
                phases=phases,
            )
        )
    return tuple(charts)


def share_steps_data(report: dict) -> tuple[ShareStep, ...]:
    """Return the treatment share over time as steps: 0 before the start,
    each phase's share from its start (a pilot phase counts 0% of the
    percentage: its few merchants are named in the label), and 0 again
    once the rollout was rolled back or aborted."""
    rollout = report.get("rollout", {})
    steps: list[ShareStep] = []
    for start in phase_starts_data(report):
        if start.share is None:
            merchants = next(
                (
                    p.get("pilot_merchants") or []
                    for p in report.get("phases", [])
                    if p["index"] == start.index
                ),
                [],
            )
            label = f"{start.label}: {', '.join(merchants) or 'pilot'}"
            steps.append(ShareStep(start.at, 0.0, label))
        else:
            steps.append(
                ShareStep(start.at, start.share, f"{start.label}: {start.share:g}%")
            )
    finished = _time(rollout.get("finished_at"))
    status = rollout.get("status")
    if steps and finished and status in ("rolled_back", "rolling_back", "aborted"):
        steps.append(ShareStep(finished, 0.0, f"{status.replace('_', ' ')}: 0%"))
    elif steps:
        end = finished or _time(report.get("generated_at"))
        if end is not None and end > steps[-1].at:
            steps.append(
                ShareStep(end, steps[-1].share, "now" if not finished else status)
            )
    return tuple(steps)


def phase_comparisons_data(report: dict) -> tuple[PhaseComparison, ...]:
    """Return per started phase the error rates of the treatment and the
    control (baseline) variation from the outcome events (context only)."""
    rows = []
    for phase in (report.get("cohorts") or {}).get("phases", []):
        comparison = phase.get("comparison") or {}
        treatment = comparison.get("treatment") or {}
        control = comparison.get("control") or {}

        def rate(side: dict) -> float | None:
            value = side.get("error_rate")
            return None if value is None else value * 100

        rows.append(
            PhaseComparison(
                phase=phase["phase"],
                name=phase["name"],
                treatment_rate=rate(treatment),
                control_rate=rate(control),
                treatment_events=int(treatment.get("n") or 0),
                control_events=int(control.get("n") or 0),
            )
        )
    return tuple(rows)
