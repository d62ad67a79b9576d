"""Appliers of the operations: each calls the existing service, nothing more."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from flags import selectors, services
from flags.changes.operations.checks import STATE_FIELDS


def _objects(arguments: dict) -> dict[str, Any]:
    return {
        "flag": selectors.flag_get(arguments["flag"]),
        "environment": selectors.environment_get(arguments["environment"]),
    }


def apply_update(actor: Any, arguments: dict, version: int | None) -> Any:
    fields = {k: arguments[k] for k in STATE_FIELDS if k in arguments}
    return services.flag_state_update(
        actor=actor, expected_version=version, **_objects(arguments), **fields
    )


def apply_enabled(value: bool) -> Callable[..., Any]:
    def run(actor: Any, arguments: dict, version: int | None) -> Any:
        return services.flag_state_set_enabled(
            actor=actor,
            enabled=value,
            expected_version=version,
            **_objects(arguments),
        )

    return run


def apply_set_percentage(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.flag_state_set_percentage(
        actor=actor,
        percentage=arguments["percentage"],
        treatment=arguments.get("treatment"),
        control=arguments.get("control"),
        expected_version=version,
        **_objects(arguments),
    )


def apply_serve(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.flag_state_serve(
        actor=actor,
        variation=arguments["variation"],
        expected_version=version,
        **_objects(arguments),
    )


def apply_kill(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.flag_state_kill(
        actor=actor, reason=arguments.get("reason", ""), **_objects(arguments)
    )


def apply_restore(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.flag_state_restore(
        actor=actor, reason=arguments.get("reason", ""), **_objects(arguments)
    )


def apply_override_set(actor: Any, arguments: dict, version: int | None) -> Any:
    expires = arguments.get("expires_at")
    return services.override_set(
        actor=actor,
        merchant=selectors.merchant_get(arguments["merchant"]),
        variation=arguments["variation"],
        note=arguments.get("note", ""),
        expires_at=dt.datetime.fromisoformat(expires) if expires else None,
        **_objects(arguments),
    )


def apply_override_remove(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.override_remove(
        actor=actor,
        merchant=selectors.merchant_get(arguments["merchant"]),
        reason=arguments.get("reason", ""),
        **_objects(arguments),
    )


def apply_rollout_start(actor: Any, arguments: dict, version: int | None) -> Any:
    from flags.changes.rollouts import rollout_start_checked

    rollout, _ = rollout_start_checked(
        rollout_id=arguments["rollout"], actor=actor, reason=arguments.get("reason", "")
    )
    return rollout


def apply_release_start(actor: Any, arguments: dict, version: int | None) -> Any:
    from flags.changes.rollouts import release_start

    return release_start(
        release_id=arguments["release"], actor=actor, reason=arguments.get("reason", "")
    )
