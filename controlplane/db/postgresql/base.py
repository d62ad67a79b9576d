"""Django's PostgreSQL backend with a client-side bound on every wait.

``connect_timeout`` bounds connecting and the server's ``statement_timeout``
bounds a query the server is running, but neither helps when the server
stops answering on an open connection (a frozen or partitioned server sends
no RST, and a stopped process's kernel still acknowledges the bytes, so TCP
keepalives see nothing wrong). Each wait of this backend's connections on
the socket is therefore bounded by ``OPTIONS["read_timeout"]`` (seconds; 0 or
absent = unbounded): past it the connection is dropped and the caller gets
an ``OperationalError``, which the API answers as 503. Set it above the
statement timeout so a slow but live query ends with the server's own error.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import psycopg
from django.db.backends.postgresql import base as postgresql


class BoundedWaitConnection(psycopg.Connection):
    """A psycopg connection that gives up waiting after ``wait_timeout`` s."""

    wait_timeout: float | None = None

    def wait(
        self,
        gen: Generator[Any, Any, Any],
        interval: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        bound = self.wait_timeout
        kwargs: dict[str, Any] = {} if interval is None else {"interval": interval}
        if timeout is not None or not bound:
            return super().wait(gen, timeout=timeout, **kwargs)
        try:
            return super().wait(gen, timeout=bound, **kwargs)
        except psycopg.errors._WaitTimeout:
            # The protocol state is unknown half-way through an exchange:
            # the connection cannot be reused, so drop it (no network wait).
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the database server did not answer within {bound:g} s"
            ) from None


class _Psycopg:
    """The psycopg module, except that ``connect`` makes bounded connections."""

    connect = staticmethod(BoundedWaitConnection.connect)

    def __getattr__(self, name: str) -> Any:
        return getattr(psycopg, name)


class DatabaseWrapper(postgresql.DatabaseWrapper):
    """PostgreSQL with a read timeout on the client side (``read_timeout``)."""

    Database = _Psycopg()

    @property
    def read_timeout(self) -> float | None:
        """Return the configured bound on one wait, None when unbounded."""
        value = self.settings_dict["OPTIONS"].get("read_timeout")
        return float(value) if value else None

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        params.pop("read_timeout", None)  # ours, not a libpq parameter
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        if isinstance(connection, BoundedWaitConnection):
            connection.wait_timeout = self.read_timeout
        return connection
