"""The rollout page's charts drawn as inline SVG with pygal, on the server.

``js=[]`` and the removal of pygal's config script keep the page free of
chart JavaScript (pygal's tooltips would load from a CDN); each dot carries
a ``<title>`` for the browser's own tooltip instead.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.utils import timezone

from canary.charts.data import (
    ANSWER_COLOURS,
    DECISION_COLOURS,
    DECISION_KINDS,
    DECISION_LABELS,
    NO_VALUE_LABEL,
    RESUME,
    CheckChart,
    Marker,
    PhaseComparison,
    PhaseStart,
    RunPoint,
    ShareStep,
)

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
