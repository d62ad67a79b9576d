"""The rollout page's charts: chart data from the report, then SVG.

Two layers. The ``*_data`` functions are pure: they read the plain data of
``canary.report.report_build`` (check runs, phases, the gate decisions of
the audit log, the cohort totals) and return small frozen records, so
they are tested without a database or a drawing. The ``*_svg`` functions
draw those records with pygal as inline SVG rendered on the server: no
JavaScript, nothing loaded from outside (``js=[]``: pygal's tooltips
would come from a CDN), so the page works offline.

Phase numbers people read are 1-based ("phase 1 (pilot)"); the data keep
the 0-based index the models use.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

# Decision kinds marked on the charts, from the gate decisions of the audit
# log (canary.report_evidence) and the rollback escalations.
ADVANCE, WAIT, PAUSE, ROLLBACK = "advance", "wait", "pause", "rollback"
ESCALATION, AWAIT_APPROVAL, ABORT, RESUME = (
    "escalation",
    "await_approval",
    "abort",
    "resume",
)
DECISION_KINDS = (ADVANCE, WAIT, PAUSE, ROLLBACK, ESCALATION, AWAIT_APPROVAL, ABORT)
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


# -- drawing --------------------------------------------------------------------


def _local(value: dt.datetime) -> dt.datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value


def _clock(value: dt.datetime) -> str:
    return _local(value).strftime("%H:%M:%S")


def _style() -> Any:
    from pygal.style import Style

    return Style(
        background="transparent",
        plot_background="#ffffff",
        foreground="#37474f",
        foreground_strong="#263238",
        foreground_subtle="#b0bec5",
        font_family="system-ui, sans-serif",
        label_font_size=11,
        major_label_font_size=11,
        legend_font_size=12,
        title_font_size=14,
        colors=("#1565c0", "#90caf9", "#c62828", "#546e7a", *DECISION_COLOURS.values()),
    )


def _config(**kwargs: Any) -> dict:
    return {
        "width": 1100,
        "height": 360,
        "js": [],  # pygal's tooltip script is on a CDN: serve nothing external
        "disable_xml_declaration": True,
        "style": _style(),
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 5,
        "truncate_legend": -1,
        "truncate_label": -1,
        "allow_interruptions": True,
        "x_label_rotation": 0,
        "print_values": False,
        "margin": 12,
        **kwargs,
    }


def _x_labels(phases: tuple[PhaseStart, ...]) -> tuple[list, Any]:
    """Return x labels at the phase starts (their guides are the phase
    boundaries) and the formatter naming them."""
    names = {round(_local(p.at).timestamp()): p.label for p in phases}

    def fmt(value: dt.datetime) -> str:
        key = round(value.timestamp()) if isinstance(value, dt.datetime) else None
        name = names.get(key)
        return f"{name} {_clock(value)}" if name else _clock(value)

    return [_local(p.at) for p in phases], fmt


def check_svg(chart: CheckChart) -> str:
    """Draw one check: estimate dots coloured by answer, the interval of
    each run as a bar, the margin or threshold as a dashed line, a guide at
    every phase start, and a marker per decision on the bound line."""
    import pygal

    labels, fmt = _x_labels(chart.phases)
    config = _config(
        title=f"{chart.check}{' (dry run)' if chart.dry_run else ''}",
        y_title=chart.unit,
        x_value_formatter=fmt,
        show_x_guides=True,
    )
    if labels:
        config["x_labels"] = labels
    plot = pygal.DateTimeLine(**config)
    s = chart.scale
    plot.add(
        "estimate",
        [
            {
                "value": (_local(p.at), None if p.value is None else p.value * s),
                "color": ANSWER_COLOURS.get(p.answer, "#546e7a"),
                "label": f"run {p.run_id}, phase {p.phase + 1}: {p.answer or p.verdict}",
            }
            for p in chart.points
        ],
        dots_size=4,
    )
    interval: list = []
    for p in chart.points:
        if p.lower is not None and p.upper is not None:
            interval += [
                (_local(p.at), p.lower * s),
                (_local(p.at), p.upper * s),
                (None, None),
            ]
    plot.add("interval", interval, show_dots=False, stroke_style={"width": 5})
    times = [p.at for p in chart.points] + [p.at for p in chart.phases]
    times += [m.at for m in chart.markers]
    if chart.bound is not None and times:
        first, last = _local(min(times)), _local(max(times))
        plot.add(
            f"{chart.bound_label} {chart.bound * s:g}",
            [(first, chart.bound * s), (last, chart.bound * s)],
            show_dots=False,
            stroke_style={"width": 2, "dasharray": "8,4"},
        )
    else:
        plot.add(chart.bound_label, [])
    y_mark = chart.bound * s if chart.bound is not None else 0.0
    for kind in (*DECISION_KINDS, RESUME):
        found = [m for m in chart.markers if m.kind == kind]
        if kind == WAIT:
            # Each run that said "not yet" is a tick at which the gate waited.
            values = [
                {
                    "value": (_local(p.at), y_mark),
                    "label": f"wait, phase {p.phase + 1}",
                }
                for p in chart.points
                if p.answer == "not_yet"
            ]
        else:
            values = [
                {
                    "value": (_local(m.at), y_mark),
                    "label": (
                        f"{DECISION_LABELS[kind]}"
                        + (f", phase {m.phase + 1}" if m.phase is not None else "")
                        + (f": {m.reason}" if m.reason else "")
                    ),
                }
                for m in found
            ]
        if values:
            plot.add(
                DECISION_LABELS[kind],
                values,
                stroke=False,
                dots_size=3 if kind == WAIT else 7,
                color=DECISION_COLOURS[kind],
            )
    return plot.render(is_unicode=True)


def share_svg(steps: tuple[ShareStep, ...], phases: tuple[PhaseStart, ...]) -> str:
    """Draw the treatment share over time as a filled step line."""
    import pygal

    labels, fmt = _x_labels(phases)
    config = _config(
        title="treatment share (% of merchants)",
        y_title="%",
        x_value_formatter=fmt,
        show_x_guides=True,
        fill=True,
        range=(0, 100),
        height=260,
        show_legend=False,
    )
    if labels:
        config["x_labels"] = labels
    plot = pygal.DateTimeLine(**config)
    values: list = []
    for i, step in enumerate(steps):
        if i:
            values.append((_local(step.at), steps[i - 1].share))
        values.append({"value": (_local(step.at), step.share), "label": step.label})
    plot.add("treatment share", values, color="#2e7d32")
    return plot.render(is_unicode=True)


def comparison_svg(rows: tuple[PhaseComparison, ...]) -> str:
    """Draw the error rate of the treatment and the control per phase."""
    import pygal

    plot = pygal.Bar(
        **_config(
            title="treatment vs control (baseline) error rate per phase, raw totals",
            y_title="error rate (%)",
            height=300,
            print_values=True,
            value_formatter=lambda v: f"{v:.2f}%",
        )
    )
    plot.x_labels = [row.label for row in rows]
    plot.add(
        "treatment",
        [
            {"value": row.treatment_rate, "label": f"{row.treatment_events} events"}
            for row in rows
        ],
        color="#ef6c00",
    )
    plot.add(
        "control (baseline)",
        [
            {"value": row.control_rate, "label": f"{row.control_events} events"}
            for row in rows
        ],
        color="#90a4ae",
    )
    return plot.render(is_unicode=True)


def rollout_charts(report: dict) -> list[dict]:
    """Return the rollout page's charts: ``{"id", "title", "svg"}`` each,
    per check first, then the treatment share, then the comparison."""
    charts = []
    for i, chart in enumerate(check_charts_data(report)):
        charts.append(
            {
                "id": f"chart-check-{i}",
                "kind": "check",
                "title": chart.check,
                "points": len(chart.points),
                "svg": check_svg(chart),
            }
        )
    steps = share_steps_data(report)
    if steps:
        charts.append(
            {
                "id": "chart-share",
                "kind": "share",
                "title": "treatment share",
                "points": len(steps),
                "svg": share_svg(steps, phase_starts_data(report)),
            }
        )
    rows = phase_comparisons_data(report)
    if any(r.treatment_events or r.control_events for r in rows):
        charts.append(
            {
                "id": "chart-comparison",
                "kind": "comparison",
                "title": "treatment vs control",
                "points": len(rows),
                "svg": comparison_svg(rows),
            }
        )
    return charts
