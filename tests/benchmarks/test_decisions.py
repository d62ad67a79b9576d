"""Smoke test of the decision benchmark (bench/decisions.py): its core runs
simulated canaries through the real controller and ingestion service on the
test database, on a fake clock, and prints its table.

``transactional_db``: the benchmark commits like production, so a rollback
decision's on-commit work (the rollback run, the next tick) really runs.
"""

from __future__ import annotations

import io

import pytest

from bench import _decisions_fleet, decisions
from canary.models import OutcomeEvent, Rollout, RolloutStatus

HEADERS = (
    "kind",
    "rolled back",
    "paused",
    "completed",
    "delay events p50/p90",
    "delay time p50/p90",
    "delay intervals p50/p90",
    "n* events",
    "n* time p50",
)


def test_n_star__one_to_three_percent__textbook_value():
    # Given: 1% vs 3%, one-sided alpha 0.05, power 80% (by hand: 604.9)
    # When
    needed = _decisions_fleet.n_star(0.01, 0.03)
    # Then
    assert needed == 605


def test_benchmark_run__gross_regression_and_healthy__table_printed_gross_rolled_back(
    transactional_db,
):
    # Given: one healthy canary and one whose treatment fails 30 points more
    # often, on the plan's durations scaled to 5% so the test stays short
    out = io.StringIO()
    # When
    rows, results = decisions.benchmark_run(
        kinds=["healthy", "gross-errors+30pp"],
        runs=1,
        seed=7,
        duration_scale=0.05,
        out=out,
    )
    # Then: the table and its figures
    text = out.getvalue()
    for header in HEADERS:
        assert header in text
    assert "healthy" in text and "gross-errors+30pp" in text
    assert "n* at alpha 0.05 (one-sided), power 80%" in text
    by_kind = {row["kind"]: row for row in rows}
    gross = by_kind["gross-errors+30pp"]
    assert gross["runs"] == 1 and gross["rolled_back"] == 1.0
    assert gross["n_star"] is not None and gross["n_star"] > 0
    assert gross["events_p50"] > 0 and gross["intervals_p50"] >= 1
    assert by_kind["healthy"]["events_p50"] is None  # nothing to detect
    # Then: the rollouts really ran (rolled back by the controller, events
    # stored by the ingestion service)
    rolled = [r for r in results if r.kind == "gross-errors+30pp"][0]
    assert rolled.check == "error_rate"
    statuses = set(Rollout.objects.values_list("status", flat=True))
    assert RolloutStatus.ROLLED_BACK in statuses
    assert OutcomeEvent.objects.count() == sum(r.events for r in results)
    assert rolled.delay_seconds == pytest.approx(rolled.ended_after)
