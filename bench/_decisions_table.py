"""Summaries and the printed table of bench/decisions.py."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from bench._decisions_fleet import (
    ALPHA,
    FLEET_SIZE,
    KINDS,
    POWER,
    RATE_RANGE,
    TEMPLATE,
    CanaryResult,
    Fleet,
    kind_n_star,
)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.quantile(np.array(values, dtype=float), q))


def summarize(results: Iterable[CanaryResult], fleet: Fleet) -> list[dict]:
    """Return one row of figures per kind, in the order first seen."""
    by_kind: dict[str, list[CanaryResult]] = {}
    for result in results:
        by_kind.setdefault(result.kind, []).append(result)
    rows = []
    for name, items in by_kind.items():
        kind = KINDS[name]
        count = len(items)

        def share(outcome: str, items: list[CanaryResult] = items) -> float:
            return sum(1 for r in items if r.outcome == outcome) / len(items)

        rolled = [r for r in items if r.outcome == "rolled_back"]
        detected = [r for r in rolled if r.delay_seconds is not None]
        row: dict[str, Any] = {
            "kind": name,
            "runs": count,
            "rolled_back": share("rolled_back"),
            "paused": share("paused"),
            "completed": share("completed"),
            "rolled_back_by_phase": {
                phase: sum(1 for r in rolled if r.phase == phase) for phase in range(4)
            },
            "rolled_back_error_prone_pilot": sum(
                1 for r in rolled if r.pilot_error_prone
            ),
            # A false rollback of a regressed canary: before its onset.
            "rolled_back_before_onset": sum(
                1 for r in rolled if not kind.is_healthy and r.delay_seconds is None
            ),
            "wall_seconds": statistics.fmean(r.wall_seconds for r in items),
            "n_star": kind_n_star(kind, fleet),
        }
        for label, values in (
            ("events", [r.delay_events for r in detected]),
            ("seconds", [r.delay_seconds for r in detected]),
            ("intervals", [r.delay_intervals for r in detected]),
            ("n_star_seconds", [r.n_star_seconds for r in items if r.n_star_seconds]),
        ):
            row[f"{label}_p50"] = _quantile(values, 0.5)
            row[f"{label}_p90"] = _quantile(values, 0.9)
        rows.append(row)
    return rows


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:,.0f} s"
    return f"{value:,.0f}"


def table_print(rows: list[dict], out: IO[str], *, title: str) -> None:
    """Print the figures as a table (rich) on ``out``."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for header in (
        "kind",
        "runs",
        "rolled back",
        "paused",
        "completed",
        "delay events p50/p90",
        "delay time p50/p90",
        "delay intervals p50/p90",
        "n* events",
        "p50 / n*",
        "n* time p50",
    ):
        table.add_column(header, justify="left" if header == "kind" else "right")
    for row in rows:
        table.add_row(
            row["kind"],
            str(row["runs"]),
            _pct(row["rolled_back"]),
            _pct(row["paused"]),
            _pct(row["completed"]),
            f"{_num(row['events_p50'])} / {_num(row['events_p90'])}",
            f"{_num(row['seconds_p50'], 's')} / {_num(row['seconds_p90'], 's')}",
            f"{_num(row['intervals_p50'])} / {_num(row['intervals_p90'])}",
            _num(row["n_star"]),
            f"{row['events_p50'] / row['n_star']:.2f}"
            if row["n_star"] and row["events_p50"] is not None
            else "-",
            _num(row["n_star_seconds_p50"], "s"),
        )
    Console(file=out, width=172, force_terminal=False, color_system=None).print(table)
    for row in rows:
        phases = row["rolled_back_by_phase"]
        out.write(
            f"{row['kind']}: rolled back in pilot/10%/50%/100% = "
            f"{phases[0]}/{phases[1]}/{phases[2]}/{phases[3]}; "
            f"with an error-prone pilot: {row['rolled_back_error_prone_pilot']}; "
            f"before the regression began: {row['rolled_back_before_onset']}; "
            f"{row['wall_seconds']:.1f} s of wall time per canary\n"
        )


def table_from_json(paths: list[str], seed: int) -> int:
    """Print the table of the canaries in ``paths`` (runs split over
    processes with --first-run and --json)."""
    import json

    from bench._decisions_escalation import (
        ESCALATION_KINDS,
        EscalationResult,
        escalation_summarize,
        escalation_table_print,
    )
    from bench._decisions_release import (
        RELEASE_KINDS,
        ReleaseResult,
        release_summarize,
        release_table_print,
    )

    items = [item for path in paths for item in json.loads(Path(path).read_text())]
    releases = [ReleaseResult(**i) for i in items if i["kind"] in RELEASE_KINDS]
    items = [i for i in items if i["kind"] not in RELEASE_KINDS]
    results = [CanaryResult(**i) for i in items if i["kind"] not in ESCALATION_KINDS]
    escalations = [
        EscalationResult(**i) for i in items if i["kind"] in ESCALATION_KINDS
    ]
    fleet = Fleet.build(seed)
    counts = {r.kind for r in results}
    if results:
        table_print(
            summarize(results, fleet),
            sys.stdout,
            title=f"{TEMPLATE}, {len(results)} canaries ({len(counts)} kinds) from "
            f"{len(paths)} file(s), seed {seed}, {FLEET_SIZE} merchants at "
            f"{RATE_RANGE[0]:g}-{RATE_RANGE[1]:g} req/s",
        )
    if escalations:
        escalation_table_print(escalation_summarize(escalations), sys.stdout)
    if releases:
        release_table_print(release_summarize(releases), sys.stdout)
    print(
        f"fleet: traffic-weighted error rate {fleet.weighted_error:.4f}, "
        f"p95 {fleet.latency_quantile(0.95):.1f} ms; n* at alpha {ALPHA:g} "
        f"(one-sided), power {POWER:.0%}"
    )
    return 0
