"""The rollout operations' way to the canary app, which sits above flags.

``flags`` may not import ``canary`` (tests/test_layers.py), yet a rollout
start can be gated and scheduled like a flag change. The canary app hands
over its two functions when Django starts (``canary.apps.CanaryConfig.ready``
calls ``register``); without it, a rollout operation is refused as unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.exceptions import NotFound

_hooks: dict[str, Callable[..., Any]] = {}


def register(*, get: Callable[[Any], Any], start: Callable[..., Any]) -> None:
    """Install ``canary.services.rollout_get`` and ``rollout_start_checked``."""
    _hooks.update(get=get, start=start)


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
