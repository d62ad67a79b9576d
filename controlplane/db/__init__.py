"""Database helpers shared by every app: bounded waits and their exceptions.

Every process connects to PostgreSQL with ``connect_timeout``, a server-side
``statement_timeout`` and a client-side read timeout (settings.py, backend in
``controlplane.db.postgresql``), so a hung or unreachable database turns into
an error instead of a blocked worker. The few operations that legitimately
run long statements (``manage.py migrate``, the migration revert of a
rollback) lift both for their own session with ``timeouts_lifted``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import InterfaceError, OperationalError, connections
from django.db.backends.signals import connection_created

# What a request sees when the database is unreachable, hung or refusing:
# DRF and the admin answer 503 for these instead of 500.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

# When the serving side (key cache, ruleset store) last failed to read the
# database: a request that comes right after skips it rather than waiting
# for another connect timeout.
_serving_failed_at = 0.0
_SERVING_RETRY_AFTER = 1.0  # the background threads keep retrying meanwhile


def serving_read_failed() -> None:
    """Note that a serving read of the database just failed."""
    global _serving_failed_at
    _serving_failed_at = time.monotonic()


def serving_read_succeeded() -> None:
    """Note that a serving read of the database just succeeded."""
    global _serving_failed_at
    _serving_failed_at = 0.0


def serving_failed_recently() -> bool:
    """Return True when a serving read failed in the last second."""
    return time.monotonic() - _serving_failed_at < _SERVING_RETRY_AFTER


def _lift(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
    if connection.connection is not None:
        connection.connection.wait_timeout = None


@contextmanager
def timeouts_lifted(using: str = "default") -> Iterator[None]:
    """Run the block with no statement or read timeout on ``using``.

    Session-level, so it also covers the block's own transactions; the
    session defaults come back on exit (``RESET`` returns to the value the
    connection started with). A connection opened inside the block is lifted
    too. No-op on other vendors.
    """
    wrapper = connections[using]
    if wrapper.vendor != "postgresql":
        yield
        return

    def on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
        if connection is wrapper:
            _lift(connection)

    connection_created.connect(on_connect, weak=False)
    try:
        wrapper.ensure_connection()
        _lift(wrapper)
        yield
    finally:
        connection_created.disconnect(on_connect)
        _restore(wrapper)


def _restore(wrapper: Any) -> None:
    if wrapper.connection is None:
        return
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("RESET statement_timeout")
        wrapper.connection.wait_timeout = getattr(wrapper, "read_timeout", None)
    except Exception:
        # never hand a session without its timeouts to the next user
        wrapper.close()
