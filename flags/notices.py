"""Waiting for ruleset change notices, for every process that follows them.

``flags.propagation`` announces each committed change on ``CHANNEL``
(PostgreSQL NOTIFY, or Redis pub/sub when ``RULESET_REDIS_URL`` is set).
``listen(using, stop, check)`` calls ``check(noticed)`` once after
subscribing (a change may have committed before), then after every notice
(``noticed`` True) and at least every ``RULESET_POLL_INTERVAL`` seconds
(False), until ``stop`` is set; without PostgreSQL or Redis it polls. It
raises what the connection raises: the caller backs off and listens again.
The ruleset store (flags.snapshot) and the stream's watcher
(flags.stream_watch) both follow changes through it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from controlplane.conf import setting

WAKE = 0.5  # longest wait before a listener looks at its stop event

Check = Callable[[bool], None]


def listen(using: str, stop: threading.Event, check: Check) -> None:
    """Follow the notices of the configured channel (see the module)."""
    redis_url = setting("RULESET_REDIS_URL")
    if redis_url:
        _listen_redis(redis_url, stop, check)
    elif vendor(using) == "postgresql":
        _listen_postgres(using, stop, check)
    else:
        while not stop.wait(setting("RULESET_POLL_INTERVAL")):
            check(False)


def _follow(stop: threading.Event, check: Check, noticed_within) -> None:
    check(False)
    due = time.monotonic() + setting("RULESET_POLL_INTERVAL")
    while not stop.is_set():
        noticed = noticed_within(max(min(due - time.monotonic(), WAKE), 0.0))
        if noticed or time.monotonic() >= due:
            check(noticed)
            due = time.monotonic() + setting("RULESET_POLL_INTERVAL")


def _listen_postgres(using: str, stop: threading.Event, check: Check) -> None:
    from django.db import connections

    from flags.propagation import CHANNEL

    wrapper = connections[using]
    params = wrapper.get_connection_params()
    for name in (
        "cursor_factory",
        "context",
        "server_side_binding",
        "prepare_threshold",
    ):
        params.pop(name, None)
    params.setdefault("connect_timeout", 5)
    # the backend's connect: a frozen server cannot hang LISTEN either
    with wrapper.Database.connect(**params, autocommit=True) as conn:
        if hasattr(conn, "wait_timeout"):
            conn.wait_timeout = getattr(wrapper, "read_timeout", None)
        conn.execute(f"LISTEN {CHANNEL}")
        _follow(
            stop,
            check,
            lambda wait: any(True for _ in conn.notifies(timeout=wait, stop_after=1)),
        )


def _listen_redis(url: str, stop: threading.Event, check: Check) -> None:
    import redis

    from flags.propagation import CHANNEL

    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(CHANNEL)
        _follow(stop, check, lambda wait: pubsub.get_message(timeout=wait) is not None)
    finally:
        pubsub.close()
        client.close()


def vendor(using: str) -> str:
    from django.db import connections

    return connections[using].vendor


def close_connection(using: str) -> None:
    """Close ``using``'s connection of this thread, whatever state it is in."""
    from django.db import connections

    try:
        connections[using].close()
    except Exception:
        pass
