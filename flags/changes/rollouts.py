"""The rollout operations' way to the canary app, which sits above flags.

``flags`` may not import ``canary`` (tests/test_layers.py), yet a rollout
start (and a release start) can be gated and scheduled like a flag change.
The canary app hands over its functions when Django starts
(``canary.apps.CanaryConfig.ready`` calls ``register``); without it, a
rollout or release operation is refused as unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.exceptions import NotFound

_hooks: dict[str, Callable[..., Any]] = {}


def register(
    *,
    get: Callable[[Any], Any],
    start: Callable[..., Any],
    release_get: Callable[[Any], Any] | None = None,
    release_start: Callable[..., Any] | None = None,
) -> None:
    """Install ``canary.services.rollout_get`` and ``rollout_start_checked``
    (and, for gated release starts, ``release_get`` and ``release_start``)."""
    _hooks.update(get=get, start=start)
    if release_get is not None and release_start is not None:
        _hooks.update(release_get=release_get, release_start=release_start)


def _hook(name: str) -> Callable[..., Any]:
    try:
        return _hooks[name]
    except KeyError:
        raise NotFound("rollouts are not available (the canary app is not installed)")


def rollout_get(rollout_id: Any) -> Any:
    """Return the rollout ``rollout_id`` (NotFound, InvalidInput as canary's)."""
    return _hook("get")(rollout_id)


def rollout_start_checked(**arguments: Any) -> Any:
    """Run canary's preflight and start; return what it returns."""
    return _hook("start")(**arguments)


def release_get(release_id: Any) -> Any:
    """Return the release ``release_id`` (NotFound, InvalidInput as canary's)."""
    return _hook("release_get")(release_id)


def release_start(**arguments: Any) -> Any:
    """Run every member's preflight and start the release; return it."""
    return _hook("release_start")(**arguments)


def target_get(operation_name: str, arguments: dict) -> Any:
    """Return the rollout or release a canary operation acts on."""
    if operation_name == "release.start":
        return release_get(arguments.get("release"))
    return rollout_get(arguments.get("rollout"))
