"""The simulated traffic of bench/decisions.py: one canary's state, the
outcome events its fleet reports, their ingestion through the real
service, and the real flag evaluation that says who is treated."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench._decisions_fleet import (
    DRIFT_AMPLITUDE,
    DRIFT_PERIOD,
    ENVIRONMENT,
    MAX_BATCH,
    REQUEST_LATENCY_SIGMA,
    START,
    Fleet,
    Kind,
)


@dataclass
class Simulation:
    """One canary's state between steps."""

    fleet: Fleet
    kind: Kind
    rng: np.random.Generator
    drift_phase: float
    treated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    served_share: float = 0.0
    onset: dt.datetime | None = None
    treated_since_onset: int = 0
    n_star: int | None = None
    n_star_at: dt.datetime | None = None
    events: int = 0
    treated_events: int = 0


LOOKBACK_CHUNK = 1800.0  # seconds of look-back generated and ingested at once


def _drift(sim: Simulation, seconds: float) -> float:
    return 1.0 + DRIFT_AMPLITUDE * math.sin(
        2 * math.pi * seconds / DRIFT_PERIOD + sim.drift_phase
    )


def _events(
    sim: Simulation,
    flag_key: str,
    start: dt.datetime,
    end: dt.datetime,
    fraction: float,
    *,
    assigned: bool = True,
) -> list[dict]:
    """Return the reported events of every merchant in [start, end)."""
    fleet, rng = sim.fleet, sim.rng
    span = (end - start).total_seconds()
    if span <= 0:
        return []
    drift = _drift(sim, (start - START).total_seconds())
    counts = rng.poisson(fleet.rates * fraction * span)
    treated = sim.treated if assigned else np.zeros(len(fleet.keys), dtype=bool)
    active = sim.kind.is_active(sim.served_share) and assigned
    errors = np.clip(fleet.errors * drift, 0.0, 1.0)
    log_medians = fleet.log_medians + math.log(drift)
    if active:
        errors = np.where(treated, np.clip(errors + sim.kind.error_delta, 0, 1), errors)
        log_medians = np.where(
            treated, log_medians + math.log(sim.kind.latency_factor), log_medians
        )
    base = start.timestamp()
    out: list[dict] = []
    for index in np.nonzero(counts)[0]:
        n = int(counts[index])
        failed = rng.random(n) < errors[index]
        durations = np.exp(rng.normal(log_medians[index], REQUEST_LATENCY_SIGMA, n))
        times = base + np.sort(rng.random(n)) * span
        variation = "on" if treated[index] else "off"
        key = fleet.keys[index]
        out.extend(
            {
                "flag": flag_key,
                "merchant": key,
                "variation": variation,
                "outcome": "failure" if failed[i] else "success",
                "duration_ms": round(float(durations[i]), 3),
                "occurred_at": float(times[i]),
            }
            for i in range(n)
        )
        if treated[index]:
            sim.treated_events += n
            if active:
                sim.treated_since_onset += n
    sim.events += len(out)
    return out


def _ingest(events: list[dict], environment: Any) -> None:
    from canary.services.outcomes import outcome_events_ingest

    for start in range(0, len(events), MAX_BATCH):
        outcome_events_ingest(
            events=events[start : start + MAX_BATCH], environment=environment
        )


def _assign(sim: Simulation, environment: Any, flag_key: str) -> None:
    """Evaluate the real flag for every merchant of the fleet."""
    from flags import engine, mappers

    ruleset = mappers.ruleset_compile(environment)
    sim.treated = np.array(
        [
            engine.evaluate(ruleset, flag_key, {"merchant": key}).variation == "on"
            for key in sim.fleet.keys
        ]
    )


def _served_share(rollout: Any) -> float:
    """Return the share the current phase serves (0..1; a pilot counts 0)."""
    phase = rollout.phases.get(index=rollout.current_phase)
    return (phase.percentage or 0.0) / 100.0


def fleet_setup(fleet: Fleet) -> Any:
    """Create the benchmark's environment and the fleet's merchants once."""
    from controlplane.audit.actors import SYSTEM
    from flags import services as flag_services
    from flags.models import Environment, Merchant

    environment = Environment.objects.filter(key=ENVIRONMENT).first()
    if environment is None:
        environment = flag_services.environment_create(
            actor=SYSTEM, key=ENVIRONMENT, name="Decision benchmark"
        )
    known = set(
        Merchant.objects.filter(key__in=fleet.keys).values_list("key", flat=True)
    )
    for key in fleet.keys:
        if key not in known:
            flag_services.merchant_create(actor=SYSTEM, key=key)
    return environment
