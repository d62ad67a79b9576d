"""Tell serving processes that a ruleset changed.

Called by the services inside the change's transaction. On PostgreSQL a
``pg_notify`` is transactional: listeners hear it only when the change
commits. Everywhere, processes also poll ``Environment.ruleset_version``, so
a lost notification only costs the poll interval.
"""
from __future__ import annotations

from typing import Iterable

from django.db import connection

CHANNEL = "controlplane_ruleset"


def announce(*, environment_ids: Iterable[int]) -> None:
    """Queue a change notice for these environments, delivered at commit."""
    if connection.vendor != "postgresql":
        return
    payload = ",".join(str(pk) for pk in environment_ids)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])
