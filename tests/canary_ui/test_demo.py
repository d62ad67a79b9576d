"""The demo's draft rollout: created once by demo_project_ensure, ready to start."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command

from canary.demo import demo_project_ensure as demo_ensure
from canary.models import Rollout, RolloutStatus
from canary.templates_data import DEFAULT_CHECKS
from controlplane.audit.models import AuditEvent


def test_demo_ensure__fresh__draft_rollout_of_sequential_workflow(db):
    # Given / When
    demo_ensure()
    # Then
    rollout = Rollout.objects.get()
    assert (rollout.flag.key, rollout.environment.key) == (
        "sequential_workflow",
        "production",
    )
    assert rollout.status == RolloutStatus.DRAFT
    phases = list(rollout.phases.order_by("index").values_list("name", "min_duration"))
    assert phases == [("pilot", 20), ("10%", 20), ("50%", 20), ("100%", 20)]
    assert rollout.phases.get(index=0).pilot_merchants == ["m-1001"]
    gates = list(rollout.phases.order_by("index").values_list("gate", flat=True))
    assert gates == ["guard", "prove", "prove", "prove"]


def test_demo_ensure__fresh__draft_watches_the_default_check_set_every_5s(db):
    # Given / When
    demo_ensure()
    # Then: the default set's checks, margins and alpha; only the interval
    # is the demo's
    rollout = Rollout.objects.get()
    checks = {check.name: check for check in rollout.checks.all()}
    assert (
        set(checks)
        == {check["name"] for check in DEFAULT_CHECKS}
        == {
            "error_rate",
            "p95_latency",
        }
    )
    for default in DEFAULT_CHECKS:
        check = checks[default["name"]]
        assert (check.provider, check.mode, check.spec) == (
            default["provider"],
            default["mode"],
            default["spec"],
        )
        assert (check.margin, check.alpha) == (default["margin"], default["alpha"])
        assert check.interval == 5 != default["interval"]


def test_demo_ensure__second_run__no_new_rollout_nor_event(db):
    # Given
    demo_ensure()
    events = AuditEvent.objects.count()
    # When
    demo_ensure()
    # Then
    assert Rollout.objects.count() == 1
    assert AuditEvent.objects.count() == events


def test_demo_rollout__start_command__preflight_passes_pilot_live(db):
    # Given
    demo_ensure()
    rollout = Rollout.objects.get()
    out = StringIO()
    # When
    call_command("rollout", "start", str(rollout.pk), stdout=out)
    # Then
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING
    assert "phase 1 (pilot) is live" in out.getvalue()
