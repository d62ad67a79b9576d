"""System checks of the rollback app: deploy backends are usable at start-up."""

from __future__ import annotations

from typing import Any

from django.core import checks


@checks.register("rollback")
def deploy_backends_check(app_configs: Any = None, **kwargs: Any) -> list:
    """Return an Error per unusable ROLLBACK_DEPLOY_BACKENDS entry.

    Among them: a command or webhook backend that cannot verify the running
    version and is not marked idempotent (a crash would run it twice).
    """
    from controlplane.conf import setting
    from rollback.actuators.deployment_revert import backend_problem

    backends = setting("ROLLBACK_DEPLOY_BACKENDS") or {}
    if not isinstance(backends, dict):
        return [
            checks.Error(
                "ROLLBACK_DEPLOY_BACKENDS must be a dict of backend name -> config",
                id="rollback.E001",
            )
        ]
    errors = []
    for name, config in backends.items():
        problem = (
            backend_problem(config)
            if isinstance(config, dict)
            else "its config must be a dict"
        )
        if problem:
            errors.append(
                checks.Error(
                    f"ROLLBACK_DEPLOY_BACKENDS[{name!r}]: {problem}",
                    hint="docs/rollback.md, section Backends",
                    id="rollback.E001",
                )
            )
    return errors
