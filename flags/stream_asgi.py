"""The control plane's ASGI application: the ruleset stream, then Django.

``make_app(django_application)`` answers ``GET
/api/v1/environments/{key}/stream`` natively (flags.stream: a connected
client costs a task, not a worker) and hands every other request to
Django's ASGI handler. The process's one ``DatabaseWatcher`` starts with the
first stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections

from controlplane.apikeys.authentication import KeyRefused, server_key_for
from controlplane.conf import setting
from controlplane.exceptions import DomainError
from flags import stream
from flags.snapshot import get_ruleset
from flags.stream_watch import DatabaseWatcher

broker = stream.Broker()
watcher = DatabaseWatcher(broker)


def _authorize_sync(environment_key: str, raw: str | None) -> tuple[int, dict] | None:
    class _Request:  # server_key_for reads the header from META only
        META = {"HTTP_AUTHORIZATION": f"Bearer {raw}" if raw else ""}

    try:
        server_key_for(_Request(), environment_key=environment_key)
    except KeyRefused as exc:
        return exc.status, {"code": exc.code, "message": exc.message}
    except DomainError as exc:
        return exc.http_status, {"code": exc.code, "message": exc.message}
    finally:
        close_old_connections()
    return None


async def _authorize(environment_key: str, raw: str | None) -> tuple[int, dict] | None:
    return await asyncio.to_thread(_authorize_sync, environment_key, raw)


def _version_sync(environment_key: str) -> int | None:
    try:
        ruleset, _stale = get_ruleset(environment_key)
    except Exception:  # the watcher publishes it once the database answers
        return None
    return ruleset.version


async def _initial_version(environment_key: str) -> int | None:
    return await asyncio.to_thread(_version_sync, environment_key)


def make_app(django_application: Callable) -> Callable:
    """Return the ASGI app: the stream natively, everything else to Django."""

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _dispatch(django_application, scope, receive, send)

    return application


async def _dispatch(
    django_application: Callable, scope: dict, receive: Any, send: Any
) -> None:
    if scope["type"] == "http":
        environment_key = stream.stream_environment(scope["path"])
        if environment_key is not None:
            watcher.start()
            await stream.serve_stream(
                scope,
                receive,
                send,
                environment_key=environment_key,
                broker=broker,
                authorize=_authorize,
                heartbeat=float(setting("STREAM_HEARTBEAT_SECONDS")),
                initial_version=_initial_version,
            )
            return
    await django_application(scope, receive, send)
