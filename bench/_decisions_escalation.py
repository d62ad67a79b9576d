"""Escalation kinds of bench/decisions.py: a fault the flag cannot undo.

``persisting-errors+5pp``: the treated merchants' requests fail 5 points
more often (as a bad migration that only touched their data would do),
and that stays so after the flag is rolled back, for every merchant that
was ever treated, until a rollback run of level 2 or more (the deployment
revert) succeeded. ``flag-errors+5pp`` is its control: the same fault,
gone as soon as the flag is back (level 1 fixes it; escalating would be
wrong). ``escalation_simulate`` runs one such canary through the real
controller -- detection, the rollback, the verification window, automatic
escalation -- with a real deployment revert (the symlink backend in a
temporary folder), on the same fleet, clock and ingestion as
``bench.decisions.canary_simulate``; ``escalation_summarize`` and
``escalation_table_print`` give the figures (share reaching the level that
fixes the fault, share escalated beyond it, delays).

How bench/decisions.py wires it (it owns that module)::

    from bench._decisions_escalation import (
        ESCALATION_KINDS, escalation_simulate, escalation_summarize,
        escalation_table_print, verification_close,
    )
    # --kinds accepts the names of ESCALATION_KINDS too; in benchmark_run,
    # for such a name:
    result = escalation_simulate(
        kind=ESCALATION_KINDS[name], run=run, seed=seed, fleet=fleet,
        environment=environment, report_fraction=report_fraction,
        duration_scale=duration_scale,
    )
    # keep those results apart, then after the main table:
    escalation_table_print(escalation_summarize(escalation_results), out)
    # and at the end of canary_simulate, for every other kind (a rollback
    # opens a window there too; the fake clock restarts at every canary):
    verification_close(rollout)

The rollouts use the plan's default check set (``checks=None``; the
verification needs compare checks), unless ``checks`` is given.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from bench._decisions_fleet import (
    BEAT_SECONDS,
    LOOKBACK_SECONDS,
    REQUEST_LATENCY_SIGMA,
    START,
    TEMPLATE,
    Fleet,
)


@dataclass(frozen=True)
class EscalationKind:
    """A fault on the treated merchants and the rollback level that ends it."""

    name: str
    error_delta: float
    fixed_by_level: int  # 1: the flag; 2: the deployment revert


ESCALATION_KINDS: dict[str, EscalationKind] = {
    kind.name: kind
    for kind in (
        EscalationKind("persisting-errors+5pp", error_delta=0.05, fixed_by_level=2),
        EscalationKind("flag-errors+5pp", error_delta=0.05, fixed_by_level=1),
    )
}


@dataclass
class EscalationResult:
    """How one escalation canary ended (simulated seconds from start)."""

    kind: str
    run: int
    outcome: str  # the rollout's status at the end
    rolled_back_after: float | None  # the first rollback decision
    first_level: int | None  # the level of the first rollback run
    reached_level: int  # the highest level whose run succeeded (0: none)
    fixed: bool  # the fault ended (its fixing level succeeded)
    over_escalated: bool  # a level above the fixing one was run
    verification_state: str
    escalated_after: float | None  # from the first rollback to escalating
    verified_after: float | None  # from the first rollback to the window's end
    events: int = 0
    wall_seconds: float = 0.0


@contextlib.contextmanager
def _deploy_backend() -> Iterator[Path]:
    """A symlink deploy backend in a temporary folder, for every service."""
    from django.conf import settings
    from django.test.utils import override_settings

    with tempfile.TemporaryDirectory(prefix="cp-bench-escalation-") as tmp:
        root = Path(tmp)
        for version in ("v1", "v2"):
            (root / "releases" / version).mkdir(parents=True)
        os.symlink("releases/v2", root / "current")
        conf = {
            **(getattr(settings, "CONTROLPLANE", {}) or {}),
            "ROLLBACK_DEPLOY_BACKENDS": {
                "default": {"type": "symlink", "root": str(root)}
            },
        }
        with override_settings(CONTROLPLANE=conf):
            yield root


def _fault_events(
    sim: Any,
    flag_key: str,
    start: dt.datetime,
    end: dt.datetime,
    fraction: float,
    faulty: np.ndarray,
    delta: float,
) -> list[dict]:
    """Return every merchant's reported events in [start, end): variation as
    the flag assigns it (``sim.treated``), ``delta`` more failures where
    ``faulty``."""
    from bench._decisions_traffic import _drift

    fleet, rng = sim.fleet, sim.rng
    span = (end - start).total_seconds()
    if span <= 0:
        return []
    drift = _drift(sim, (start - START).total_seconds())
    counts = rng.poisson(fleet.rates * fraction * span)
    errors = np.clip(fleet.errors * drift + np.where(faulty, delta, 0.0), 0.0, 1.0)
    log_medians = fleet.log_medians + math.log(drift)
    base = start.timestamp()
    out: list[dict] = []
    for index in np.nonzero(counts)[0]:
        n = int(counts[index])
        failed = rng.random(n) < errors[index]
        durations = np.exp(rng.normal(log_medians[index], REQUEST_LATENCY_SIGMA, n))
        times = base + np.sort(rng.random(n)) * span
        variation = "on" if sim.treated[index] else "off"
        out.extend(
            {
                "flag": flag_key,
                "merchant": fleet.keys[index],
                "variation": variation,
                "outcome": "failure" if failed[i] else "success",
                "duration_ms": round(float(durations[i]), 3),
                "occurred_at": float(times[i]),
            }
            for i in range(n)
        )
    sim.events += len(out)
    return out


def _reached_level(rollout: Any) -> int:
    from canary.services import rollout_rollback_runs

    levels = [
        r.level for r in rollout_rollback_runs(rollout) if r.status == "succeeded"
    ]
    return max(levels, default=0)


def _next_verification_time(rollout: Any, now: dt.datetime) -> dt.datetime:
    due = [
        when
        for when in rollout.checks.filter(mode="compare", dry_run=False).values_list(
            "next_due_at", flat=True
        )
        if when is not None and when > now
    ]
    target = min(due) if due else now + dt.timedelta(seconds=BEAT_SECONDS)
    beats = max(1, math.ceil((target - now).total_seconds() / BEAT_SECONDS - 1e-9))
    return now + dt.timedelta(seconds=beats * BEAT_SECONDS)


def escalation_simulate(
    *,
    kind: EscalationKind,
    run: int,
    seed: int,
    fleet: Fleet,
    environment: Any,
    report_fraction: float,
    duration_scale: float | None = None,
    checks: list[dict] | None = None,
    max_seconds_after_rollback: float | None = None,
) -> EscalationResult:
    """Run one escalation canary to the end of its verification; return how
    it ended. ``max_seconds_after_rollback`` bounds the simulated time after
    the first rollback (default: three windows of CANARY_VERIFY_SECONDS)."""
    from bench._decisions_fleet import Kind
    from bench._decisions_traffic import Simulation, _assign, _ingest
    from bench.decisions import _next_time
    from canary import clock
    from canary.controller import controller_tick
    from canary.models import RolloutStatus
    from canary.services.operator import rollout_start_checked
    from canary.services.templates import rollout_create_from_template
    from canary.services.verification import OPEN
    from controlplane.audit.actors import SYSTEM
    from controlplane.conf import setting
    from flags import services as flag_services
    from flags.models import Environment
    from rollback.services import deployment_record

    Status = RolloutStatus
    wall = time.perf_counter()
    rng = np.random.default_rng(
        [seed, run, 1000 + list(ESCALATION_KINDS).index(kind.name)]
    )
    sim = Simulation(
        fleet=fleet,
        kind=Kind(kind.name, error_delta=kind.error_delta),
        rng=rng,
        drift_phase=float(rng.uniform(0, 2 * math.pi)),
    )
    size = len(fleet.keys)
    none = np.zeros(size, dtype=bool)
    affected = none.copy()
    pilot = fleet.keys[int(rng.integers(size))]
    flag_key = f"bench-{seed}-{kind.name.replace('+', '-')}-{run}"
    fake = clock.FakeClock(START)
    with clock.swapped(fake), _deploy_backend():
        flag = flag_services.flag_create(actor=SYSTEM, key=flag_key)
        fake.advance(LOOKBACK_SECONDS)
        sim.treated = none.copy()
        _ingest(
            _fault_events(sim, flag_key, START, fake(), report_fraction, none, 0.0),
            environment,
        )
        for version in ("v1", "v2"):
            deployment = deployment_record(
                actor=SYSTEM,
                service=f"svc-{flag_key}",
                environment=environment,
                version=version,
                artifact=f"img:{version}",
                migration_state={},
            )
        rollout = rollout_create_from_template(
            actor=SYSTEM,
            template=TEMPLATE,
            flag=flag,
            environment=environment,
            pilot_merchants=[pilot],
            checks=checks,
            duration_scale=duration_scale,
            deployment=deployment.pk,
        )
        rollout, _ = rollout_start_checked(rollout_id=rollout.pk, actor=SYSTEM)
        started = fake()
        previous = fake()
        version = None
        rolled_back_at: dt.datetime | None = None
        escalated_at: dt.datetime | None = None
        ended_at: dt.datetime | None = None
        deadline: dt.datetime | None = None
        limit = max_seconds_after_rollback or 3 * float(
            setting("CANARY_VERIFY_SECONDS")
        )
        while True:
            rollout.refresh_from_db()
            now_version = (
                Environment.objects.filter(pk=environment.pk)
                .values_list("ruleset_version", flat=True)
                .get()
            )
            if now_version != version:
                _assign(sim, environment, flag_key)
                version = now_version
            affected |= sim.treated
            reached = _reached_level(rollout)
            if rollout.status in (Status.RUNNING, Status.PAUSED):
                faulty = sim.treated
            elif reached >= kind.fixed_by_level:
                faulty = none
            else:
                # After the flag is back: the fault stays with every
                # merchant ever treated, unless the flag was its cause.
                faulty = affected if kind.fixed_by_level > 1 else sim.treated
            _ingest(
                _fault_events(
                    sim,
                    flag_key,
                    previous,
                    fake(),
                    report_fraction,
                    faulty,
                    kind.error_delta,
                ),
                environment,
            )
            previous = fake()
            controller_tick()
            rollout.refresh_from_db()
            if rolled_back_at is None and rollout.status in (
                Status.ROLLING_BACK,
                Status.ROLLED_BACK,
            ):
                # The run executes on commit: it may be rolled back already.
                rolled_back_at = fake()
                deadline = rolled_back_at + dt.timedelta(seconds=limit)
            if escalated_at is None and len(list(_levels(rollout))) > 1:
                escalated_at = fake()  # a second rollback run: an escalation
            if rollout.status == Status.RUNNING:
                fake.set(_next_time(rollout, fake()))
                continue
            if rollout.status in (Status.PAUSED, Status.COMPLETED, Status.ABORTED):
                break
            if rollout.status == Status.ROLLED_BACK and (
                rollout.verification_state not in OPEN
            ):
                ended_at = fake()
                break
            if deadline is not None and fake() >= deadline:
                break
            fake.set(_next_verification_time(rollout, fake()))
        levels = list(_levels(rollout))
        result = EscalationResult(
            kind=kind.name,
            run=run,
            outcome=rollout.status,
            rolled_back_after=(rolled_back_at - started).total_seconds()
            if rolled_back_at
            else None,
            first_level=levels[0] if levels else None,
            reached_level=_reached_level(rollout),
            fixed=_reached_level(rollout) >= kind.fixed_by_level,
            over_escalated=max(levels, default=0) > kind.fixed_by_level,
            verification_state=rollout.verification_state,
            escalated_after=(escalated_at - rolled_back_at).total_seconds()
            if escalated_at and rolled_back_at
            else None,
            verified_after=(ended_at - rolled_back_at).total_seconds()
            if ended_at and rolled_back_at
            else None,
            events=sim.events,
        )
        if rollout.status in (Status.RUNNING, Status.PAUSED):
            from canary.services import rollout_abort

            rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="benchmark end")
        verification_close(rollout)
    result.wall_seconds = time.perf_counter() - wall
    return result


def verification_close(rollout: Any) -> None:
    """End the rollout's verification window if it is still open.

    Every simulated canary restarts the fake clock at START, so a window
    left open would never reach its end and every later tick would keep
    measuring it: call this when a canary is over (bench/decisions.py
    should, for every kind, or run with CANARY_VERIFY_SECONDS = 0).
    """
    from canary.services import rollout_verification_conclude
    from canary.services.verification import OPEN
    from controlplane.audit.actors import SYSTEM

    rollout.refresh_from_db()
    if rollout.verification_state in OPEN:
        rollout_verification_conclude(
            rollout_id=rollout.pk,
            expected_since=rollout.verification.get("since"),
            state="ended",
            reason="benchmark end: the simulated canary is over",
            actor=SYSTEM,
        )


def _levels(rollout: Any) -> Iterable[int]:
    from canary.services import rollout_rollback_runs

    return (r.level for r in rollout_rollback_runs(rollout))


def escalation_summarize(results: Iterable[EscalationResult]) -> list[dict]:
    """Return one row of figures per escalation kind."""
    by_kind: dict[str, list[EscalationResult]] = {}
    for result in results:
        by_kind.setdefault(result.kind, []).append(result)
    rows = []
    for name, items in by_kind.items():
        rolled = [r for r in items if r.rolled_back_after is not None]
        delays = [r.escalated_after for r in rolled if r.escalated_after is not None]
        states: dict[str, int] = {}
        for r in rolled:
            states[r.verification_state or "none"] = (
                states.get(r.verification_state or "none", 0) + 1
            )
        rows.append(
            {
                "kind": name,
                "runs": len(items),
                "rolled_back": len(rolled) / len(items),
                "fixed": sum(r.fixed for r in items) / len(items),
                "over_escalated": sum(r.over_escalated for r in items) / len(items),
                "states": states,
                "escalated_after_p50": statistics.median(delays) if delays else None,
                "wall_seconds": statistics.fmean(r.wall_seconds for r in items),
            }
        )
    return rows


def escalation_table_print(rows: list[dict], out: IO[str]) -> None:
    """Print the escalation figures, one line per kind."""
    out.write(
        "\nAfter a rollback (verify and escalate): share rolled back, share whose "
        "fault ended (the level that fixes it succeeded), share escalated beyond "
        "it, windows' end states, median time from the rollback to escalating\n"
    )
    for row in rows:
        delay = row["escalated_after_p50"]
        states = ", ".join(f"{k} {v}" for k, v in sorted(row["states"].items()))
        out.write(
            f"  {row['kind']:<24} {row['runs']:>4} runs  rolled back "
            f"{row['rolled_back']:.0%}  fixed {row['fixed']:.0%}  over-escalated "
            f"{row['over_escalated']:.0%}  [{states}]  escalated after "
            f"{'-' if delay is None else f'{delay:,.0f} s'}  "
            f"({row['wall_seconds']:.1f} s wall each)\n"
        )
