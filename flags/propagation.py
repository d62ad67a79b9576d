"""Tell serving processes that a ruleset changed.

Called by the services inside the change's transaction. The notice goes
out after the change commits: on PostgreSQL a ``pg_notify`` in autocommit,
and with ``RULESET_REDIS_URL`` set, a publish on Redis. A rolled-back change
announces nothing. Everywhere, processes also poll
``Environment.ruleset_version`` (see flags.snapshot), so a lost notification
(a process that dies right after its commit) only costs the poll interval.

For the same reason a writer sends at most one NOTIFY per set of
environments every ``RULESET_NOTIFY_MIN_GAP`` seconds (0.1) when the poll
interval is at most a second: in a burst of changes, the first is notified
at once and the others reach the processes by their next poll (0.25 s),
or by the next notice. A notice after commit costs a statement and a
transaction of its own, about a tenth of an audited change's CPU.

Why not NOTIFY inside the transaction: PostgreSQL then holds one lock, for
the whole cluster, from the queueing of the notice through the commit's WAL
flush, so every notifying commit waits for the one before it. Measured with
8 writers on this project's 2-core machine: about 400 commits/s at most
with NOTIFY inside, about 1,400 with it after the commit (docs/performance.md,
"Audited write throughput").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from django.db import DatabaseError, connection, transaction

from controlplane.conf import setting

CHANNEL = "controlplane_ruleset"

log = logging.getLogger(__name__)


def announce(*, environment_ids: Iterable[int]) -> None:
    """Queue a change notice for these environments, delivered at commit."""
    payload = ",".join(str(pk) for pk in environment_ids)
    if connection.vendor == "postgresql":
        transaction.on_commit(lambda: _notify_unless_recent(payload))
    redis_url = setting("RULESET_REDIS_URL")
    if redis_url:
        transaction.on_commit(lambda: _publish(redis_url, payload))


_notified_at: dict[str, float] = {}  # payload -> monotonic time of its NOTIFY


def _notify_unless_recent(payload: str) -> None:
    gap = setting("RULESET_NOTIFY_MIN_GAP")
    now = time.monotonic()
    if gap > 0 and setting("RULESET_POLL_INTERVAL") <= 1.0:
        if now - _notified_at.get(payload, -gap) < gap:
            return  # the receivers' poll brings it within the interval
        if len(_notified_at) > 1000:
            _notified_at.clear()
    _notified_at[payload] = now
    _notify(payload)


def _notify(payload: str) -> None:
    # after commit, in autocommit: a failure here only delays processes by
    # one poll interval, and must not turn a committed change into an error
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])
    except DatabaseError as exc:
        log.warning("ruleset notice not sent by NOTIFY: %s", exc)


def _publish(url: str, payload: str) -> None:
    # after commit: a failure here only delays processes by one poll interval
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.publish(CHANNEL, payload)
        finally:
            client.close()
    except Exception as exc:
        log.warning("ruleset notice not published on Redis: %s", exc)
