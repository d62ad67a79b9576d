"""Named rollout plans, so operators do not retype phases.

Each plan is a list of phase dicts in the shape ``rollout_create`` accepts.
Pilot and internal phases get their merchants from the caller. Durations
are seconds. Pilot and internal phases are *guard* phases (a few merchants
cannot prove a small difference in minutes: they advance after their soak
unless a check says worse); percentage phases are *prove* phases (they
advance only once every check says not worse).

``DEFAULT_CHECKS`` is the recommended check set (docs/canary.md, "The
default check set"): error rate and p95 latency of the outcome events,
each compared by ``canary.sequential`` with the merchants' own baselines.
A plan uses it when the caller gives no checks.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CHECKS: list[dict[str, Any]] = [
    {
        "name": "error_rate",
        "provider": "outcomes",
        "mode": "compare",
        "spec": {"metric": "error_rate"},
        "margin": 0.01,
        "alpha": 0.05,
        "interval": 30,
    },
    {
        "name": "p95_latency",
        "provider": "outcomes",
        "mode": "compare",
        "spec": {"metric": "p95_ms"},
        "margin": 0.10,
        "alpha": 0.05,
        "interval": 30,
    },
]

PLANS: dict[str, dict[str, Any]] = {
    "pilot-10-50-100": {
        "description": (
            "One or a few pilot merchants, then 10%, 50% and 100% of merchants, "
            "watching the checks at every step."
        ),
        "phases": [
            {
                "name": "pilot",
                "target_type": "pilot",
                "gate": "guard",
                "min_duration": 600,
                "max_duration": 3600,
            },
            {
                "name": "10%",
                "target_type": "percentage",
                "percentage": 10,
                "min_duration": 900,
                # A prove phase waits for "not worse": ten merchants with
                # little traffic may need hours (the preflight says).
                "max_duration": 14400,
            },
            {
                "name": "50%",
                "target_type": "percentage",
                "percentage": 50,
                "min_duration": 1800,
                "max_duration": 7200,
            },
            {
                "name": "100%",
                "target_type": "percentage",
                "percentage": 100,
                "min_duration": 600,
            },
        ],
    },
    "pilot-10-50-100-approval": {
        "description": (
            "As pilot-10-50-100, but an operator approves leaving the pilot and "
            "going from 50% to 100%."
        ),
        "phases": [
            {
                "name": "pilot",
                "target_type": "pilot",
                "gate": "guard",
                "min_duration": 600,
                "requires_approval": True,
            },
            {
                "name": "10%",
                "target_type": "percentage",
                "percentage": 10,
                "min_duration": 900,
                "max_duration": 7200,
            },
            {
                "name": "50%",
                "target_type": "percentage",
                "percentage": 50,
                "min_duration": 1800,
                "requires_approval": True,
            },
            {
                "name": "100%",
                "target_type": "percentage",
                "percentage": 100,
                "min_duration": 600,
            },
        ],
    },
    "staging-then-production": {
        "description": (
            "For the staging environment: internal merchants first, then everyone in "
            "staging; an operator signs off the last phase before the production "
            "rollout (pilot-10-50-100) is started."
        ),
        "phases": [
            {
                "name": "internal",
                "target_type": "internal",
                "gate": "guard",
                "min_duration": 300,
            },
            {
                "name": "staging 100%",
                "target_type": "percentage",
                "percentage": 100,
                "min_duration": 600,
                "requires_approval": True,
            },
        ],
    },
    "demo-fast": {
        "description": "pilot -> 10% -> 50% -> 100% with 20-second phases, for the demo.",
        "phases": [
            {
                "name": "pilot",
                "target_type": "pilot",
                "gate": "guard",
                "min_duration": 20,
            },
            {
                "name": "10%",
                "target_type": "percentage",
                "percentage": 10,
                "min_duration": 20,
            },
            {
                "name": "50%",
                "target_type": "percentage",
                "percentage": 50,
                "min_duration": 20,
            },
            {
                "name": "100%",
                "target_type": "percentage",
                "percentage": 100,
                "min_duration": 20,
            },
        ],
    },
}
