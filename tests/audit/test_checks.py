"""The deploy check warns when the database role can bypass the audit triggers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.core.checks import run_checks
from django.db import connection

from controlplane.audit.checks import ROLE_CAN_BYPASS, database_role_problems


def deploy_security_ids() -> list[str]:
    checks = run_checks(include_deployment_checks=True, tags=["security"])
    return [message.id for message in checks]


@pytest.fixture
def as_role(db) -> Iterator:
    """Switch the test's connection to a fresh role for this transaction."""
    name = f"cp_h_audit_check_{uuid.uuid4().hex[:12]}"

    def switch(options: str = "", grant_replication_role: bool = False) -> str:
        with connection.cursor() as cursor:
            # CREATE ROLE and GRANT are transactional: rolled back with the test.
            cursor.execute(f"CREATE ROLE {name} NOLOGIN {options}")
            if grant_replication_role:
                cursor.execute(
                    f"GRANT SET ON PARAMETER session_replication_role TO {name}"
                )
            cursor.execute(f"SET LOCAL ROLE {name}")
        return name

    yield switch
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


@pytest.mark.postgres
def test_check_database_role__superuser__warns(db):
    # Given: the test suite connects as postgres, a superuser
    # When
    problems = database_role_problems("default")
    # Then
    assert [problem.id for problem in problems] == [ROLE_CAN_BYPASS]
    assert "is a superuser" in problems[0].msg
    assert "session_replication_role" in problems[0].msg
    assert ROLE_CAN_BYPASS in deploy_security_ids()


@pytest.mark.postgres
def test_check_database_role__plain_role__no_warning(as_role):
    # Given
    role = as_role()
    # When
    problems = database_role_problems("default")
    # Then
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == role
    assert problems == []
    assert ROLE_CAN_BYPASS not in deploy_security_ids()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("options", "grant", "power"),
    [
        ("BYPASSRLS", False, "has BYPASSRLS"),
        ("", True, "may SET session_replication_role"),
    ],
)
def test_check_database_role__role_that_can_bypass__warns(
    as_role, options, grant, power
):
    # Given
    role = as_role(options, grant_replication_role=grant)
    # When
    problems = database_role_problems("default")
    # Then
    assert [problem.id for problem in problems] == [ROLE_CAN_BYPASS]
    assert f"role {role!r} {power}" in problems[0].msg
