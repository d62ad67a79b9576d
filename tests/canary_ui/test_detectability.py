"""The preflight says what each phase can detect (issue 9, item 5).

Look-back traffic goes in through the ingestion service
(``outcome_events_ingest``); the figures are checked against
``canary.power.minimum_detectable_effect`` called with the traffic
the events describe.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import statistics

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from canary import clock, power, services
from canary.detectability import rollout_detectable, traffic_profile
from canary.services.outcomes import outcome_events_ingest
from canary.templates_data import DEFAULT_CHECKS
from tests.canary_ui.test_api import api, send  # noqa: F401 (the API client fixture)

PHASES = [
    {
        "name": "pilot",
        "target_type": "pilot",
        "pilot_merchants": ["m-1001"],
        "gate": "guard",
        "min_duration": 600,
    },
    {
        "name": "10%",
        "target_type": "percentage",
        "percentage": 10,
        "min_duration": 900,
        "max_duration": 1800,
    },
    {
        "name": "50%",
        "target_type": "percentage",
        "percentage": 50,
        "min_duration": 900,
        "max_duration": 3600,
    },
    {"name": "100%", "target_type": "percentage", "percentage": 100},
]
MERCHANTS = 20
HEAVY = {f"m-{2000 + i}" for i in range(4)}  # 20% of the fleet, 5x the errors
EVENTS_PER_MERCHANT = 360  # over 6 h: 1 per minute


def ingest_fleet(environment, *, flag: str, now: dt.datetime, hours: float = 6) -> int:
    """Ingest a heterogeneous fleet's outcome events spread over ``hours``
    before ``now``; return how many."""
    rng = random.Random(9)
    keys = ["m-1001", *(f"m-{2000 + i}" for i in range(MERCHANTS - 1))]
    events = []
    for key in keys:
        rate = 0.05 if key in HEAVY else 0.01
        median = 80.0 if key == "m-1001" else 120.0
        for _ in range(EVENTS_PER_MERCHANT):
            events.append(
                {
                    "flag": flag,
                    "merchant": key,
                    "variation": "off",
                    "outcome": "failure" if rng.random() < rate else "success",
                    "duration_ms": median * rng.lognormvariate(0, 0.4),
                    "occurred_at": (
                        now - dt.timedelta(seconds=rng.uniform(1, hours * 3600 - 1))
                    ).isoformat(),
                }
            )
    for start in range(0, len(events), 5000):
        outcome_events_ingest(
            events=events[start : start + 5000], environment=environment
        )
    return len(events)


@pytest.fixture
def fleet_rollout(rollout_factory, production, flag):
    now = clock.now()
    count = ingest_fleet(production, flag=flag.key, now=now)
    return rollout_factory(phases=PHASES, checks=DEFAULT_CHECKS), now, count


def test_rollout_preflight__fleet_traffic__mde_per_phase_and_check(fleet_rollout):
    # Given
    rollout, now, count = fleet_rollout
    # When
    report = services.rollout_preflight(rollout_id=rollout.pk, now=now)
    detectable = report.as_dict()["detectable"]
    # Then: the traffic the events describe
    baseline = detectable["baseline"]
    assert baseline["source"] == "lookback"
    assert (baseline["merchants"], baseline["events"]) == (MERCHANTS, count)
    assert baseline["events_per_merchant_per_minute"] == pytest.approx(1.0, rel=0.01)
    assert baseline["heavy_share"] == pytest.approx(0.2)
    assert 3 < baseline["heavy_factor"] < 8
    assert 0.3 < baseline["log_sigma"] < 0.5
    pilot, ten, half, full = detectable["phases"]
    assert [
        (p["treated_merchants"], p["control_merchants"]) for p in (ten, half, full)
    ] == [
        (2, 18),
        (10, 10),
        (20, 0),
    ]
    assert (pilot["treated_merchants"], pilot["seconds"], pilot["duration_basis"]) == (
        1,
        600,
        "min_duration",
    )
    assert (ten["seconds"], ten["duration_basis"]) == (1800, "max_duration")
    # ... and the MDE of that traffic, from the one computation
    expected = power.minimum_detectable_effect(
        metric="error_rate",
        treated_merchants=10,
        control_merchants=10,
        events_per_merchant_per_minute=baseline["events_per_merchant_per_minute"],
        phase_seconds=3600,
        baseline_seconds=6 * 3600,
        baseline_rate=baseline["baseline_rate"],
        heavy_share=0.2,
        heavy_factor=baseline["heavy_factor"],
        log_sigma=baseline["log_sigma"],
        margin=0.01,
        alpha=0.05,
    )
    errors, p95 = half["checks"]
    assert errors["mde"] == pytest.approx(expected)
    assert ten["checks"][0]["mde"] > errors["mde"]
    assert half["summary"].startswith(
        f"50%: ~10 merchants, ~1 events/min each, 60 min (max_duration): detects "
        f"+{errors['mde'] * 100:.1f} pp errors, +{p95['mde'] * 100:.0f}% p95 at 80% power"
    )
    # A one-merchant pilot at 1 event/min catches only gross regressions.
    assert pilot["checks"][0]["mde"] > 3 * 0.01
    assert any(
        w.startswith("the pilot phase can catch only gross regressions (> +")
        for w in report.warnings
    )
    assert report.ok


def test_rollout_preflight__phase_too_short_for_p95__says_why_nothing(fleet_rollout):
    # Given: a 10-minute pilot sees ~10 events, a p95 needs 30 per merchant
    rollout, now, _ = fleet_rollout
    # When
    detectable = services.rollout_preflight(rollout_id=rollout.pk, now=now).detectable
    # Then
    p95 = detectable["phases"][0]["checks"][1]
    assert p95["mde"] is None
    assert p95["why"].startswith("~10 events per merchant in 10 min, below the 30")
    summary = detectable["phases"][0]["summary"]
    assert summary.startswith(
        "pilot: ~1 merchant, ~1 events/min each, 10 min (min_duration): detects +"
    )
    assert summary.endswith(" pp errors at 80% power; cannot measure p95")


def test_rollout_preflight__no_lookback_traffic__warns_no_baselines(rollout_factory):
    # Given: no outcome events at all
    rollout = rollout_factory(phases=PHASES, checks=DEFAULT_CHECKS)
    # When
    report = services.rollout_preflight(rollout_id=rollout.pk)
    # Then
    assert report.detectable["phases"] == []
    assert report.detectable["baseline"]["merchants"] == 0
    assert (
        "no outcome events of flag 'sequential_workflow' in 'production' in the last "
        "360 min: compare checks have no baselines (they will say not yet), and "
        "prove phases pause at max_duration"
    ) in report.warnings


def test_rollout_preflight__events_before_the_window__not_counted(
    rollout_factory, production, flag, settings
):
    # Given: 6 h of traffic, but a 1 h look-back
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "CANARY_BASELINE_SECONDS": 3600}
    now = clock.now()
    count = ingest_fleet(production, flag=flag.key, now=now)
    rollout = rollout_factory(phases=PHASES, checks=DEFAULT_CHECKS)
    # When
    baseline = rollout_detectable(rollout, now=now)["baseline"]
    # Then: about a sixth of the events, still ~1 per merchant per minute
    assert baseline["seconds"] == 3600
    assert count / 8 < baseline["events"] < count / 4
    assert baseline["events_per_merchant_per_minute"] == pytest.approx(1.0, rel=0.2)


def test_rollout_detectable__started__reads_merchant_baseline(rollout_factory):
    # Given: a rollout whose baselines were captured at start (in memory)
    rollout = rollout_factory(phases=PHASES, checks=DEFAULT_CHECKS)
    rollout.merchant_baseline = {
        "since": "2026-01-01T00:00:00+00:00",
        "until": "2026-01-01T06:00:00+00:00",
        "seconds": 21600,
        "merchants": {
            f"m-{i}": {"events": 21600, "failures": 216, "p50_ms": 100, "p95_ms": 200}
            for i in range(100)
        },
    }
    # When
    detectable = rollout_detectable(rollout, now=clock.now())
    # Then
    assert detectable["baseline"]["source"] == "merchant_baseline"
    assert detectable["baseline"]["events_per_merchant_per_minute"] == 60
    ten = detectable["phases"][1]
    assert (ten["treated_merchants"], ten["control_merchants"]) == (10, 90)
    # 10 busy merchants for 30 min: within 3 margins, no warning
    assert 0.01 < ten["checks"][0]["mde"] < 0.03
    assert not any(w.startswith("phase 10%") for w in detectable["warnings"])
    # the pilot merchant has no captured traffic: it can detect nothing
    assert detectable["phases"][0]["summary"] == (
        "pilot: no treated merchant with look-back traffic, 10 min (min_duration): "
        "cannot measure errors, p95"
    )
    assert detectable["phases"][0]["checks"][0]["why"].startswith(
        "its merchants (m-1001) have no outcome events in the look-back window"
    )


def test_traffic_profile__no_failures__rate_floored_not_zero():
    # Given / When
    profile = traffic_profile({"a": {"events": 100, "failures": 0}}, 600)
    # Then
    assert profile["baseline_rate"] == pytest.approx(0.5 / 101)
    assert profile["heavy_share"] == 0.0


def test_rollout_preflight_command__prints_what_each_phase_detects(
    fleet_rollout, capsys
):
    # Given
    rollout, _, _ = fleet_rollout
    # When
    call_command("rollout", "preflight", str(rollout.pk))
    # Then
    out = capsys.readouterr().out
    assert "preflight: look-back (lookback, 6 h): 20 merchants with traffic" in out
    assert (
        "preflight: 10%: ~2 merchants, ~1 events/min each, 30 min (max_duration)" in out
    )
    assert "preflight warning: the pilot phase can catch only gross regressions" in out
    assert f"preflight passed: rollout {rollout.pk} may start" in out


def test_rollout_preflight_command__refused__exit_with_problems(rollout_factory):
    # Given: a rollout already running is no draft
    rollout = rollout_factory(started=True, phases=PHASES, checks=DEFAULT_CHECKS)
    # When / Then
    with pytest.raises(CommandError, match="preflight refuses: rollout .* not draft"):
        call_command("rollout", "preflight", str(rollout.pk))


def test_rollout_start_api__answer_carries_detectable(api, fleet_rollout):
    # Given
    rollout, _, _ = fleet_rollout
    # When
    response = send(api, "post", f"/api/v1/rollouts/{rollout.pk}/start", {})
    # Then
    assert response.status_code == 200, response.content
    detectable = response.json()["preflight"]["detectable"]
    assert [p["name"] for p in detectable["phases"]] == ["pilot", "10%", "50%", "100%"]
    assert detectable["phases"][1]["checks"][0]["metric"] == "error_rate"


def test_rollout_start_command__prints_what_each_phase_detects(fleet_rollout, capsys):
    # Given
    rollout, _, _ = fleet_rollout
    # When
    call_command("rollout", "start", str(rollout.pk))
    # Then
    out = capsys.readouterr().out
    assert (
        "preflight: 50%: ~10 merchants, ~1 events/min each, 60 min (max_duration)"
        in out
    )
    assert f"rollout {rollout.pk} running: phase 1 (pilot) is live" in out


def test_rollout_detectable__docs_example__same_figures(rollout_factory):
    # Given: docs/canary.md's example: 100 merchants at 30 events/min over
    # 6 h, 20% of them at 5x a 1% error rate, log latency spread 0.5
    rollout = rollout_factory(phases=PHASES, checks=DEFAULT_CHECKS)
    p95 = 100 * math.exp(0.5 * statistics.NormalDist().inv_cdf(0.95))
    keys = ["m-1001", *(f"m-{3000 + i}" for i in range(99))]
    rollout.merchant_baseline = {
        "seconds": 21600,
        "merchants": {
            key: {
                "events": 10800,
                "failures": 540 if i % 5 == 4 else 108,
                "p50_ms": 100.0,
                "p95_ms": p95,
            }
            for i, key in enumerate(keys)
        },
    }
    # When
    detectable = rollout_detectable(rollout, now=clock.now())
    # Then
    pilot, ten = (p["summary"] for p in detectable["phases"][:2])
    assert pilot == (
        "pilot: ~1 merchant, ~30 events/min each, 10 min (min_duration): detects "
        "+5.9 pp errors, +23% p95 at 80% power"
    )
    assert ten == (
        "10%: ~10 merchants, ~30 events/min each, 30 min (max_duration): detects "
        "+1.1 pp errors, +11% p95 at 80% power"
    )
    # errors beyond 3 margins: a warning; p95 just within them: none (the
    # other warnings are the 100% phase's, which has no duration here)
    assert [w for w in detectable["warnings"] if "100%" not in w] == [
        "the pilot phase can catch only gross regressions (> +5.9 pp errors (check "
        "error_rate), margin +1.0 pp) in its 10 min",
    ]


def test_rollout_start_checked__compare_checks__baselines_captured_once(
    production, flag_factory, merchant_factory, monkeypatch
):
    # Given: a draft with the default (compare) checks and look-back traffic
    from canary import services
    from canary.services.operator import rollout_start_checked
    from canary.services.outcomes import outcome_events_ingest
    from controlplane.audit.actors import SYSTEM

    flag = flag_factory("once_flag")
    for key in ("o-1", "o-2"):
        merchant_factory(key)
    outcome_events_ingest(
        events=[
            {
                "flag": "once_flag",
                "merchant": k,
                "variation": "off",
                "outcome": "success",
            }
            for k in ("o-1", "o-2")
            for _ in range(5)
        ],
        environment=production,
    )
    rollout = services.rollout_create_from_template(
        actor=SYSTEM,
        template="pilot-10-50-100",
        flag=flag,
        environment=production,
        pilot_merchants=["o-1"],
    )
    import canary.services.rollouts as rollouts_module

    calls = []
    original = rollouts_module.merchant_baseline_for
    monkeypatch.setattr(
        rollouts_module,
        "merchant_baseline_for",
        lambda pk: calls.append(pk) or original(pk),
    )
    # When
    started, report = rollout_start_checked(rollout_id=rollout.pk, actor=SYSTEM)
    # Then: the start kept the preflight's capture instead of querying again
    assert calls == []
    assert set(started.merchant_baseline["merchants"]) == {"o-1", "o-2"}
    assert "capture" not in report.as_dict()
