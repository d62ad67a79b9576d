"""Release kinds of bench/decisions.py: several flags through one release.

Each simulated release is a real release (``canary.services.releases``) of
``flags`` bool flags of its own, created from the ``pilot-10-50-100`` plan
with the default check set, started through every member's preflight and
driven by the real ``controller_tick`` on the fake clock, like the single
canaries. The fleet, drift, reporting fraction and real flag evaluation
are bench/decisions.py's; each reported request is one outcome event that
names every member flag with the variation the engine served it
(``flags``), ingested by the real service (one row per flag).

Kinds:

* ``release-healthy``: three healthy features: every one should complete.
* ``release-errors+2pp``: three features, the second one's treated
  requests fail 2 points more often: that feature should be rolled back on
  its own and the other two complete (the issue's target: in >= 95% of
  runs).
* ``release-interaction+4pp``: three features, requests fail 4 points more
  only when the first two are both served their treatment: the release
  should be rolled back as a whole (an interaction), or at least both of
  the two.

The baseline look-back is ``RELEASE_LOOKBACK_SECONDS``: the product's
default CANARY_BASELINE_SECONDS (6 h), like the single canaries'. An
earlier version used 2 h to save ingestion time (three rows per reported
event); the baselines' noise then never shrinks below what 2 h of events
give, so a 10% member with a few merchants could not prove its p95 within
the phase's max_duration, and a 100% phase took long enough to prove that
the drift since the move read as an effect.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from bench._decisions_fleet import (
    DRIFT_AMPLITUDE,
    DRIFT_PERIOD,
    LOOKBACK_SECONDS,
    MAX_BATCH,
    REQUEST_LATENCY_SIGMA,
    START,
    TEMPLATE,
    Fleet,
)

RELEASE_LOOKBACK_SECONDS = LOOKBACK_SECONDS
# A release still running after this much simulated time ends as it stands.
MAX_SIMULATED_SECONDS = 12 * 3600.0
LOOKBACK_CHUNK = 1800.0


@dataclass(frozen=True)
class ReleaseKind:
    name: str
    flags: int = 3
    # per member: points added to its treated requests' failure rate
    error_deltas: tuple[float, ...] = (0.0, 0.0, 0.0)
    # points added when members 0 and 1 are both treated
    interaction_delta: float = 0.0
    # what should happen: the flags rolled back ("*" = every flag)
    expected_rolled_back: tuple[str, ...] = ()

    def expect(self, keys: list[str]) -> set[str]:
        if self.expected_rolled_back == ("*",):
            return set(keys)
        return {keys[int(i)] for i in self.expected_rolled_back}


RELEASE_KINDS: dict[str, ReleaseKind] = {
    kind.name: kind
    for kind in (
        ReleaseKind("release-healthy"),
        ReleaseKind(
            "release-errors+2pp",
            error_deltas=(0.0, 0.02, 0.0),
            expected_rolled_back=("1",),
        ),
        ReleaseKind(
            "release-interaction+4pp",
            interaction_delta=0.04,
            expected_rolled_back=("*",),
        ),
    )
}


@dataclass
class ReleaseResult:
    kind: str
    run: int
    outcome: str  # completed | rolled_back | paused | running
    deployed: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    expected_rolled_back: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    correct: bool = False
    ended_after: float = 0.0
    events: int = 0
    wall_seconds: float = 0.0


def _events(
    sim: dict,
    keys: list[str],
    treated: np.ndarray,
    start: Any,
    end: Any,
    fraction: float,
    *,
    active: bool,
) -> list[dict]:
    """Return every merchant's reported requests in [start, end), each an
    event naming every member flag with its served variation."""
    fleet: Fleet = sim["fleet"]
    rng: np.random.Generator = sim["rng"]
    kind: ReleaseKind = sim["kind"]
    span = (end - start).total_seconds()
    if span <= 0:
        return []
    drift = 1.0 + DRIFT_AMPLITUDE * math.sin(
        2 * math.pi * (start - START).total_seconds() / DRIFT_PERIOD
        + sim["drift_phase"]
    )
    counts = rng.poisson(fleet.rates * fraction * span)
    errors = np.clip(fleet.errors * drift, 0.0, 1.0)
    if active:
        extra = np.zeros(len(fleet.keys))
        for index, delta in enumerate(kind.error_deltas):
            extra += np.where(treated[index], delta, 0.0)
        if kind.interaction_delta:
            extra += np.where(treated[0] & treated[1], kind.interaction_delta, 0.0)
        errors = np.clip(errors + extra, 0.0, 1.0)
    log_medians = fleet.log_medians + math.log(drift)
    base = start.timestamp()
    out: list[dict] = []
    for merchant in np.nonzero(counts)[0]:
        n = int(counts[merchant])
        failed = rng.random(n) < errors[merchant]
        durations = np.exp(rng.normal(log_medians[merchant], REQUEST_LATENCY_SIGMA, n))
        times = base + np.sort(rng.random(n)) * span
        served = {
            key: ("on" if treated[index][merchant] else "off")
            for index, key in enumerate(keys)
        }
        out.extend(
            {
                "flags": served,
                "merchant": fleet.keys[merchant],
                "outcome": "failure" if failed[i] else "success",
                "duration_ms": round(float(durations[i]), 3),
                "occurred_at": float(times[i]),
            }
            for i in range(n)
        )
    sim["events"] += len(out)
    return out


def _ingest(events: list[dict], environment: Any) -> None:
    from canary.services.outcomes import outcome_events_ingest

    step = MAX_BATCH // 3
    for start in range(0, len(events), step):
        outcome_events_ingest(
            events=events[start : start + step], environment=environment
        )


def _assign(environment: Any, keys: list[str], fleet: Fleet) -> np.ndarray:
    from flags import engine, mappers

    ruleset = mappers.ruleset_compile(environment)
    return np.array(
        [
            [
                engine.evaluate(ruleset, key, {"merchant": m}).variation == "on"
                for m in fleet.keys
            ]
            for key in keys
        ]
    )


def release_simulate(
    *,
    kind: ReleaseKind,
    run: int,
    seed: int,
    fleet: Fleet,
    environment: Any,
    report_fraction: float,
    duration_scale: float | None = None,
) -> ReleaseResult:
    """Run one simulated release to its end; return how it ended."""
    from django.conf import settings

    from bench.decisions import _next_time
    from canary import clock
    from canary.controller import controller_tick
    from canary.models import Release, ReleaseStatus, RolloutStatus
    from canary.services.releases import release_create, release_members, release_start
    from controlplane.audit.actors import SYSTEM
    from controlplane.audit.models import AuditEvent
    from flags import services as flag_services
    from flags.models import Environment

    wall = time.perf_counter()
    names = list(RELEASE_KINDS)
    rng = np.random.default_rng([seed, run, 100 + names.index(kind.name)])
    sim = {
        "fleet": fleet,
        "rng": rng,
        "kind": kind,
        "drift_phase": float(rng.uniform(0, 2 * math.pi)),
        "events": 0,
    }
    pilot = fleet.keys[int(rng.integers(len(fleet.keys)))]
    stem = f"rel-{seed}-{kind.name.replace('+', '-').replace('%', 'pct')}-{run}"
    keys = [f"{stem}-f{index}" for index in range(kind.flags)]
    saved = dict(settings.CONTROLPLANE)
    settings.CONTROLPLANE = {
        **saved,
        "CANARY_BASELINE_SECONDS": RELEASE_LOOKBACK_SECONDS,
    }
    fake = clock.FakeClock(START)
    try:
        with clock.swapped(fake):
            for key in keys:
                flag_services.flag_create(actor=SYSTEM, key=key)
            nobody = np.zeros((kind.flags, len(fleet.keys)), dtype=bool)
            fake.set(START)
            for _ in range(math.ceil(RELEASE_LOOKBACK_SECONDS / LOOKBACK_CHUNK)):
                begin = fake()
                fake.advance(LOOKBACK_CHUNK)
                _ingest(
                    _events(
                        sim, keys, nobody, begin, fake(), report_fraction, active=False
                    ),
                    environment,
                )
            release = release_create(
                actor=SYSTEM,
                environment=environment,
                flags=keys,
                template=TEMPLATE,
                pilot_merchants=[pilot],
                duration_scale=duration_scale,
            )
            release = release_start(release_id=release.pk, actor=SYSTEM)
            started = fake()
            previous = fake()
            version = None
            treated = nobody
            for _ in range(100_000):
                release.refresh_from_db()
                if release.status != ReleaseStatus.RUNNING:
                    break
                members = release_members(release)
                running = [m for m in members if m.status == RolloutStatus.RUNNING]
                now_version = (
                    Environment.objects.filter(pk=environment.pk)
                    .values_list("ruleset_version", flat=True)
                    .get()
                )
                if now_version != version:
                    treated = _assign(environment, keys, fleet)
                    version = now_version
                _ingest(
                    _events(
                        sim,
                        keys,
                        treated,
                        previous,
                        fake(),
                        report_fraction,
                        active=True,
                    ),
                    environment,
                )
                previous = fake()
                controller_tick()
                members = release_members(release)
                if any(m.status == RolloutStatus.PAUSED for m in members):
                    break  # a paused member holds the others: the run ends
                if (fake() - started).total_seconds() > MAX_SIMULATED_SECONDS:
                    break
                if not any(m.status == RolloutStatus.RUNNING for m in members):
                    if any(m.status == RolloutStatus.ROLLING_BACK for m in members):
                        controller_tick()
                        continue
                    break
                running = [m for m in members if m.status == RolloutStatus.RUNNING]
                fake.set(min(_next_time(m, fake()) for m in running))
            ended = fake()
            for _ in range(3):
                # finish rollback runs started on commit
                members = release_members(release)
                if not any(m.status == RolloutStatus.ROLLING_BACK for m in members):
                    break
                controller_tick()
            release = Release.objects.get(pk=release.pk)
            members = release_members(release)
            scopes = list(
                AuditEvent.objects.filter(
                    target_type="canary.release",
                    target_id=str(release.pk),
                    action__in=[
                        "release.partially_rolled_back",
                        "release.rollback_started",
                    ],
                ).values_list("action", flat=True)
            )
            rolled = [
                m.flag.key
                for m in members
                if m.status in (RolloutStatus.ROLLED_BACK, RolloutStatus.ROLLING_BACK)
            ]
            deployed = [
                m.flag.key for m in members if m.status == RolloutStatus.COMPLETED
            ]
            expected = kind.expect(keys)
            outcome = {
                ReleaseStatus.COMPLETED: "completed",
                ReleaseStatus.ROLLED_BACK: "rolled_back",
            }.get(
                release.status,
                "paused"
                if any(m.status == RolloutStatus.PAUSED for m in members)
                else release.status,
            )
            result = ReleaseResult(
                kind=kind.name,
                run=run,
                outcome=outcome,
                deployed=deployed,
                rolled_back=rolled,
                expected_rolled_back=sorted(expected),
                scopes=scopes,
                correct=set(rolled) == expected
                and set(deployed) == set(keys) - expected,
                ended_after=(ended - started).total_seconds(),
                events=sim["events"],
            )
            _leave_nothing_running(members, release)
    finally:
        settings.CONTROLPLANE = saved
    result.wall_seconds = time.perf_counter() - wall
    return result


def _leave_nothing_running(members: list[Any], release: Any) -> None:
    from bench._decisions_escalation import verification_close
    from canary.services.releases import release_abort
    from canary.transitions import ACTIVE
    from controlplane.audit.actors import SYSTEM

    if any(m.status in ACTIVE for m in members):
        release_abort(release_id=release.pk, actor=SYSTEM, reason="benchmark end")
    for member in members:
        member.refresh_from_db()
        verification_close(member)


def release_summarize(results: list[ReleaseResult]) -> list[dict]:
    """Return one row per release kind."""
    rows = []
    by_kind: dict[str, list[ReleaseResult]] = {}
    for result in results:
        by_kind.setdefault(result.kind, []).append(result)
    for name, items in by_kind.items():
        count = len(items)
        rows.append(
            {
                "kind": name,
                "runs": count,
                "correct": sum(r.correct for r in items) / count,
                "completed_all": sum(not r.rolled_back for r in items) / count,
                "partial": sum(
                    "release.partially_rolled_back" in r.scopes for r in items
                )
                / count,
                "whole": sum("release.rollback_started" in r.scopes for r in items)
                / count,
                "paused": sum(r.outcome == "paused" for r in items) / count,
                "ended_p50": float(np.median([r.ended_after for r in items])),
                "wall_p50": float(np.median([r.wall_seconds for r in items])),
            }
        )
    return rows


def release_table_print(rows: list[dict], out: IO[str]) -> None:
    out.write(
        "\nreleases (3 flags each, default check set, "
        f"{int(RELEASE_LOOKBACK_SECONDS // 3600)} h look-back)\n"
    )
    header = (
        "| kind | runs | as expected | all completed | partial rollback | "
        "whole rollback | paused | ended p50 | wall p50 |\n"
    )
    out.write(header + "|---|---|---|---|---|---|---|---|---|\n")
    for row in rows:
        out.write(
            f"| {row['kind']} | {row['runs']} | {row['correct']:.0%} | "
            f"{row['completed_all']:.0%} | {row['partial']:.0%} | "
            f"{row['whole']:.0%} | {row['paused']:.0%} | "
            f"{row['ended_p50'] / 60:.0f} min | {row['wall_p50']:.0f} s |\n"
        )
