"""Level 3 (last resort): take apps back to a recorded migration state.

Uses Django's migration executor on each configured alias. The backward plan
is computed and every operation checked for reversibility before anything
runs; lossy operations are reported as warnings by preflight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db import migrations as ops
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from controlplane.conf import setting
from controlplane.db import timeouts_lifted
from rollback.actuators.base import ActuatorError, StepContext


def _leaf_applied(loader: MigrationLoader, app: str) -> str | None:
    applied = {key for key in loader.applied_migrations if key[0] == app}
    if not applied:
        return None
    for key in sorted(applied, reverse=True):
        node = loader.graph.node_map.get(key)
        children = node.children if node is not None else set()
        if not any(child in applied for child in children):
            return key[1]
    return sorted(applied)[-1][1]


def migration_state_capture(
    *, aliases: list[str] | None = None
) -> dict[str, dict[str, str | None]]:
    """Return {alias: {app: last applied migration or None}} for every migrated app."""
    state: dict[str, dict[str, str | None]] = {}
    for alias in (
        aliases or setting("ROLLBACK_MIGRATION_DATABASES") or [DEFAULT_DB_ALIAS]
    ):
        loader = MigrationLoader(connections[alias], ignore_no_migrations=True)
        state[alias] = {
            app: _leaf_applied(loader, app) for app in sorted(loader.migrated_apps)
        }
    return state


@dataclass
class BackwardPlan:
    """What reverting one alias to a recorded state would do."""

    alias: str
    targets: list[tuple[str, str | None]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # "app.migration" in order
    apps: list[str] = field(default_factory=list)
    irreversible: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    plan: list = field(default_factory=list)


def _describe(op: Any) -> str:
    text = op.describe() if hasattr(op, "describe") else type(op).__name__
    return f"{type(op).__name__} ({text})"


def _lossy(app: str, migration: Any, op: Any) -> str | None:
    where = f"{app}.{migration.name}"
    if isinstance(op, ops.CreateModel):
        return f"{where}: reverting CreateModel {op.name} drops table and every row the new code wrote"
    if isinstance(op, ops.AddField):
        return (
            f"{where}: reverting AddField {op.model_name}.{op.name} drops the column and what the"
            " new code wrote there"
        )
    if isinstance(op, ops.RemoveField):
        return (
            f"{where}: reverting RemoveField {op.model_name}.{op.name} re-adds the column; its old"
            " data is not restored (and a NOT NULL column without a default fails on a table"
            " with rows)"
        )
    if isinstance(op, ops.DeleteModel):
        return f"{where}: reverting DeleteModel {op.name} recreates the table empty"
    if isinstance(op, ops.AlterField):
        return f"{where}: reverting AlterField {op.model_name}.{op.name} may fail or truncate existing data"
    if isinstance(op, (ops.RunPython, ops.RunSQL)):
        return f"{where}: runs the reverse of {type(op).__name__} (a data migration)"
    return None


def backward_plan(*, alias: str, recorded: dict[str, str | None]) -> BackwardPlan:
    """Compute the backward plan for ``alias`` back to ``recorded`` (no writes)."""
    result = BackwardPlan(alias=alias)
    executor = MigrationExecutor(connections[alias])
    loader = executor.loader
    for app, name in sorted(recorded.items()):
        if app not in loader.migrated_apps:
            result.warnings.append(
                f"app {app!r} has no migrations in this code; skipped"
            )
            continue
        if name is not None and (app, name) not in loader.graph.nodes:
            result.problems.append(
                f"recorded migration {app}.{name} is not in the code"
            )
            continue
        current = _leaf_applied(loader, app)
        if current == name:
            continue
        if name is not None and (app, name) not in loader.applied_migrations:
            result.warnings.append(
                f"{app} is behind the recorded state ({current or 'zero'} < {name}); nothing to revert"
            )
            continue
        result.targets.append((app, name))
    if result.problems or not result.targets:
        return result
    plan = executor.migration_plan(result.targets)
    if any(not backwards for _, backwards in plan):
        result.problems.append(
            "the plan would apply migrations forwards; refusing a mixed plan"
        )
        return result
    result.plan = plan
    for migration, _ in plan:
        result.steps.append(f"{migration.app_label}.{migration.name}")
        if migration.app_label not in result.apps:
            result.apps.append(migration.app_label)
        for op in migration.operations:
            if not op.reversible:
                result.irreversible.append(
                    f"{migration.app_label}.{migration.name}: {_describe(op)} is irreversible"
                )
            note = _lossy(migration.app_label, migration, op)
            if note:
                result.warnings.append(note)
    return result


def _backup(alias: str, ctx: StepContext) -> str:
    template = setting("ROLLBACK_MIGRATION_BACKUP_COMMAND")
    if not template:
        return ""
    from rollback.actuators.deployment_revert import run_argv

    db = connections[alias].settings_dict
    values = {
        "alias": alias,
        "database": str(db.get("NAME", "")),
        "host": str(db.get("HOST", "")),
        "port": str(db.get("PORT", "")),
        "user": str(db.get("USER", "")),
        "run_id": str(ctx.run_id),
        "timestamp": timezone.now().strftime("%Y%m%dT%H%M%SZ"),
    }
    try:
        argv = [part.format_map(values) for part in template]
    except (KeyError, ValueError) as exc:
        raise ActuatorError(
            f"bad ROLLBACK_MIGRATION_BACKUP_COMMAND: {exc}", retryable=False
        ) from None
    code, out = run_argv(
        argv, timeout=float(setting("ROLLBACK_MIGRATION_BACKUP_TIMEOUT"))
    )
    text = f"$ {' '.join(argv)}\n{out}".rstrip()
    if code != 0:
        raise ActuatorError(
            f"backup command exited with status {code}; migration revert not started",
            output=text,
        )
    return text


class MigrationRevertActuator:
    """Migrate recorded apps back. params: {deployment_id, migration_state}."""

    kind = "migration_revert"

    def timeout(self, params: dict[str, Any]) -> float:
        return float(setting("ROLLBACK_MIGRATION_BACKUP_TIMEOUT")) + 600

    def heartbeats(self, params: dict[str, Any]) -> bool:
        return False  # in-process work: the lease is timeout + grace

    def _plans(self, params: dict[str, Any]) -> list[BackwardPlan]:
        state = params.get("migration_state") or {}
        unknown = [alias for alias in state if alias not in connections.settings]
        if unknown:
            raise ActuatorError(
                f"database alias {unknown[0]!r} is not configured", retryable=False
            )
        return [
            backward_plan(alias=alias, recorded=apps)
            for alias, apps in sorted(state.items())
        ]

    def plan(self, params: dict[str, Any]) -> str:
        lines = []
        for plan in self._plans(params):
            steps = ", ".join(plan.steps) or "nothing"
            lines.append(f"{plan.alias}: unapply {steps}")
        return "\n".join(lines) or "nothing recorded"

    def verify(self, params: dict[str, Any]) -> bool:
        return all(not p.targets and not p.problems for p in self._plans(params))

    def execute(self, params: dict[str, Any], ctx: StepContext) -> str:
        plans = self._plans(params)
        refusals = [msg for p in plans for msg in (*p.problems, *p.irreversible)]
        if refusals:
            raise ActuatorError(
                "migration revert refused: " + "; ".join(refusals), retryable=False
            )
        lines: list[str] = []
        for plan in plans:
            if not plan.targets:
                lines.append(f"{plan.alias}: already at the recorded state")
                continue
            backup = _backup(plan.alias, ctx)
            if backup:
                lines.append(backup)
            # a revert may rewrite a large table: no statement/read timeout
            with timeouts_lifted(plan.alias):
                executor = MigrationExecutor(connections[plan.alias])
                fresh = executor.migration_plan(plan.targets)
                executor.migrate(plan.targets, plan=fresh)
            lines.append(f"{plan.alias}: unapplied {', '.join(plan.steps)}")
        return "\n".join(lines)
