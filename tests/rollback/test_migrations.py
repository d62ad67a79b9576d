"""Migration revert and preflight against real test apps with real migrations."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify
from controlplane.exceptions import Conflict
from rollback.actuators.migration_revert import migration_state_capture
from rollback.models import RunStatus
from rollback.preflight import rollback_preflight
from rollback.services import deployment_record, rollback_run_start


def _columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {
            c.name
            for c in connection.introspection.get_table_description(cursor, table)
        }


def _tables() -> set[str]:
    return set(connection.introspection.table_names())


def _indexes(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


def _applied(app: str) -> list[str]:
    return sorted(
        MigrationRecorder.Migration.objects.filter(app=app).values_list(
            "name", flat=True
        )
    )


@pytest.fixture
def migrapp_at(transactional_db):
    """Move migrapp_ok to a migration for the test; put it back to its latest after."""

    def move(target: str) -> None:
        call_command("migrate", "migrapp_ok", target, verbosity=0)

    yield move
    call_command("migrate", "migrapp_ok", verbosity=0)


@pytest.mark.postgres
@pytest.mark.slow
def test_run_level_3__three_migrations_applied__schema_back_and_rows_gone(
    migrapp_at, production, releases, rollback_settings, actor
):
    # Given: v1 live with migrapp_ok at 0001; v2 recorded, then migrated to 0003
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    migrapp_at("0001")
    deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v1",
        migration_state={},
    )
    v2 = deployment_record(
        actor=SYSTEM, service="shop", environment=production, version="v2"
    )
    assert v2.migration_state["default"]["migrapp_ok"] == "0001_initial"
    call_command("migrate", "migrapp_ok", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO migrapp_ok_widget (name, size) VALUES ('abc', 3)")
    assert "size" in _columns("migrapp_ok_widget")
    assert "migrapp_ok_widget_name_size" in _indexes("migrapp_ok_widget")
    report = rollback_preflight(deployment=v2, levels=(3,))[3]
    assert report["possible"] is True and report["apps"] == ["migrapp_ok"]
    assert any("AddField widget.size drops the column" in w for w in report["warnings"])
    # When (transactional_db: on_commit runs the executor task eagerly)
    run = rollback_run_start(actor=actor, level=3, reason="schema broke", deployment=v2)
    # Then
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert _columns("migrapp_ok_widget") == {"id", "name"}
    assert "migrapp_ok_widget_name_size" not in _indexes("migrapp_ok_widget")
    assert _applied("migrapp_ok") == ["0001_initial"]
    step = run.steps.get(level=3)
    assert (
        "unapplied migrapp_ok.0003_widget_index, migrapp_ok.0002_widget_size"
        in step.output
    )
    assert (
        AuditEvent.objects.filter(
            action="rollback.step_succeeded", target_id=str(step.pk)
        ).count()
        == 1
    )
    assert audit_chain_verify().ok


@pytest.mark.slow
def test_migration_revert__to_zero__table_dropped(
    migrapp_at, production, rollback_settings, actor
):
    # Given
    from rollback.actuators import ACTUATORS, StepContext

    migrapp_at("zero")
    state = migration_state_capture()
    call_command("migrate", "migrapp_ok", verbosity=0)
    assert "migrapp_ok_widget" in _tables()
    actuator = ACTUATORS["migration_revert"]
    params = {
        "migration_state": {"default": {"migrapp_ok": state["default"]["migrapp_ok"]}}
    }
    assert actuator.verify(params) is False
    # When
    actuator.execute(params, StepContext(step_id=1, run_id=1, attempt=1, actor=SYSTEM))
    # Then
    assert "migrapp_ok_widget" not in _tables()
    assert _applied("migrapp_ok") == []
    assert actuator.verify(params) is True
    assert "already at the recorded state" in actuator.execute(
        params, StepContext(step_id=1, run_id=1, attempt=2, actor=SYSTEM)
    )


def test_preflight__irreversible_run_python__refuses_naming_migration_and_operation(
    production, rollback_settings
):
    # Given
    deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v1",
        migration_state={},
    )
    v2 = deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v2",
        migration_state={"default": {"migrapp_irreversible": "0001_initial"}},
    )
    # When
    report = rollback_preflight(deployment=v2)
    # Then
    assert report[3]["possible"] is False
    assert report[3]["reasons"] == [
        "default: migrapp_irreversible.0002_uppercase_names: RunPython (Raw Python operation) is irreversible"
    ]
    assert report[2]["possible"] is False  # no backend configured
    assert "no deploy backend for service 'shop'" in report[2]["reasons"][0]


def test_run_level_3__irreversible__conflict_and_nothing_written(
    production, releases, rollback_settings, actor
):
    # Given
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v1",
        migration_state={},
    )
    v2 = deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v2",
        migration_state={"default": {"migrapp_irreversible": None}},
    )
    # When
    with pytest.raises(Conflict) as info:
        rollback_run_start(actor=actor, level=3, reason="x", deployment=v2)
    # Then
    assert "migrapp_irreversible.0002_uppercase_names: RunPython" in info.value.message
    assert v2.rollback_runs.count() == 0


def test_preflight__backup_command_fails__revert_not_started(
    migrapp_at, production, rollback_settings, tmp_path
):
    # Given
    from rollback.actuators import ACTUATORS, ActuatorError, StepContext

    migrapp_at("0002")
    rollback_settings(
        ROLLBACK_MIGRATION_BACKUP_COMMAND=[
            "sh",
            "-c",
            "echo dumping {database}; exit 2",
        ]
    )
    params = {"migration_state": {"default": {"migrapp_ok": "0001_initial"}}}
    # When
    with pytest.raises(ActuatorError) as info:
        ACTUATORS["migration_revert"].execute(
            params, StepContext(step_id=1, run_id=1, attempt=1, actor=SYSTEM)
        )
    # Then
    assert "backup command exited with status 2" in info.value.message
    assert "dumping" in info.value.output
    assert "size" in _columns("migrapp_ok_widget")


def test_migration_state_capture__all_migrated_apps__last_applied_per_app(db):
    state = migration_state_capture()
    assert state["default"]["migrapp_ok"] == "0003_widget_index"
    assert state["default"]["migrapp_irreversible"] == "0002_uppercase_names"
    assert state["default"]["rollback"] == "0002_rollbackstep_process_group"


@pytest.mark.postgres
@pytest.mark.slow
def test_migration_revert__statement_outlasts_session_timeout__not_cut(
    migrapp_at, production, rollback_settings
):
    # Given: a session whose statement timeout is shorter than the revert's
    # wait for a lock that another session holds for a second
    import threading

    import psycopg

    from rollback.actuators import ACTUATORS, StepContext

    migrapp_at("zero")
    state = migration_state_capture()
    call_command("migrate", "migrapp_ok", verbosity=0)
    params = {
        "migration_state": {"default": {"migrapp_ok": state["default"]["migrapp_ok"]}}
    }
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 200")
    conn_params = connection.get_connection_params()
    blocker = psycopg.connect(
        **{
            k: v
            for k, v in conn_params.items()
            if k in ("host", "port", "user", "password", "dbname")
        }
    )
    blocker.execute("LOCK TABLE migrapp_ok_widget IN ACCESS SHARE MODE")
    release = threading.Timer(1.0, blocker.rollback)
    release.start()
    try:
        # When
        ACTUATORS["migration_revert"].execute(
            params, StepContext(step_id=1, run_id=1, attempt=1, actor=SYSTEM)
        )
    finally:
        release.join()
        blocker.close()
    # Then: reverted, and the session has a statement timeout again after
    assert "migrapp_ok_widget" not in _tables()
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] != "0"
