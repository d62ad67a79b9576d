"""``sql``: one scalar from a read-only query on a configured database alias.

Spec: ``{"database"?: alias (default "default"), "query": one SELECT}``.
Anything but a single SELECT (or WITH ... SELECT) is refused up front; the
query then runs in a read-only transaction with a statement timeout
(PostgreSQL: ``SET TRANSACTION READ ONLY`` + ``SET LOCAL statement_timeout``;
SQLite: ``PRAGMA query_only`` + a progress-handler deadline), so a write
hidden in a CTE or a function is refused by the database too. The
transaction (or savepoint) is always rolled back. NULL or no row is no data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import sqlparse
from django.db import DatabaseError, connections, transaction

from canary.providers.base import (
    MeasureContext,
    Measurement,
    ProviderError,
    reject_unknown,
    require_mapping,
    require_str,
)
from controlplane.exceptions import InvalidInput


def check_select_only(query: str) -> str:
    """Return ``query`` without a trailing semicolon if it is one SELECT."""
    statements = [s for s in sqlparse.split(query) if s.strip().rstrip(";").strip()]
    if len(statements) != 1:
        raise InvalidInput("must be exactly one statement", field="spec.query")
    statement = statements[0].strip().rstrip(";").strip()
    parsed = sqlparse.parse(statement)[0]
    first = parsed.token_first(skip_ws=True, skip_cm=True)
    keyword = first.normalized.upper() if first is not None else ""
    if keyword not in {"SELECT", "WITH"} or parsed.get_type() != "SELECT":
        raise InvalidInput(
            "only a read-only SELECT is allowed (no INSERT, UPDATE, DELETE, DDL, ...)",
            field="spec.query",
        )
    return statement


def _scalar(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"{type(value).__name__} is not a number")


@contextmanager
def _read_only(alias: str, timeout: float) -> Iterator[Any]:
    """Yield a cursor in a read-only transaction that is always rolled back.

    Inside an outer transaction this is a savepoint: rolling it back also
    undoes the ``SET LOCAL`` settings, so the caller's transaction is left as
    it was.
    """
    connection = connections[alias]
    timeout_ms = max(1, int(timeout * 1000))
    with transaction.atomic(using=alias):
        try:
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    cursor.execute("SET TRANSACTION READ ONLY")
                    cursor.execute("SET LOCAL transaction_read_only = on")
                    cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
                    yield cursor
                elif connection.vendor == "sqlite":
                    raw = connection.connection
                    deadline = time.monotonic() + timeout
                    raw.set_progress_handler(
                        lambda: int(time.monotonic() > deadline), 1000
                    )
                    cursor.execute("PRAGMA query_only = ON")
                    try:
                        yield cursor
                    finally:
                        cursor.execute("PRAGMA query_only = OFF")
                        raw.set_progress_handler(None, 0)
                else:
                    raise ProviderError(
                        f"the sql provider does not support {connection.vendor}"
                    )
        finally:
            transaction.set_rollback(True, using=alias)


class SqlProvider:
    name = "sql"

    def validate_spec(self, spec: dict) -> dict:
        """Return ``{"database", "query"}`` or raise ``InvalidInput``."""
        spec = require_mapping(spec)
        reject_unknown(spec, {"database", "query"})
        database = require_str(spec, "database", default="default")
        if database not in connections.settings:
            raise InvalidInput(
                f"unknown database alias {database!r} (configured:"
                f" {', '.join(sorted(connections.settings))})",
                field="spec.database",
            )
        return {
            "database": database,
            "query": check_select_only(require_str(spec, "query")),
        }

    def measure(
        self, spec: dict, ctx: MeasureContext, *, timeout: float
    ) -> Measurement:
        """Run the query once and return its first column of its first row."""
        spec = self.validate_spec(spec)
        detail: dict = {
            "database": spec["database"],
            "query": spec["query"],
            "timeout_s": timeout,
        }
        started = time.perf_counter()
        try:
            with _read_only(spec["database"], timeout) as cursor:
                cursor.execute(spec["query"])
                columns = len(cursor.description or ())
                rows = cursor.fetchmany(2)
        except ProviderError:
            raise
        except DatabaseError as error:
            message = (
                str(error).strip().splitlines()[0]
                if str(error).strip()
                else type(error).__name__
            )
            if (
                "interrupted" in message.lower()
                or "statement timeout" in message.lower()
            ):
                message = f"query cancelled after the {timeout:g}s statement timeout ({message})"
            detail["error"] = message
            raise ProviderError(f"SQL error: {message}", detail=detail) from error
        detail["latency_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        if columns != 1:
            raise ProviderError(
                f"the query must return one column, it returned {columns}",
                detail=detail,
            )
        if not rows:
            detail["rows"] = 0
            return Measurement(value=None, samples=0, detail=detail)
        detail["rows"] = len(rows) if len(rows) < 2 else "2 or more (first used)"
        raw = rows[0][0]
        detail["raw"] = (
            raw if raw is None or isinstance(raw, (int, float, str, bool)) else str(raw)
        )
        if raw is None:
            return Measurement(value=None, samples=0, detail=detail)
        try:
            value = _scalar(raw)
        except ValueError as error:
            raise ProviderError(
                f"the query result is not a number: {error}", detail=detail
            ) from None
        if math.isnan(value):
            return Measurement(value=None, samples=0, detail=detail)
        return Measurement(value=value, samples=1, detail=detail)
