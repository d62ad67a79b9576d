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

from canary.charts.data import (  # noqa: F401 (re-exported)
    ADVANCE,
    ANSWER_COLOURS,
    DECISION_COLOURS,
    DECISION_KINDS,
    DECISION_LABELS,
    ESCALATION,
    NO_VALUE_LABEL,
    PAUSE,
    ROLLBACK,
    WAIT,
    CheckChart,
    Marker,
    PhaseComparison,
    PhaseStart,
    RunPoint,
    ShareStep,
    check_charts_data,
    decision_markers_data,
    phase_comparisons_data,
    phase_starts_data,
    share_steps_data,
)
from canary.charts.draw import (  # noqa: F401 (re-exported)
    RUN_SERIES,
    _clamp,
    _y_range,
    check_svg,
    comparison_svg,
    share_svg,
)


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
