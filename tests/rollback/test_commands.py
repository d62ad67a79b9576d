"""manage.py deployment / rollback: output, progress, and one-line errors."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rollback.models import Deployment, DeploymentStatus, RollbackRun


def _call(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_deployment_record__cli__recorded_with_previous(production):
    # Given
    _call(
        "deployment",
        "record",
        "shop",
        "v1",
        "--env",
        "production",
        "--migration-state",
        "{}",
    )
    # When
    out = _call(
        "deployment",
        "record",
        "shop",
        "v2",
        "--env",
        "production",
        "--artifact",
        "img:v2",
    )
    # Then
    latest = Deployment.objects.latest("id")
    assert f"deployment {latest.pk}: shop v2 in production (previous: v1)" in out
    assert latest.migration_state["default"]["flags"]
    assert "shop" in _call("deployment", "list") and "superseded" in _call(
        "deployment", "list"
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ("deployment", "record", "shop", "v1", "--env", "nowhere"),
            "environment 'nowhere' does not exist",
        ),
        (
            (
                "deployment",
                "record",
                "shop",
                "v1",
                "--env",
                "production",
                "--migration-state",
                "{",
            ),
            "--migration-state is not JSON",
        ),
        (
            ("rollback", "preflight", "--deployment", "999"),
            "deployment 999 does not exist",
        ),
        (
            ("rollback", "run", "--deployment", "999", "--level", "2"),
            "deployment 999 does not exist",
        ),
        (
            ("rollback", "run", "--deployment", "abc", "--level", "2"),
            "deployment id must be an integer",
        ),
        (("rollback", "status", "77"), "rollback run 77 does not exist"),
    ],
)
def test_commands__bad_input__one_line_command_error(production, args, message):
    with pytest.raises(CommandError) as info:
        _call(*args)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_rollback_run__level_outside_1_to_3__command_error(deployment_pair):
    _, v2 = deployment_pair
    with pytest.raises(CommandError, match="level must be 1, 2 or 3, not 5"):
        _call("rollback", "run", "--deployment", str(v2.pk), "--level", "5")
    assert RollbackRun.objects.count() == 0


def test_rollback_run__no_previous__command_error(
    production, releases, rollback_settings
):
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    _call(
        "deployment",
        "record",
        "api",
        "v1",
        "--env",
        "production",
        "--migration-state",
        "{}",
    )
    first = Deployment.objects.get(service="api")
    with pytest.raises(CommandError, match="has no previous deployment"):
        _call("rollback", "run", "--deployment", str(first.pk), "--level", "2")


def test_rollback_preflight__irreversible__reported_per_level(
    production, releases, rollback_settings
):
    # Given
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    _call(
        "deployment",
        "record",
        "shop",
        "v1",
        "--env",
        "production",
        "--migration-state",
        "{}",
    )
    _call(
        "deployment",
        "record",
        "shop",
        "v2",
        "--env",
        "production",
        "--migration-state",
        '{"default": {"migrapp_irreversible": "0001_initial"}}',
    )
    v2 = Deployment.objects.get(version="v2")
    # When
    out = _call("rollback", "preflight", "--deployment", str(v2.pk))
    # Then
    assert "level 1 (flag toggle): NOT possible" in out
    assert "level 2 (deployment revert): possible" in out
    assert "level 3 (migration revert): NOT possible" in out
    assert "migrapp_irreversible.0002_uppercase_names: RunPython" in out


def test_rollback_run__wait__prints_each_step_and_status(
    transactional_db, deployment_pair, releases, rollback_settings
):
    # Given (transactional: the task runs when the run's transaction commits)
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    # When
    out = _call(
        "rollback",
        "run",
        "--deployment",
        str(v2.pk),
        "--level",
        "2",
        "--reason",
        "5xx",
        "--wait",
    )
    # Then
    run = RollbackRun.objects.get()
    assert f"rollback run {run.pk} started (level 2)" in out
    assert "step 1 flag_toggle: skipped" in out
    assert "step 2 deployment_revert: succeeded (attempt 1)" in out
    assert f"rollback run {run.pk} succeeded" in out
    assert f"rollback run {run.pk}: succeeded (level 2" in _call(
        "rollback", "status", str(run.pk)
    )
    v2.refresh_from_db()
    assert v2.status == DeploymentStatus.REVERTED


def test_rollback_run__wait_and_step_fails__exit_non_zero(
    transactional_db, deployment_pair, rollback_settings
):
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_STEP_MAX_ATTEMPTS=1,
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {"type": "command", "argv": ["false"], "idempotent": True}
        },
    )
    with pytest.raises(
        CommandError, match="failed: stopped at step 2 \\(deployment_revert\\)"
    ):
        _call("rollback", "run", "--deployment", str(v2.pk), "--level", "2", "--wait")


def test_rollback_retry__not_failed__command_error(
    deployment_pair, releases, rollback_settings, django_capture_on_commit_callbacks
):
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    with django_capture_on_commit_callbacks(execute=True):
        _call("rollback", "run", "--deployment", str(v2.pk), "--level", "2")
    run = RollbackRun.objects.get()
    with pytest.raises(CommandError, match="only a failed run can be retried"):
        _call("rollback", "retry", str(run.pk))


def test_deployment_state__printed_json__accepted_by_record(production):
    # Given
    state = _call("deployment", "state").strip()
    # When
    _call(
        "deployment",
        "record",
        "shop",
        "v1",
        "--env",
        "production",
        "--migration-state",
        state,
    )
    # Then
    assert (
        Deployment.objects.get().migration_state["default"]["migrapp_ok"]
        == "0003_widget_index"
    )


def test_rollback_run__level_1_flag_only__flag_killed(
    transactional_db, production, flag_factory
):
    # Given
    from controlplane.audit.actors import SYSTEM
    from flags import services as flag_services
    from flags.models import FlagState

    flag = flag_factory("sequential_workflow")
    flag_services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=production, enabled=True
    )
    # When
    out = _call(
        "rollback",
        "run",
        "--level",
        "1",
        "--flag",
        flag.key,
        "--env",
        "production",
        "--wait",
    )
    # Then
    assert "step 1 flag_toggle: succeeded (attempt 1)" in out
    assert FlagState.objects.get(flag=flag, environment=production).enabled is False


def test_rollback_run__backend_of_another_service__command_error(
    deployment_pair, releases, tmp_path, rollback_settings
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "shop": {"type": "symlink", "root": str(releases)},
            "payments": {"type": "symlink", "root": str(tmp_path / "payments")},
        }
    )
    # When / Then
    with pytest.raises(
        CommandError, match="deploy backend 'payments' may not revert service 'shop'"
    ):
        _call(
            "rollback",
            "run",
            "--deployment",
            str(v2.pk),
            "--level",
            "2",
            "--backend",
            "payments",
        )
    assert RollbackRun.objects.count() == 0
