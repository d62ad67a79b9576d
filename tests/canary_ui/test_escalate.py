"""Rolling back further after a level-1 rollback: escalation to level 2 or 3.

Through the service, the command, the API and the admin; the deployment
revert is real (the symlink backend switches ``current`` between release
directories in a temporary folder), and the rollback runs execute on
commit through the eager Celery task.
"""

from __future__ import annotations

import os
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from canary import services
from canary.controller import controller_tick
from canary.exceptions import Conflict, InvalidInput
from canary.models import Rollout, RolloutStatus
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from rollback.models import Deployment, RollbackRun

Status = RolloutStatus


@pytest.fixture
def releases(tmp_path, settings) -> Path:
    """releases/v1 and v2 with current -> releases/v2, and the symlink
    backend configured for every service."""
    root = tmp_path / "shop"
    for version in ("v1", "v2"):
        (root / "releases" / version).mkdir(parents=True)
    os.symlink("releases/v2", root / "current")
    settings.CONTROLPLANE = {
        **(settings.CONTROLPLANE or {}),
        "ROLLBACK_DEPLOY_BACKENDS": {"default": {"type": "symlink", "root": str(root)}},
    }
    return root


@pytest.fixture
def deployment(production) -> Deployment:
    """shop v2 live in production, v1 its previous deployment."""
    from rollback.services import deployment_record

    for version in ("v1", "v2"):
        live = deployment_record(
            actor=SYSTEM,
            service="shop",
            environment=production,
            version=version,
            artifact=f"img:{version}",
            migration_state={},
        )
    return live


@pytest.fixture
def rolled_back(
    rollout_factory, deployment, releases, django_capture_on_commit_callbacks
):
    """Return make(**kwargs): a rollout of ``deployment`` rolled back at level 1
    (its run executed, the controller marked it rolled_back)."""

    def make(**kwargs) -> Rollout:
        rollout = rollout_factory(started=True, deployment=deployment.pk, **kwargs)
        with django_capture_on_commit_callbacks(execute=True):
            services.rollout_rollback(
                rollout_id=rollout.pk, level=1, actor=SYSTEM, reason="errors"
            )
        controller_tick(rollout_id=rollout.pk)
        rollout.refresh_from_db()
        assert rollout.status == Status.ROLLED_BACK
        return rollout

    return make


def _escalations(rollout: Rollout):
    return AuditEvent.objects.filter(
        action="rollout.rollback_escalated", target_id=str(rollout.pk)
    )


def _steps(run: RollbackRun) -> list[tuple[str, str]]:
    return list(run.steps.order_by("position").values_list("actuator", "status"))


def test_rollout_rollback_command__level_2_after_level_1__deployment_reverted(
    rolled_back, releases, deployment, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back()
    runs_before = RollbackRun.objects.count()
    out = StringIO()
    # When
    with django_capture_on_commit_callbacks(execute=True):
        call_command("rollout", "rollback", str(rollout.pk), "--level", "2", stdout=out)
    # Then
    run = RollbackRun.objects.latest("id")
    assert RollbackRun.objects.count() == runs_before + 1
    assert (run.level, run.trigger, run.trigger_ref) == (2, "rollout", str(rollout.pk))
    assert run.status == "succeeded"
    assert _steps(run) == [
        ("flag_toggle", "skipped"),
        ("deployment_revert", "succeeded"),
    ]
    assert os.readlink(releases / "current") == "releases/v1"
    deployment.refresh_from_db()
    assert deployment.status == "reverted"
    event = _escalations(rollout).get()
    assert event.details["from_level"] == 1 and event.details["level"] == 2
    assert event.details["rollback_run"] == run.pk
    assert event.details["restores_flag"] is False
    assert f"rollback run {run.pk} level 2" in out.getvalue()
    rollout.refresh_from_db()
    assert rollout.status == Status.ROLLED_BACK


def test_rollout_escalate__level_2_then_3__deployment_step_skipped_migration_run(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back()
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_escalate(
            rollout_id=rollout.pk, level=2, actor=SYSTEM, reason="still failing"
        )
    # When
    with django_capture_on_commit_callbacks(execute=True):
        run = services.rollout_escalate(
            rollout_id=rollout.pk, level=3, actor=SYSTEM, reason="data is wrong"
        )
    # Then
    run.refresh_from_db()
    assert run.level == 3 and run.status == "succeeded"
    assert _steps(run) == [
        ("flag_toggle", "skipped"),
        ("deployment_revert", "skipped"),
        ("migration_revert", "succeeded"),
    ]
    assert [e.details["level"] for e in _escalations(rollout).order_by("id")] == [2, 3]


def test_rollout_rollback_api__level_2_after_level_1__200_and_run(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    from tests.canary_ui.test_api import _user_with, send

    rollout = rolled_back()
    client = Client()
    client.force_login(_user_with("view_rollout", "change_rollout"))
    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = send(
            client,
            "post",
            f"/api/v1/rollouts/{rollout.pk}/rollback",
            {"level": 2, "reason": "5xx still high"},
        )
    # Then
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "rolled_back"
    assert response.json()["max_level"] == 3
    run = RollbackRun.objects.latest("id")
    assert run.level == 2 and run.reason == "5xx still high"
    assert _escalations(rollout).count() == 1


def _refused(client: Client, rollout: Rollout, level: int) -> dict:
    from tests.canary_ui.test_api import send

    runs, events = RollbackRun.objects.count(), AuditEvent.objects.count()
    response = send(
        client, "post", f"/api/v1/rollouts/{rollout.pk}/rollback", {"level": level}
    )
    assert response.status_code == 409, response.content
    assert RollbackRun.objects.count() == runs
    assert AuditEvent.objects.count() == events
    return response.json()


@pytest.fixture
def ops(db) -> Client:
    from tests.canary_ui.test_api import _user_with

    client = Client()
    client.force_login(_user_with("view_rollout", "change_rollout"))
    return client


def test_rollout_rollback_api__rolled_back_without_deployment__409_no_deployment(
    ops, rollout_factory, django_capture_on_commit_callbacks
):
    # Given: a rollout with no deployment, rolled back at level 1
    rollout = rollout_factory(started=True)
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_rollback(
            rollout_id=rollout.pk, level=1, actor=SYSTEM, reason="errors"
        )
    controller_tick(rollout_id=rollout.pk)
    # When
    body = _refused(ops, rollout, 2)
    # Then
    assert body["code"] == "conflict"
    assert "has no deployment recorded" in body["message"]
    assert body["errors"] == {"level": [body["message"]]}


def test_rollout_rollback_api__above_max_level__409_names_max_level(ops, rolled_back):
    # Given
    rollout = rolled_back(max_level=2)
    # When
    body = _refused(ops, rollout, 3)
    # Then
    assert f"level 3 is above rollout {rollout.pk}'s max_level 2" in body["message"]


def test_rollout_rollback_api__same_level_again__409_already_rolled_back(
    ops, rolled_back
):
    # Given
    rollout = rolled_back()
    # When
    body = _refused(ops, rollout, 1)
    # Then
    assert "already rolled back at level 1" in body["message"]


def test_rollout_rollback_api__run_in_progress__409_and_no_second_run(
    ops, rollout_factory, deployment, releases
):
    # Given: rolling back, its level-1 run not executed yet
    rollout = rollout_factory(started=True, deployment=deployment.pk)
    services.rollout_rollback(
        rollout_id=rollout.pk, level=1, actor=SYSTEM, reason="errors"
    )
    pending = RollbackRun.objects.get()
    # When
    body = _refused(ops, rollout, 2)
    # Then
    assert f"rollback run {pending.pk} (level 1)" in body["message"]
    assert "still pending" in body["message"]


def test_rollout_rollback_api__backend_missing__409_preflight_reason(
    ops, rolled_back, settings
):
    # Given: the deploy backend was removed from the settings since
    rollout = rolled_back()
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "ROLLBACK_DEPLOY_BACKENDS": {}}
    # When
    body = _refused(ops, rollout, 2)
    # Then
    assert "rollback impossible: level 2: no deploy backend" in body["message"]


def test_rollout_escalate__still_running__conflict(rollout_factory, deployment):
    # Given
    rollout = rollout_factory(started=True, deployment=deployment.pk)
    # When
    with pytest.raises(Conflict) as refused:
        services.rollout_escalate(
            rollout_id=rollout.pk, level=2, actor=SYSTEM, reason="x"
        )
    # Then
    assert "only a rollout that was rolled back escalates" in refused.value.message


def test_rollout_rollback_command__refused__one_line_error(rolled_back):
    # Given
    rollout = rolled_back(max_level=1)
    # When
    with pytest.raises(CommandError) as error:
        call_command(
            "rollout", "rollback", str(rollout.pk), "--level", "2", stdout=StringIO()
        )
    # Then
    assert str(error.value) == (f"level 2 is above rollout {rollout.pk}'s max_level 1")


def test_rollout_admin_rollback__rolled_back_level_2__run_started(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    User.objects.create_superuser("boss", password="x")
    client = Client()
    client.login(username="boss", password="x")
    rollout = rolled_back()
    page = client.get(f"/admin/canary/rollout/{rollout.pk}/change/").content.decode()
    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/admin/canary/rollout/{rollout.pk}/do/rollback/",
            {"level": "2", "reason": "deployment is bad too"},
            follow=True,
        )
    # Then
    assert f"/admin/canary/rollout/{rollout.pk}/do/rollback/" in page
    assert "Roll back now: rollout" in response.content.decode()
    run = RollbackRun.objects.latest("id")
    assert run.level == 2 and run.actor_name == "boss"
    assert _escalations(rollout).get().actor_name == "boss"


def test_rollout_begin_rollback__running_level_3_above_max_level__lowered_and_audited(
    rollout_factory, deployment, releases
):
    # Given
    rollout = rollout_factory(started=True, deployment=deployment.pk, max_level=2)
    # When
    services.rollout_rollback(
        rollout_id=rollout.pk, level=3, actor=SYSTEM, reason="errors"
    )
    # Then
    started = AuditEvent.objects.get(action="rollout.rollback_started")
    assert started.details["requested_level"] == 3 and started.details["level"] == 2
    assert RollbackRun.objects.get().level == 2


def test_rollout_create__check_above_max_level__invalid_input(rollout_factory):
    # Given
    check = {
        "name": "errors",
        "provider": "outcomes",
        "spec": {"metric": "error_rate"},
        "threshold": 0.05,
        "on_failure": "rollback_2",
    }
    # When
    with pytest.raises(InvalidInput) as error:
        rollout_factory(checks=[check], max_level=1)
    # Then
    assert error.value.field == "checks[0].on_failure"
    assert "above the rollout's max_level 1" in error.value.message


def test_rollout_create_api__max_level_out_of_range__400(db, flag, production):
    # Given
    from tests.canary_ui.test_api import _user_with, send

    client = Client()
    client.force_login(_user_with("view_rollout", "add_rollout"))
    body = {
        "flag": flag.key,
        "environment": production.key,
        "template": "demo-fast",
        "pilot_merchants": ["m-1001"],
        "max_level": 4,
    }
    # When
    response = send(client, "post", "/api/v1/rollouts", body)
    # Then
    assert response.status_code == 400, response.content
    assert "max_level" in response.json()["errors"]
    assert not Rollout.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rollout_escalate__four_operators_at_once__one_run_and_one_event(
    rolled_back,
):
    # Given: committed data; four requests for level 2 released together
    import threading

    from django.db import connection

    rollout = rolled_back()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def escalate() -> None:
        try:
            barrier.wait(timeout=10)
            services.rollout_escalate(
                rollout_id=rollout.pk, level=2, actor=SYSTEM, reason="at once"
            )
            outcomes.append("started")
        except Conflict as exc:
            outcomes.append(exc.message)
        finally:
            connection.close()

    threads = [threading.Thread(target=escalate) for _ in range(4)]
    # When
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then: the row lock serialises them; the others are told why not
    assert outcomes.count("started") == 1, outcomes
    assert all(
        "still" in text or "already rolled back at level 2" in text
        for text in outcomes
        if text != "started"
    ), outcomes
    assert RollbackRun.objects.filter(trigger_ref=str(rollout.pk), level=2).count() == 1
    assert _escalations(rollout).count() == 1
