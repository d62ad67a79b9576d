"""Only time spent running counts toward a phase's min_duration.

A pause stops the phase's clock; resuming starts it again where it
stopped. The controller runs for real (a live HTTP check on 127.0.0.1);
the long-pause case swaps ``canary.clock.now`` instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import time

from canary import clock, services
from canary.controller import controller_tick
from canary.models import Rollout, RolloutStatus
from controlplane.audit.actors import SYSTEM
from tests.canary_controller.conftest import http_check

Status = RolloutStatus

PHASES = [
    {"name": "pilot", "pilot_merchants": ["m-pilot"], "min_duration": 2},
    {"name": "100%", "percentage": 100},
]


def _reload(rollout: Rollout) -> Rollout:
    return Rollout.objects.get(pk=rollout.pk)


def test_controller_tick__paused_past_min_duration_then_resumed__holds_until_running_time(
    rollout_factory, health_server
):
    # Given: a 2 s pilot phase paused at once, and paused for longer than that
    rollout = rollout_factory(
        phases=PHASES, checks=[http_check(health_server.url, interval=1)]
    )
    services.rollout_pause(rollout_id=rollout.pk, actor=SYSTEM, reason="look first")
    time.sleep(2.3)
    services.rollout_resume(rollout_id=rollout.pk, actor=SYSTEM)
    resumed_at = time.monotonic()
    # When: the check passes at once after the resume
    held = controller_tick()
    held_rollout = _reload(rollout)
    time.sleep(max(0.0, 2.1 - (time.monotonic() - resumed_at)))
    controller_tick()
    # Then: the phase waited for 2 s of running time, not of wall time
    assert held.measured == 1 and held.verdicts == {"pass": 1}
    assert held.decisions == []
    assert held_rollout.current_phase == 0
    assert held_rollout.status == Status.RUNNING
    advanced = _reload(rollout)
    assert (advanced.current_phase, advanced.status) == (1, Status.RUNNING)


def test_rollout_gate__pause_of_an_hour__not_counted_in_min_duration(
    rollout_factory, health_server, monkeypatch
):
    # Given: a clock the test moves; the phase runs 10 s, is paused for an
    # hour, then runs 5 s more
    start = clock.now()
    offset = {"seconds": 0.0}
    monkeypatch.setattr(
        clock, "now", lambda: start + dt.timedelta(seconds=offset["seconds"])
    )
    phases = [{**PHASES[0], "min_duration": 60}, PHASES[1]]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    offset["seconds"] = 10
    services.rollout_pause(rollout_id=rollout.pk, actor=SYSTEM, reason="lunch")
    offset["seconds"] = 3610
    services.rollout_resume(rollout_id=rollout.pk, actor=SYSTEM)
    offset["seconds"] = 3615
    # When
    running = services.rollout_phase_elapsed(_reload(rollout))
    decision = services.rollout_gate(rollout=_reload(rollout))
    # Then
    assert running == 15.0
    assert decision.action == "hold"
    assert decision.remaining == 45.0
    assert "min_duration: 15s of 60s elapsed" in decision.reasons


def test_rollout_transition__awaiting_approval__clock_stops_and_restarts(
    rollout_factory, monkeypatch
):
    # Given: running 30 s, then 600 s awaiting approval, then approved
    start = clock.now()
    offset = {"seconds": 0.0}
    monkeypatch.setattr(
        clock, "now", lambda: start + dt.timedelta(seconds=offset["seconds"])
    )
    rollout = rollout_factory(phases=PHASES, checks=[])
    offset["seconds"] = 30
    services.rollout_transition(
        rollout_id=rollout.pk,
        to=Status.AWAITING_APPROVAL,
        actor=SYSTEM,
        reason="test",
    )
    waiting = _reload(rollout)
    offset["seconds"] = 630
    services.rollout_approve(rollout_id=rollout.pk, actor=SYSTEM)
    offset["seconds"] = 640
    # When
    approved = _reload(rollout)
    # Then
    assert waiting.phase_running_since is None
    assert waiting.phase_running_seconds == 30.0
    assert services.rollout_phase_elapsed(waiting) == 30.0
    assert approved.phase_running_since == start + dt.timedelta(seconds=630)
    assert services.rollout_phase_elapsed(approved) == 40.0
