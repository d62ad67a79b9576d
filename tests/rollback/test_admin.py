"""Admin: runs with steps inline, "roll back now" with confirmation, retry."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from controlplane.audit.actors import SYSTEM
from rollback.models import RollbackRun, RunStatus


@pytest.fixture
def admin_client_logged(client, db):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_admin_roll_back_now__first_post__confirmation_page_with_preflight(
    admin_client_logged, deployment_pair
):
    # Given
    _, v2 = deployment_pair
    # When
    response = admin_client_logged.post(
        "/admin/rollback/deployment/",
        {"action": "roll_back_now", "_selected_action": [v2.pk]},
    )
    # Then
    assert response.status_code == 200
    body = response.content.decode()
    assert "Yes, roll back" in body and "no deploy backend for service" in body
    assert RollbackRun.objects.count() == 0


def test_admin_roll_back_now__confirmed__run_started_and_executed(
    admin_client_logged,
    deployment_pair,
    releases,
    rollback_settings,
    django_capture_on_commit_callbacks,
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_logged.post(
            "/admin/rollback/deployment/",
            {
                "action": "roll_back_now",
                "_selected_action": [v2.pk],
                "confirm": "yes",
                "level": "2",
                "reason": "5xx from the admin",
                "flag": "",
            },
        )
    # Then
    assert response.status_code == 302
    run = RollbackRun.objects.get()
    assert (run.status, run.level, run.actor_name) == (RunStatus.SUCCEEDED, 2, "root")
    page = admin_client_logged.get(
        f"/admin/rollback/rollbackrun/{run.pk}/change/"
    ).content.decode()
    assert "deployment_revert" in page and "current -&gt; releases/v1" in page


def test_admin_retry_failed_run__failed__run_retried(
    admin_client_logged,
    deployment_pair,
    rollback_settings,
    releases,
    django_capture_on_commit_callbacks,
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_STEP_MAX_ATTEMPTS=1,
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {"type": "command", "argv": ["false"], "idempotent": True}
        },
    )
    from rollback.services import rollback_run_start

    with django_capture_on_commit_callbacks(execute=True):
        run = rollback_run_start(actor=SYSTEM, level=2, reason="x", deployment=v2)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    # When
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_logged.post(
            "/admin/rollback/rollbackrun/",
            {"action": "retry_failed_run", "_selected_action": [run.pk]},
        )
    # Then
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
