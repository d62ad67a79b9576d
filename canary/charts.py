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
import re
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


# -- drawing --------------------------------------------------------------------


_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.S)


def _render(plot: Any) -> str:
    """Return the chart as inline SVG without pygal's config script: the
    page runs no chart JavaScript (its tooltips come from a CDN), and the
    dots' ``<title>`` give the browser's own tooltips instead."""
    return _SCRIPT.sub("", plot.render(is_unicode=True))


def _local(value: dt.datetime) -> dt.datetime:
    # pygal hands its formatters naive UTC times: read them as UTC.
    if timezone.is_naive(value):
        value = value.replace(tzinfo=dt.UTC)
    return timezone.localtime(value)


def _clock(value: dt.datetime) -> str:
    return _local(value).strftime("%H:%M:%S")


def _style(colors: tuple[str, ...]) -> Any:
    from pygal.style import Style

    return Style(
        background="transparent",
        plot_background="#ffffff",
        foreground="#37474f",
        foreground_strong="#263238",
        foreground_subtle="#cfd8dc",
        font_family="system-ui, sans-serif",
        label_font_size=11,
        major_label_font_size=11,
        legend_font_size=12,
        title_font_size=14,
        colors=colors,
        # Light time guides; the phase boundaries (major guides) stand out.
        guide_stroke_color="#cfd8dc",
        guide_stroke_dasharray="2,4",
        major_guide_stroke_color="#455a64",
        major_guide_stroke_dasharray="6,3",
    )


def _config(colors: tuple[str, ...], **kwargs: Any) -> dict:
    return {
        "width": 1100,
        "height": 360,
        "js": [],  # pygal's tooltip script is on a CDN: serve nothing external
        "disable_xml_declaration": True,
        "style": _style(colors),
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 4,
        "truncate_legend": -1,
        "truncate_label": -1,
        "allow_interruptions": True,
        "print_values": False,
        "margin": 12,
        **kwargs,
    }


def _time_axis(
    phases: tuple[PhaseStart, ...], times: list[dt.datetime], ticks: int = 6
) -> dict:
    """Return the x axis: a little room either side, labels at a few even
    times and at every phase start (major: their guides are the phase
    boundaries, named ``phase 2 (10%)``)."""
    times = [_local(t) for t in times]
    if not times:
        return {}
    first, last = min(times), max(times)
    span = (last - first).total_seconds() or 60.0
    pad = dt.timedelta(seconds=span * 0.03)
    starts = [_local(p.at) for p in phases]
    # Phases started within the same second share one label.
    names: dict[int, str] = {}
    for at, phase in zip(starts, phases, strict=True):
        key = round(at.timestamp())
        names[key] = f"{names[key]} / {phase.label}" if key in names else phase.label
    unique = list({round(at.timestamp()): at for at in starts}.values())
    even = [first + dt.timedelta(seconds=span * k / ticks) for k in range(ticks + 1)]
    # Even labels too close to a phase start would overprint its name.
    even = [
        t
        for t in even
        if all(abs((t - at).total_seconds()) > span / 8 for at in starts)
    ]

    def fmt(value: dt.datetime) -> str:
        name = names.get(round(_local(value).timestamp()))
        return f"{name} {_clock(value)}" if name else _clock(value)

    return {
        "xrange": (first - pad, last + pad),
        "x_labels": sorted([*unique, *even]),
        "x_labels_major": unique,
        "show_minor_x_labels": True,
        "show_x_guides": True,
        "x_value_formatter": fmt,
    }


def _y_range(chart: CheckChart) -> tuple[float, float] | None:
    """Return a y range showing the estimates and the bound, so that the
    first, very wide intervals do not flatten everything else (they are
    cut at its edges)."""
    s = chart.scale
    values = [p.value * s for p in chart.points if p.value is not None]
    if chart.bound is not None:
        values.append(chart.bound * s)
        if chart.scale != 1.0:
            values.append(-chart.bound * s)  # a comparison: 0 in the middle
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.25 or abs(hi) * 0.25 or 1.0
    return lo - pad, hi + pad


def _clamp(value: float, bounds: tuple[float, float] | None) -> float:
    if bounds is None:
        return value
    return min(max(value, bounds[0]), bounds[1])


def _tooltip(p: RunPoint) -> str:
    return (
        f"{_clock(p.at)} phase {p.phase + 1}: {p.answer or p.verdict} (run {p.run_id})"
    )


def _marker_text(m: Marker) -> str:
    return (
        DECISION_LABELS[m.kind]
        + (f", phase {m.phase + 1}" if m.phase is not None else "")
        + (f": {m.reason}" if m.reason else "")
    )


# The series of a check chart, in order (pygal numbers them serie-0, ...):
# the line through the estimates, the runs by answer (serie-1 to serie-3),
# the runs without a value (serie-4), the intervals, the bound, then one
# series per decision kind that occurred.
RUN_SERIES = (
    ("not_worse", "not worse"),
    ("worse", "worse"),
    ("not_yet", "not yet (the gate waits)"),
)


def check_svg(chart: CheckChart) -> str:
    """Draw one check: each run a dot coloured by its answer (not worse,
    worse, not yet: the gate waited), its interval as a bar, the margin or
    threshold as a dashed line, a guide at every phase start, and a marker
    per decision on the bound line; hovering a dot says what it is."""
    import pygal

    s = chart.scale
    times = [p.at for p in chart.points] + [p.at for p in chart.phases]
    times += [m.at for m in chart.markers]
    kinds = [
        k for k in (*DECISION_KINDS, RESUME) if any(m.kind == k for m in chart.markers)
    ]
    colors = (
        "#90a4ae",
        *(ANSWER_COLOURS[a] for a, _ in RUN_SERIES),
        "#9e9e9e",
        "#ef9a9a",
        "#263238",
        *(DECISION_COLOURS[k] for k in kinds),
    )
    y_range = _y_range(chart)
    config = _config(
        colors,
        title=f"{chart.check}{' (dry run)' if chart.dry_run else ''}",
        y_title=chart.unit,
        **_time_axis(chart.phases, times),
    )
    if y_range is not None:
        config["range"] = y_range
    plot = pygal.DateTimeLine(**config)
    measured = [p for p in chart.points if p.value is not None]
    plot.add(
        "estimate",
        [(_local(p.at), _clamp(p.value * s, y_range)) for p in measured],
        show_dots=False,
    )
    for answer, label in RUN_SERIES:
        plot.add(
            label,
            [
                {
                    "value": (_local(p.at), p.value * s),
                    "tooltip": f"{_tooltip(p)}: {p.value * s:.4g}",
                    "label": f"run {p.run_id}",
                }
                for p in measured
                if (p.answer if p.answer in ANSWER_COLOURS else "not_yet") == answer
            ],
            stroke=False,
            dots_size=4,
        )
    y_mark = chart.bound * s if chart.bound is not None else 0.0
    # A run without a value (no data, an error) is still a run: a grey dot
    # on the bound line, so every run has its point.
    plot.add(
        NO_VALUE_LABEL,
        [
            {
                "value": (_local(p.at), y_mark),
                "tooltip": f"{_tooltip(p)}: no value",
                "label": f"run {p.run_id}",
            }
            for p in chart.points
            if p.value is None
        ],
        stroke=False,
        dots_size=4,
    )
    interval: list = []
    for p in chart.points:
        if p.lower is not None and p.upper is not None:
            interval += [
                (_local(p.at), _clamp(p.lower * s, y_range)),
                (_local(p.at), _clamp(p.upper * s, y_range)),
                (None, None),
            ]
    plot.add("interval", interval, show_dots=False, stroke_style={"width": 4})
    if chart.bound is not None and times:
        first, last = _local(min(times)), _local(max(times))
        plot.add(
            f"{chart.bound_label} {chart.bound * s:g}",
            [(first, chart.bound * s), (last, chart.bound * s)],
            show_dots=False,
            stroke_style={"width": 2.5, "dasharray": "12,5"},
        )
    else:
        plot.add(chart.bound_label, [])
    for kind in kinds:
        plot.add(
            DECISION_LABELS[kind],
            [
                {
                    "value": (_local(m.at), y_mark),
                    "tooltip": f"{_clock(m.at)} {_marker_text(m)}",
                    "label": _marker_text(m),
                }
                for m in chart.markers
                if m.kind == kind
            ],
            stroke=False,
            dots_size=8,
        )
    return _render(plot)


def share_svg(steps: tuple[ShareStep, ...], phases: tuple[PhaseStart, ...]) -> str:
    """Draw the treatment share over time as a filled step line."""
    import pygal

    plot = pygal.DateTimeLine(
        **_config(
            ("#2e7d32",),
            title="treatment share (% of merchants)",
            y_title="%",
            fill=True,
            range=(0, 100),
            height=240,
            show_legend=False,
            **_time_axis(phases, [step.at for step in steps]),
        )
    )
    values: list = []
    for i, step in enumerate(steps):
        if i:
            values.append((_local(step.at), steps[i - 1].share))
        values.append(
            {
                "value": (_local(step.at), step.share),
                "label": step.label,
                "tooltip": f"{_clock(step.at)} {step.label}",
            }
        )
    plot.add("treatment share", values)
    return _render(plot)


def comparison_svg(rows: tuple[PhaseComparison, ...]) -> str:
    """Draw the error rate of the treatment and the control per phase."""
    import pygal

    plot = pygal.Bar(
        **_config(
            ("#ef6c00", "#90a4ae"),
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
            {
                "value": row.treatment_rate,
                "tooltip": f"{row.label} treatment: {row.treatment_events} events",
            }
            for row in rows
        ],
    )
    plot.add(
        "control (baseline)",
        [
            {
                "value": row.control_rate,
                "tooltip": f"{row.label} control: {row.control_events} events",
            }
            for row in rows
        ],
    )
    return _render(plot)


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
