"""Tell serving processes that a ruleset changed.

Called by the services inside the change's transaction. On PostgreSQL a
``pg_notify`` is transactional: listeners hear it only when the change
commits. With ``RULESET_REDIS_URL`` set, the notice is also published on
Redis after commit. Everywhere, processes also poll
``Environment.ruleset_version`` (see flags.snapshot), so a lost notification
only costs the poll interval.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import connection, transaction

from controlplane.conf import setting

CHANNEL = "controlplane_ruleset"

log = logging.getLogger(__name__)


def announce(*, environment_ids: Iterable[int]) -> None:
    """Queue a change notice for these environments, delivered at commit."""
    payload = ",".join(str(pk) for pk in environment_ids)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])
    redis_url = setting("RULESET_REDIS_URL")
    if redis_url:
        transaction.on_commit(lambda: _publish(redis_url, payload))


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
