"""Decision benchmark: simulated canaries through the real controller.

Each simulated canary is a real rollout of its own bool flag, created from
the ``pilot-10-50-100`` plan with the check set docs/canary.md gives today,
started through the preflight, and driven by the real ``controller_tick``
on a ``canary.clock.FakeClock`` (no sleeping). Outcome events go through
the real ingestion service (``outcome_events_ingest``), in one batch per
merchant per step, stamped with simulated times inside the step.

The fleet: 100 merchants in the registry, each with a request rate drawn
from 5..50 requests/s, 20% of them 5x more error-prone (5% instead of 1%),
and a median latency of its own (log-normal around 120 ms); each request's
latency is log-normal around its merchant's median. Both arms share all
of this, and a slow common drift (+-10% on error rates and latencies, a
6-hour sine with a random phase per canary). Which merchant gets which
variation is the real flag evaluation (``flags.engine`` over the compiled
ruleset of the environment) at every step, so the pilot override and the
10/50/100% buckets are the product's own. Apps report ``--report-fraction``
of their requests as outcome events (default 0.5%: at 5..50 requests/s per
merchant the full stream is millions of rows per canary, and the outcomes
provider re-reads a phase's events at every measurement, so a canary costs
seconds of machine time per thousand reported events); n* and every
"events" figure count reported events, which are what any check sees.

Kinds: ``healthy``; ``errors+2pp`` (every treated request fails 2 points
more often: 1% -> 3%, 5% -> 7%); ``p95+30%`` (treated latencies x 1.3);
``late-errors+2pp`` (+2 points only once the served share passes 50%, i.e.
in the 100% phase); ``gross-errors+30pp`` (a smoke-test kind).

Printed per kind: the share of canaries rolled back, paused and completed;
for a regression, the detection delay from its onset to the rollback
decision in treated events, in simulated time and in check intervals
(measurements of the check that fired), median and p90; and n*, the
treated events an optimal fixed-sample one-sided two-proportion test
(alpha 0.05, power 80%) needs for that effect at the fleet's traffic mix
(errors: the traffic-weighted error rate; p95: the share of requests above
the fleet's p95), with the median simulated time the canaries took to
accumulate n* treated events from the onset.

    .venv/bin/python bench/decisions.py --quick
    .venv/bin/python bench/decisions.py --runs 100 --budget 900
    .venv/bin/python bench/decisions.py --database-url postgres://postgres@127.0.0.1:5432/cp_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._decisions_escalation import (  # noqa: E402
    ESCALATION_KINDS,
    EscalationResult,
    escalation_simulate,
    escalation_summarize,
    escalation_table_print,
    verification_close,
)
from bench._decisions_fleet import (  # noqa: E402
    ALPHA,
    BASE_ERROR,
    BEAT_SECONDS,
    CHECKS,
    DEFAULT_KINDS,
    DEFAULT_REPORT_FRACTION,
    FLEET_SIZE,
    KINDS,
    LOOKBACK_SECONDS,
    POWER,
    RATE_RANGE,
    START,
    TEMPLATE,
    CanaryResult,
    Fleet,
    Kind,
    kind_n_star,
)
from bench._decisions_release import (  # noqa: E402
    RELEASE_KINDS,
    ReleaseResult,
    release_simulate,
    release_summarize,
    release_table_print,
)
from bench._decisions_setup import setup_django  # noqa: E402
from bench._decisions_table import (  # noqa: E402
    summarize,
    table_from_json,
    table_print,
)
from bench._decisions_traffic import (  # noqa: E402
    LOOKBACK_CHUNK,
    Simulation,
    _assign,
    _events,
    _ingest,
    _served_share,
    fleet_setup,
)


def _interval_count(rollout: Any, check: str, since: dt.datetime, until: Any) -> int:
    from canary.models import CheckRun

    return CheckRun.objects.filter(
        rollout=rollout,
        health_check__name=check,
        measured_at__gte=since,
        measured_at__lte=until,
    ).count()


def _decided_by(rollout: Any, action: str) -> str:
    from controlplane.audit.models import AuditEvent

    event = (
        AuditEvent.objects.filter(
            target_type="canary.rollout", target_id=str(rollout.pk), action=action
        )
        .order_by("-id")
        .first()
    )
    checks = ((event.details or {}).get("checks") or []) if event else []
    return ",".join(item["check"] for item in checks) if checks else ""


def canary_simulate(
    *,
    kind: Kind,
    run: int,
    seed: int,
    fleet: Fleet,
    environment: Any,
    report_fraction: float,
    duration_scale: float | None = None,
) -> CanaryResult:
    """Run one simulated canary to its end; return how it ended."""
    from canary import clock
    from canary.controller import controller_tick
    from canary.models import RolloutStatus
    from canary.services.operator import rollout_start_checked
    from canary.services.templates import rollout_create_from_template
    from canary.transitions import TERMINAL
    from controlplane.audit.actors import SYSTEM
    from flags import services as flag_services
    from flags.models import Environment

    Status = RolloutStatus
    wall = time.perf_counter()
    rng = np.random.default_rng([seed, run, list(KINDS).index(kind.name)])
    sim = Simulation(
        fleet=fleet, kind=kind, rng=rng, drift_phase=float(rng.uniform(0, 2 * math.pi))
    )
    sim.n_star = kind_n_star(kind, fleet)
    pilot_index = int(rng.integers(len(fleet.keys)))
    pilot = fleet.keys[pilot_index]
    flag_key = f"bench-{seed}-{kind.name.replace('+', '-').replace('%', 'pct')}-{run}"
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        flag = flag_services.flag_create(actor=SYSTEM, key=flag_key)
        # Fleet traffic before start (everyone on control): the look-back
        # each merchant's baseline is captured from at start.
        sim.treated = np.zeros(len(fleet.keys), dtype=bool)
        for _ in range(math.ceil(LOOKBACK_SECONDS / LOOKBACK_CHUNK)):
            begin = fake()
            fake.advance(LOOKBACK_CHUNK)
            _ingest(
                _events(sim, flag_key, begin, fake(), report_fraction, assigned=False),
                environment,
            )
        rollout = rollout_create_from_template(
            actor=SYSTEM,
            template=TEMPLATE,
            flag=flag,
            environment=environment,
            pilot_merchants=[pilot],
            checks=CHECKS,
            duration_scale=duration_scale,
        )
        rollout, _ = rollout_start_checked(rollout_id=rollout.pk, actor=SYSTEM)
        started = fake()
        version = None
        previous = fake()
        end_phase = 0
        while True:
            rollout.refresh_from_db()
            if rollout.status != Status.RUNNING:
                break
            now_version = (
                Environment.objects.filter(pk=environment.pk)
                .values_list("ruleset_version", flat=True)
                .get()
            )
            if now_version != version:
                _assign(sim, environment, flag_key)
                sim.served_share = _served_share(rollout)
                version = now_version
                if sim.onset is None and kind.is_active(sim.served_share):
                    sim.onset = previous
            _ingest(
                _events(sim, flag_key, previous, fake(), report_fraction), environment
            )
            if sim.n_star and sim.n_star_at is None:
                if sim.treated_since_onset >= sim.n_star:
                    sim.n_star_at = fake()
            previous = fake()
            controller_tick()
            rollout.refresh_from_db()
            end_phase = rollout.current_phase
            if rollout.status != Status.RUNNING:
                break
            fake.set(_next_time(rollout, fake()))
        decided_at = fake()
        if rollout.status == Status.ROLLING_BACK:
            controller_tick()  # the rollback run ran on commit: finish it
            rollout.refresh_from_db()
        outcome = {
            Status.ROLLED_BACK: "rolled_back",
            Status.ROLLING_BACK: "rolled_back",
            Status.PAUSED: "paused",
            Status.COMPLETED: "completed",
        }.get(rollout.status, rollout.status)
        check = ""
        if outcome == "rolled_back":
            check = _decided_by(rollout, "rollout.phase_failed")
        elif outcome == "paused":
            check = _decided_by(rollout, "rollout.transition")
        result = CanaryResult(
            kind=kind.name,
            run=run,
            pilot=pilot,
            pilot_error_prone=bool(fleet.errors[pilot_index] > BASE_ERROR),
            outcome=outcome,
            phase=end_phase,
            check=check,
            ended_after=(decided_at - started).total_seconds(),
            onset_after=(sim.onset - started).total_seconds() if sim.onset else None,
            treated_events=sim.treated_events,
            events=sim.events,
        )
        if sim.onset is not None and sim.n_star_at is not None:
            result.n_star_seconds = (sim.n_star_at - sim.onset).total_seconds()
        elif sim.onset is not None and sim.n_star:
            # Ended first: extrapolate at the treated traffic it ended with.
            rate = float(fleet.rates[sim.treated].sum()) * report_fraction
            if rate > 0:
                result.n_star_seconds = (decided_at - sim.onset).total_seconds() + (
                    sim.n_star - sim.treated_since_onset
                ) / rate
        if outcome == "rolled_back" and sim.onset is not None:
            result.delay_seconds = (decided_at - sim.onset).total_seconds()
            result.delay_events = sim.treated_since_onset
            first = check.split(",")[0]
            result.delay_intervals = _interval_count(
                rollout, first, sim.onset, decided_at
            )
        if rollout.status not in TERMINAL and rollout.status != Status.ROLLING_BACK:
            # Leave nothing running behind: the flag is free for nobody else,
            # but a paused rollout would be ticked by every later canary.
            from canary.services import rollout_abort

            rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="benchmark end")
        # A rollback opens a verification window; the next canary's clock
        # starts again at START, so close it (bench/_decisions_escalation.py
        # measures windows).
        verification_close(rollout)
    result.wall_seconds = time.perf_counter() - wall
    return result


def _next_time(rollout: Any, now: dt.datetime) -> dt.datetime:
    """Return when the controller next has something to do: the earliest
    due check, or the end of the phase's soak, rounded up to the beat."""
    from canary.services import rollout_gate

    due = [
        when
        for when in rollout.checks.values_list("next_due_at", flat=True)
        if when is not None
    ]
    target = min(due) if due else now + dt.timedelta(seconds=BEAT_SECONDS)
    decision = rollout_gate(rollout=rollout, now=now)
    if decision.remaining and decision.remaining > 0:
        target = min(target, now + dt.timedelta(seconds=decision.remaining))
    beats = max(1, math.ceil((target - now).total_seconds() / BEAT_SECONDS - 1e-9))
    return now + dt.timedelta(seconds=beats * BEAT_SECONDS)


# Figures --------------------------------------------------------------------


def benchmark_run(
    *,
    kinds: Iterable[str],
    runs: int,
    seed: int = 1,
    report_fraction: float = DEFAULT_REPORT_FRACTION,
    budget: float | None = None,
    duration_scale: float | None = None,
    first_run: int = 0,
    out: IO[str] = sys.stdout,
    progress: Callable[[CanaryResult], None] | None = None,
) -> tuple[list[dict], list[CanaryResult]]:
    """Simulate ``runs`` canaries per kind on the configured database, print
    the table on ``out``; return the rows and every canary's result."""
    fleet = Fleet.build(seed)
    environment = fleet_setup(fleet)
    results: list[CanaryResult] = []
    began = time.perf_counter()
    done = 0
    # Interleave the kinds so a partial run (or a burst of machine load)
    # affects every kind alike; a budget stops between rounds only.
    for run in range(first_run, first_run + runs):
        if (
            budget is not None
            and run > first_run
            and time.perf_counter() - began > budget
        ):
            break
        done = run - first_run + 1
        for name in kinds:
            simulate = (
                escalation_simulate
                if name in ESCALATION_KINDS
                else release_simulate
                if name in RELEASE_KINDS
                else canary_simulate
            )
            result = simulate(
                kind=ESCALATION_KINDS.get(name)
                or RELEASE_KINDS.get(name)
                or KINDS[name],
                run=run,
                seed=seed,
                fleet=fleet,
                environment=environment,
                report_fraction=report_fraction,
                duration_scale=duration_scale,
            )
            results.append(result)
            if progress is not None:
                progress(result)
    escalations = [r for r in results if isinstance(r, EscalationResult)]
    releases = [r for r in results if isinstance(r, ReleaseResult)]
    results_main = [
        r for r in results if not isinstance(r, (EscalationResult, ReleaseResult))
    ]
    rows = summarize(results_main, fleet)
    title = (
        f"{TEMPLATE}, {done} canaries per kind, seed {seed}, "
        f"{FLEET_SIZE} merchants at {RATE_RANGE[0]:g}-{RATE_RANGE[1]:g} req/s, "
        f"{report_fraction:g} of requests reported"
        + (f", durations x{duration_scale:g}" if duration_scale else "")
    )
    if rows:
        table_print(rows, out, title=title)
    if escalations:
        escalation_table_print(escalation_summarize(escalations), out)
    if releases:
        release_table_print(release_summarize(releases), out)
    out.write(
        f"fleet: traffic-weighted error rate {fleet.weighted_error:.4f}, "
        f"p95 {fleet.latency_quantile(0.95):.1f} ms; n* at alpha {ALPHA:g} "
        f"(one-sided), power {POWER:.0%}\n"
    )
    return rows, results


# Command line ---------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="canaries per kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS))
    parser.add_argument(
        "--report-fraction", type=float, default=DEFAULT_REPORT_FRACTION
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds: start no new round of canaries after this",
    )
    parser.add_argument("--duration-scale", type=float, default=None)
    parser.add_argument(
        "--database-url", default=None, help="default: a fresh SQLite file"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 canaries per kind"
    )
    parser.add_argument(
        "--json", default=None, help="also write every canary's result here"
    )
    parser.add_argument(
        "--first-run",
        type=int,
        default=0,
        help="index of the first canary per kind (to split one benchmark over "
        "several processes, each with its own database)",
    )
    parser.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        help="print the table of results written by --json runs, simulating nothing",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        return table_from_json(args.from_json, args.seed)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    known = [*KINDS, *ESCALATION_KINDS, *RELEASE_KINDS]
    unknown = [k for k in kinds if k not in known]
    if unknown:
        parser.error(f"unknown kind(s) {unknown}; known: {', '.join(known)}")
    if args.runs < 1 or not 0 < args.report_fraction <= 1:
        parser.error("--runs must be >= 1 and --report-fraction in (0, 1]")
    runs = 2 if args.quick else args.runs
    url = setup_django(args.database_url)
    began = time.perf_counter()

    done: list[Any] = []

    def progress(result: Any) -> None:
        done.append(result)
        if args.json:
            # Written after every canary, so a run stopped early keeps what
            # it measured (--from-json reads it the same).
            import dataclasses
            import json

            Path(args.json).write_text(
                json.dumps([dataclasses.asdict(r) for r in done], indent=1)
            )
        if isinstance(result, ReleaseResult):
            sys.stderr.write(
                f"{result.kind} #{result.run}: {result.outcome}, rolled back "
                f"{result.rolled_back or '-'}, deployed {len(result.deployed)}, "
                f"{'as expected' if result.correct else 'NOT as expected'}, "
                f"after {result.ended_after:,.0f} s, {result.events} events, "
                f"{result.wall_seconds:.1f} s\n"
            )
            return
        if isinstance(result, EscalationResult):
            sys.stderr.write(
                f"{result.kind} #{result.run}: {result.outcome}, first level "
                f"{result.first_level}, reached {result.reached_level}, fixed "
                f"{result.fixed}, {result.verification_state or '-'}, "
                f"{result.wall_seconds:.1f} s\n"
            )
            return
        sys.stderr.write(
            f"{result.kind} #{result.run}: {result.outcome} in phase {result.phase} "
            f"after {result.ended_after:,.0f} s ({result.check or '-'}), "
            f"{result.events} events, {result.wall_seconds:.1f} s\n"
        )

    _, results = benchmark_run(
        kinds=kinds,
        runs=runs,
        seed=args.seed,
        report_fraction=args.report_fraction,
        duration_scale=args.duration_scale,
        budget=args.budget,
        first_run=args.first_run,
        progress=progress,
    )
    if args.json:
        import dataclasses
        import json

        Path(args.json).write_text(
            json.dumps([dataclasses.asdict(r) for r in results], indent=1)
        )
    print(
        f"database {url.split('@')[-1]}; {time.perf_counter() - began:,.0f} s of "
        "wall time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
