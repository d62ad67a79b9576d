"""canary.charts: chart data from the report's plain data (no database),
and the SVG drawn from it (inline, no script, nothing external)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from canary import charts

T0 = dt.datetime(2026, 12, 1, 10, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat()


def run(rid: int, seconds: float, phase: int, value, answer: str, **extra) -> dict:
    return {
        "id": rid,
        "phase": phase,
        "measured_at": at(seconds),
        "value": value,
        "verdict": {"not_worse": "pass", "worse": "fail"}.get(answer, "not_yet"),
        "answer": answer,
        "estimate": extra.get("estimate"),
        "lower": extra.get("lower"),
        "upper": extra.get("upper"),
        "metric": extra.get("metric"),
        "limit": extra.get("limit"),
        "message": "",
    }


def report(**overrides) -> dict:
    """A rolled-back rollout: pilot passed at 60 s, 10% rolled back at 100 s,
    escalated at 130 s, finished at 140 s."""
    base = {
        "rollout": {"status": "rolled_back", "finished_at": at(140)},
        "generated_at": at(200),
        "phases": [
            {
                "index": 0,
                "name": "pilot",
                "target_type": "pilot",
                "percentage": None,
                "pilot_merchants": ["m-1001"],
                "started_at": at(0),
            },
            {
                "index": 1,
                "name": "10%",
                "target_type": "percentage",
                "percentage": 10.0,
                "pilot_merchants": [],
                "started_at": at(60),
            },
            {
                "index": 2,
                "name": "50%",
                "target_type": "percentage",
                "percentage": 50.0,
                "pilot_merchants": [],
                "started_at": None,
            },
        ],
        "evidence": [
            {
                "index": 0,
                "decisions": [
                    {"at": at(60), "decision": "advance", "reason": "gates open"}
                ],
            },
            {
                "index": 1,
                "decisions": [
                    {"at": at(100), "decision": "rollback", "reason": "errors worse"}
                ],
            },
            {"index": 2, "decisions": []},
        ],
        "decisions": [
            {"at": at(0), "action": "rollout.transition", "explanation": "start"},
            {
                "at": at(130),
                "action": "rollout.rollback_escalated",
                "explanation": "still worse: level 2",
            },
        ],
        "checks": [
            {
                "name": "errors",
                "mode": "compare",
                "metric": "error_rate",
                "margin": 0.01,
                "threshold": None,
                "comparator": "lt",
                "dry_run": False,
                "runs": [
                    run(
                        1,
                        10,
                        0,
                        0.002,
                        "not_yet",
                        estimate=0.002,
                        lower=-0.03,
                        upper=0.034,
                    ),
                    run(
                        2,
                        50,
                        0,
                        0.001,
                        "not_worse",
                        estimate=0.001,
                        lower=-0.004,
                        upper=0.006,
                    ),
                    run(3, 80, 1, None, "not_yet"),
                    run(4, 95, 1, 0.04, "worse", estimate=0.04, lower=0.03, upper=0.05),
                ],
            },
            {
                "name": "p95",
                "mode": "absolute",
                "metric": None,
                "margin": None,
                "threshold": 300.0,
                "comparator": "lt",
                "dry_run": True,
                "runs": [run(5, 20, 0, 120.0, "not_worse", limit=250.0)],
            },
        ],
        "cohorts": {
            "phases": [
                {
                    "phase": 0,
                    "name": "pilot",
                    "comparison": {
                        "treatment": {"n": 100, "error_rate": 0.02},
                        "control": {"n": 900, "error_rate": 0.01},
                    },
                },
                {"phase": 1, "name": "10%", "comparison": None},
            ]
        },
    }
    base.update(overrides)
    return base


def test_check_charts_data__compare_check__estimates_intervals_margin():
    # When
    errors, p95 = charts.check_charts_data(report())
    # Then: a compare check charts its estimate in points against its margin
    assert errors.check == "errors" and errors.bound == 0.01
    assert errors.bound_label == "margin" and errors.scale == 100.0
    assert errors.unit.endswith("(pp)")
    assert [p.run_id for p in errors.points] == [1, 2, 3, 4]
    assert [p.value for p in errors.points] == [0.002, 0.001, None, 0.04]
    assert (errors.points[3].lower, errors.points[3].upper) == (0.03, 0.05)
    assert [p.answer for p in errors.points] == [
        "not_yet",
        "not_worse",
        "not_yet",
        "worse",
    ]
    # ... a threshold check its value against the limit its runs recorded
    assert p95.bound == 250.0 and p95.scale == 1.0 and p95.dry_run
    assert p95.bound_label == "threshold <"


def test_decision_markers_data__every_decision_oldest_first():
    # When
    markers = charts.decision_markers_data(report())
    # Then: the gate's decisions and the escalation, with their phases
    assert [(m.kind, m.phase, m.reason) for m in markers] == [
        ("advance", 0, "gates open"),
        ("rollback", 1, "errors worse"),
        ("escalation", None, "still worse: level 2"),
    ]
    assert markers[0].at == T0 + dt.timedelta(seconds=60)


def test_share_steps_data__pilot_then_percent_then_rolled_back_to_zero():
    # When
    steps = charts.share_steps_data(report())
    # Then
    assert [(s.share, s.label) for s in steps] == [
        (0.0, "phase 1 (pilot): m-1001"),
        (10.0, "phase 2 (10%): 10%"),
        (0.0, "rolled back: 0%"),
    ]
    assert steps[-1].at == T0 + dt.timedelta(seconds=140)


def test_share_steps_data__running__holds_the_share_until_now():
    # Given
    data = report(rollout={"status": "running", "finished_at": None})
    # When
    steps = charts.share_steps_data(data)
    # Then
    assert [(s.share, s.label) for s in steps][-1] == (10.0, "now")
    assert steps[-1].at == T0 + dt.timedelta(seconds=200)


def test_share_steps_data__never_started__no_steps():
    assert charts.share_steps_data(report(phases=[])) == ()


def test_phase_comparisons_data__rates_in_percent_and_missing_phase_empty():
    # When
    rows = charts.phase_comparisons_data(report())
    # Then
    assert rows[0].label == "phase 1 (pilot)"
    assert rows[0].treatment_rate == pytest.approx(2.0)
    assert rows[0].control_rate == pytest.approx(1.0)
    assert (rows[0].treatment_events, rows[0].control_events) == (100, 900)
    assert (rows[1].treatment_rate, rows[1].treatment_events) == (None, 0)


def _dots(svg: str, serie: int) -> list[str]:
    """Return the values of the dots of one series of a pygal SVG."""
    overlay = svg[svg.index('class="plot overlay"') :]
    match = re.search(
        rf'<g class="series serie-{serie} color-{serie}">(.*?)</g>(?=<g class="series|</g>)',
        overlay,
        re.S,
    )
    if match is None:
        return []
    return re.findall(r'<desc class="value">([^<]*)</desc>', match.group(1))


def test_check_svg__one_dot_per_run_by_answer_and_no_script():
    # Given
    errors, _ = charts.check_charts_data(report())
    # When
    svg = charts.check_svg(errors)
    # Then: runs by answer (serie-1 not worse, 2 worse, 3 not yet), the run
    # without a value on the margin line (serie-4); values in pp
    assert [v.split(": ")[-1] for v in _dots(svg, 1)] == ["0.1"]
    assert [v.split(": ")[-1] for v in _dots(svg, 2)] == ["4"]
    assert [v.split(": ")[-1] for v in _dots(svg, 3)] == ["0.2"]
    assert [v.split(": ")[-1] for v in _dots(svg, 4)] == ["1"]
    assert "margin 1" in svg
    # ... the phases are named 1-based on the x axis, the decisions marked
    assert "phase 1 (pilot) 10:00:00" in svg and "phase 2 (10%) 10:01:00" in svg
    assert "phase 0" not in svg
    assert "advance, phase 1: gates open" in svg
    assert "rollback, phase 2: errors worse" in svg
    assert "escalation: still worse: level 2" in svg
    # ... inline, with no script and nothing fetched from elsewhere
    assert svg.startswith("<svg") and "<script" not in svg
    assert "<?xml" not in svg
    assert not re.search(r'(?:href|src)="(?:https?:)?//', svg)


def test_check_svg__wide_first_interval__cut_at_the_chart_range():
    # Given: the first interval (-3 pp to +3.4 pp) is far wider than the
    # estimates (0.1 to 4 pp) and the margin (+-1 pp)
    errors, _ = charts.check_charts_data(report())
    # When
    low, high = charts._y_range(errors)
    # Then: the range is the estimates and the margin, a quarter added
    # either side, and the interval is cut at its edges
    assert (low, high) == pytest.approx((-1.0 - 1.25, 4.0 + 1.25))
    assert charts._clamp(-3.0, (low, high)) == low
    assert charts._clamp(3.4, (low, high)) == 3.4


def test_share_and_comparison_svg__labels_and_values():
    # Given
    data = report()
    # When
    share = charts.share_svg(
        charts.share_steps_data(data), charts.phase_starts_data(data)
    )
    comparison = charts.comparison_svg(charts.phase_comparisons_data(data))
    # Then
    assert "phase 2 (10%): 10%" in share and "<script" not in share
    assert "2.00%" in comparison and "1.00%" in comparison
    assert "phase 1 (pilot)" in comparison


def test_rollout_charts__one_per_check_then_share_then_comparison():
    # When
    found = charts.rollout_charts(report())
    # Then
    assert [(c["id"], c["points"]) for c in found] == [
        ("chart-check-0", 4),
        ("chart-check-1", 1),
        ("chart-share", 3),
        ("chart-comparison", 2),
    ]


def test_rollout_charts__no_outcome_events__no_comparison_chart():
    # Given
    data = report(
        cohorts={"phases": [{"phase": 0, "name": "pilot", "comparison": None}]}
    )
    # When
    kinds = [c["kind"] for c in charts.rollout_charts(data)]
    # Then
    assert kinds == ["check", "check", "share"]
