"""Deploy check: the database role must not be able to bypass the audit triggers.

The append-only and no-TRUNCATE triggers on ``audit_auditevent`` stop every
role except one that can switch triggers off for its session: a superuser
(``SET session_replication_role = replica``), or a role granted SET on that
parameter. ``BYPASSRLS`` is reported too: such a role is a superuser in all
but name for row security. Run with ``manage.py check --deploy``.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError, connections

ROLE_CAN_BYPASS = "controlplane.audit.W001"
ROLE_NOT_CHECKED = "controlplane.audit.W002"

_ROLE_QUERY = """
SELECT current_user, r.rolsuper, r.rolbypassrls,
       has_parameter_privilege('session_replication_role', 'SET')
FROM pg_roles AS r
WHERE r.rolname = current_user
"""


def database_role_problems(alias: str) -> list[Warning]:
    """Return warnings when ``alias``'s PostgreSQL role can bypass triggers."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return []
    try:
        with connection.cursor() as cursor:
            cursor.execute(_ROLE_QUERY)
            row = cursor.fetchone()
    except DatabaseError as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [
            Warning(
                f"could not check the role of database {alias!r}: {first_line}",
                hint="Run the check where the database is reachable.",
                id=ROLE_NOT_CHECKED,
            )
        ]
    if row is None:
        return []
    role, is_superuser, bypasses_rls, can_set_replication_role = row
    powers = [
        name
        for name, has_it in (
            ("is a superuser", is_superuser),
            ("has BYPASSRLS", bypasses_rls),
            ("may SET session_replication_role", can_set_replication_role),
        )
        if has_it
    ]
    if not powers:
        return []
    return [
        Warning(
            f"database {alias!r}: role {role!r} {', '.join(powers)}: it can "
            "switch off the audit log's append-only triggers, so the audit "
            "chain is only as safe as its checkpoints",
            hint="Connect as a role without SUPERUSER, BYPASSRLS or SET on "
            "session_replication_role (docs/audit.md).",
            id=ROLE_CAN_BYPASS,
        )
    ]


@register(Tags.security, deploy=True)
def check_database_role(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Warning]:
    """Warn for each database whose role can bypass the audit triggers."""
    aliases = list(databases) if databases else ["default"]
    problems: list[Warning] = []
    for alias in aliases:
        problems.extend(database_role_problems(alias))
    return problems
