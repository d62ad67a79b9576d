"""ASGI entry point: ``granian --interface asgi controlplane.asgi:application``.

The ruleset stream (``GET /api/v1/environments/{key}/stream``, see
flags.stream) is answered natively here, so an open stream costs a task,
not a worker; every other path goes to Django's ASGI handler.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
django_application = get_asgi_application()

# imported after Django is set up: these read models and settings
from controlplane.conf import setting  # noqa: E402
from flags import stream  # noqa: E402
from flags.stream_watch import DatabaseWatcher  # noqa: E402

broker = stream.Broker()
watcher = DatabaseWatcher(broker)


def _authorize_sync(environment_key: str, raw: str | None) -> tuple[int, dict] | None:
    from django.db import close_old_connections

    from controlplane.apikeys.authentication import KeyRefused, server_key_for
    from controlplane.exceptions import DomainError

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
    from flags.snapshot import get_ruleset

    try:
        ruleset, _stale = get_ruleset(environment_key)
    except Exception:  # the watcher publishes it once the database answers
        return None
    return ruleset.version


async def _initial_version(environment_key: str) -> int | None:
    return await asyncio.to_thread(_version_sync, environment_key)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Serve the stream natively; hand everything else to Django."""
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
