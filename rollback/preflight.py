"""Tell ahead of time which rollback levels are possible, and at what cost."""

from __future__ import annotations

from typing import Any

from controlplane.conf import setting
from rollback.actuators.deployment_revert import BackendNotConfigured, backend_resolve
from rollback.actuators.migration_revert import backward_plan
from rollback.models import Deployment, DeploymentStatus


def _report() -> dict[str, Any]:
    return {"possible": True, "reasons": [], "apps": [], "warnings": []}


def _refuse(report: dict[str, Any], reason: str) -> None:
    report["possible"] = False
    report["reasons"].append(reason)


def _level_1(
    flag: Any, environment: Any, deployment: Deployment | None
) -> dict[str, Any]:
    from flags.models import Environment, Flag, FlagState

    report = _report()
    if flag is None:
        _refuse(report, "no flag given: level 1 has nothing to toggle")
        return report
    flag_key = flag.key if isinstance(flag, Flag) else str(flag)
    env = (
        environment
        if environment is not None
        else (deployment.environment if deployment else None)
    )
    env_key = env.key if isinstance(env, Environment) else (str(env) if env else "")
    if not env_key:
        _refuse(report, "no environment given for the flag")
    elif not FlagState.objects.filter(
        flag__key=flag_key, environment__key=env_key
    ).exists():
        _refuse(report, f"flag {flag_key!r} has no state in environment {env_key!r}")
    return report


def _level_2(deployment: Deployment | None, backend: str | None) -> dict[str, Any]:
    report = _report()
    if deployment is None:
        _refuse(report, "no deployment given")
        return report
    if deployment.previous_id is None:
        _refuse(
            report,
            f"deployment {deployment.pk} has no previous deployment to go back to",
        )
    if deployment.status == DeploymentStatus.REVERTED:
        # Escalation (a level-3 run after a level-2 one) must stay possible.
        report["warnings"].append(
            f"deployment {deployment.pk} is already reverted: the step is skipped"
        )
    elif deployment.status != DeploymentStatus.LIVE:
        _refuse(report, f"deployment {deployment.pk} is {deployment.status}, not live")
    try:
        name, config = backend_resolve(service=deployment.service, name=backend)
        report["backend"] = {"name": name, "type": config["type"]}
        if config["type"] in ("command", "webhook") and not (
            config.get("verify_argv") or config.get("status_url")
        ):
            # Only reachable when marked idempotent (else resolve refuses).
            report["warnings"].append(
                f"backend {name!r} cannot verify the running version (no verify_argv/status_url):"
                " after a crash the revert is re-run (marked idempotent)"
            )
    except BackendNotConfigured as exc:
        _refuse(report, str(exc))
    return report


def _level_3(deployment: Deployment | None) -> dict[str, Any]:
    report = _report()
    if deployment is None:
        _refuse(report, "no deployment given")
        return report
    from django.db import connections

    for alias, recorded in sorted((deployment.migration_state or {}).items()):
        if alias not in connections.settings:
            _refuse(report, f"database alias {alias!r} is not configured")
            continue
        plan = backward_plan(alias=alias, recorded=recorded)
        for problem in plan.problems:
            _refuse(report, f"{alias}: {problem}")
        for irreversible in plan.irreversible:
            _refuse(report, f"{alias}: {irreversible}")
        report["apps"].extend(app for app in plan.apps if app not in report["apps"])
        report["warnings"].extend(f"{alias}: {w}" for w in plan.warnings)
        report.setdefault("steps", []).extend(f"{alias}: {s}" for s in plan.steps)
    if not deployment.migration_state:
        report["warnings"].append("no migration state was recorded: nothing to revert")
    if report["apps"] and not setting("ROLLBACK_MIGRATION_BACKUP_COMMAND"):
        report["warnings"].append(
            "no ROLLBACK_MIGRATION_BACKUP_COMMAND: no backup is taken before reverting"
        )
    return report


def rollback_preflight(
    *,
    deployment: Deployment | None = None,
    levels: tuple[int, ...] = (1, 2, 3),
    flag: Any = None,
    environment: Any = None,
    backend: str | None = None,
) -> dict[int, dict[str, Any]]:
    """Return, per level, {possible, reasons, apps, warnings} without changing anything.

    Level 1 needs a flag with a state in the environment; level 2 a live
    deployment with a previous one and a configured backend; level 3 a
    backward migration plan whose every operation is reversible. ``apps``
    lists each app the migration revert would touch (dependencies included).
    """
    builders = {
        1: lambda: _level_1(flag, environment, deployment),
        2: lambda: _level_2(deployment, backend),
        3: lambda: _level_3(deployment),
    }
    return {level: builders[level]() for level in levels if level in builders}
