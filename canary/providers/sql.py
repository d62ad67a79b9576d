"""``sql``: one number from a read-only query on a database alias for checks.

Spec: ``{"database"?: alias, "query": one SELECT, "column"?: name}``.

- The alias must be listed in ``CANARY_SQL_DATABASES`` (default: none, so
  SQL checks are refused until an operator configures one; the control
  plane's own ``default`` alias only when listed on purpose). It should log
  in as a read-only role that may read the app's tables and nothing else
  (docs/canary.md, "SQL checks").
- The query is vetted by ``canary.providers.sql_query`` (sqlglot): one
  SELECT, no write, lock or SELECT INTO, only allow-listed functions.
- It runs in a READ ONLY transaction that is always rolled back, with
  ``statement_timeout``, ``lock_timeout`` and
  ``idle_in_transaction_session_timeout`` capped by settings (a check's own
  timeout can only be shorter); SQLite: ``PRAGMA query_only``, a
  progress-handler deadline and a short busy timeout.
- The result is one row: one numeric column, or the numeric column named
  by ``column``. No row or NULL is no data. Anything else is an error whose
  text names columns and types, never values.
- A database error is reported by its SQLSTATE and condition name only
  (``database error 22P02 invalid_text_representation``): its message can
  echo values (``invalid input syntax for type integer: "<a session
  key>"``), so it never reaches a check run, an audit event, a log line or
  an API answer.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from django.db import connections, transaction

from canary.providers.base import (
    MeasureContext,
    Measurement,
    ProviderError,
    reject_unknown,
    require_mapping,
    require_str,
)
from canary.providers.sql_query import dialect_for, query_vet
from controlplane.api.input import text_problem
from controlplane.conf import setting
from controlplane.exceptions import InvalidInput

CONFIGURE_HINT = (
    "add a DATABASES alias that logs in as a read-only role and list it in "
    "CONTROLPLANE['CANARY_SQL_DATABASES'] (docs/canary.md, 'SQL checks')"
)
_TIMEOUT_STATES = {"57014"}  # query_canceled: statement_timeout fired
_LOCK_STATES = {"55P03", "SQLITE_BUSY"}  # lock_timeout / busy timeout fired


def sql_databases() -> list[str]:
    """Return the aliases SQL checks may query (``CANARY_SQL_DATABASES``)."""
    return [str(alias) for alias in setting("CANARY_SQL_DATABASES") or []]


def _database(spec: dict) -> str:
    aliases = sql_databases()
    if not aliases:
        raise InvalidInput(
            f"SQL checks are off: no database alias is configured for them; "
            f"{CONFIGURE_HINT}",
            field="spec.database",
        )
    if spec.get("database") is None and len(aliases) > 1:
        raise InvalidInput(
            f"name the database alias to query (one of {', '.join(aliases)})",
            field="spec.database",
        )
    database = require_str(spec, "database", default=aliases[0])
    if database not in aliases:
        raise InvalidInput(
            f"database alias {database!r} is not configured for SQL checks "
            f"(allowed: {', '.join(aliases)}); {CONFIGURE_HINT}",
            field="spec.database",
        )
    if database not in connections.settings:
        raise InvalidInput(
            f"database alias {database!r} is listed in CANARY_SQL_DATABASES "
            "but missing from DATABASES",
            field="spec.database",
        )
    return database


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def error_code(error: BaseException) -> str:
    """Return the SQLSTATE (PostgreSQL) or error name (SQLite) of ``error``,
    following its causes; "" when it has none (e.g. a refused connection)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for attribute in ("sqlstate", "pgcode", "sqlite_errorname"):
            code = getattr(current, attribute, None)
            if isinstance(code, str) and code:
                return code
        current = current.__cause__ or current.__context__
    return ""


def database_error_text(error: BaseException) -> str:
    """Return ``database error <SQLSTATE> <condition>`` for ``error``.

    Never the database's message: it can echo the values the query read.
    """
    code = error_code(error)
    if not code:
        return f"database error ({type(error).__name__}, no SQLSTATE)"
    if code.startswith("SQLITE_"):
        return f"database error {code}"
    return f"database error {code} {_condition_name(code)}".strip()


def _condition_name(sqlstate: str) -> str:
    try:
        from psycopg import errors
    except ImportError:  # psycopg absent: the code alone
        return ""
    try:
        return _snake(errors.lookup(sqlstate).__name__)
    except KeyError:
        return ""


def timeouts(check_timeout: float) -> dict[str, float]:
    """Return the effective statement, lock and idle timeouts (seconds)."""
    statement = min(
        float(check_timeout), float(setting("CANARY_SQL_STATEMENT_TIMEOUT"))
    )
    statement = max(statement, 0.001)
    return {
        "statement": statement,
        "lock": max(0.001, min(float(setting("CANARY_SQL_LOCK_TIMEOUT")), statement)),
        "idle_in_transaction": max(
            0.001, float(setting("CANARY_SQL_IDLE_IN_TRANSACTION_TIMEOUT"))
        ),
    }


def _ms(seconds: float) -> str:
    return str(max(1, int(seconds * 1000)))


@contextmanager
def _read_only(alias: str, limits: dict[str, float]) -> Iterator[Any]:
    """Yield a cursor in a read-only transaction that is always rolled back.

    Inside an outer transaction this is a savepoint: rolling it back also
    undoes the ``SET LOCAL`` settings, so the caller's transaction is left as
    it was.
    """
    connection = connections[alias]
    with transaction.atomic(using=alias):
        try:
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    cursor.execute("SET TRANSACTION READ ONLY")
                    # set_config(..., true) is SET LOCAL: gone at rollback.
                    cursor.execute(
                        "SELECT set_config('transaction_read_only', 'on', true),"
                        " set_config('statement_timeout', %s, true),"
                        " set_config('lock_timeout', %s, true),"
                        " set_config('idle_in_transaction_session_timeout', %s,"
                        " true)",
                        [
                            _ms(limits["statement"]),
                            _ms(limits["lock"]),
                            _ms(limits["idle_in_transaction"]),
                        ],
                    )
                    yield cursor
                elif connection.vendor == "sqlite":
                    raw = connection.connection
                    deadline = time.monotonic() + limits["statement"]
                    cursor.execute("PRAGMA busy_timeout")
                    busy = int(cursor.fetchone()[0])
                    raw.set_progress_handler(
                        lambda: int(time.monotonic() > deadline), 1000
                    )
                    cursor.execute(f"PRAGMA busy_timeout = {_ms(limits['lock'])}")
                    cursor.execute("PRAGMA query_only = ON")
                    try:
                        yield cursor
                    finally:
                        raw.set_progress_handler(None, 0)
                        cursor.execute("PRAGMA query_only = OFF")
                        cursor.execute(f"PRAGMA busy_timeout = {busy}")
                else:
                    raise ProviderError(
                        f"the sql provider does not support {connection.vendor}"
                    )
        finally:
            transaction.set_rollback(True, using=alias)


def _is_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float, Decimal))


def _type_name(value: Any) -> str:
    return "text" if isinstance(value, str) else type(value).__name__


def _pick_column(columns: list[str], wanted: str | None, detail: dict) -> int:
    if wanted is None:
        if len(columns) != 1:
            raise ProviderError(
                f"the query returned {len(columns)} columns; return one, or name "
                "the one to use in spec.column",
                detail=detail,
            )
        return 0
    if wanted in columns:
        return columns.index(wanted)
    folded = [i for i, name in enumerate(columns) if name.lower() == wanted.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ProviderError(
        f"spec.column {wanted!r} is not one of the query's columns "
        f"({', '.join(columns) or 'none'})",
        detail=detail,
    )


class SqlProvider:
    name = "sql"

    def validate_spec(self, spec: dict) -> dict:
        """Return ``{"database", "query"[, "column"]}`` or raise ``InvalidInput``.

        The alias must be configured for SQL checks and the query pass
        ``query_vet`` in the alias's SQL dialect.
        """
        spec = require_mapping(spec)
        reject_unknown(spec, {"database", "query", "column", "comparison_column"})
        database = _database(spec)
        text = require_str(spec, "query")
        # NUL cannot be stored or sent to PostgreSQL; a lone surrogate
        # cannot be encoded: both are refused as the other inputs are.
        problem = text_problem(text, allow_nul=False)
        if problem:
            raise InvalidInput(problem, field="spec.query")
        query = query_vet(
            text,
            dialect=dialect_for(connections[database].vendor),
            allowed_functions=setting("CANARY_SQL_ALLOWED_FUNCTIONS"),
        )
        clean = {"database": database, "query": query}
        if spec.get("column") is not None:
            clean["column"] = require_str(spec, "column")
        if spec.get("comparison_column") is not None:
            # The row's other number to compare with (e.g. the control's
            # value), for relative mode: worse / not worse against it.
            clean["comparison_column"] = require_str(spec, "comparison_column")
        return clean

    def measure(
        self, spec: dict, ctx: MeasureContext, *, timeout: float
    ) -> Measurement:
        """Run the query once and return its one number.

        The spec is vetted again first: settings may have changed since the
        check was saved. Raise ``InvalidInput`` for a spec that no longer
        passes and ``ProviderError`` for anything that went wrong running
        it; neither carries a value the query read or the database's own
        message.
        """
        spec = self.validate_spec(spec)
        limits = timeouts(timeout)
        detail: dict = {
            "database": spec["database"],
            "query": spec["query"],
            "timeout_s": limits["statement"],
            "lock_timeout_s": limits["lock"],
        }
        started = time.perf_counter()
        try:
            with _read_only(spec["database"], limits) as cursor:
                cursor.execute(spec["query"])
                columns = [str(column[0]) for column in cursor.description or ()]
                rows = cursor.fetchmany(2)
        except ProviderError:
            raise
        except Exception as error:  # noqa: BLE001 - every failure is sanitised
            raise self._error(error, limits, detail) from None
        detail["latency_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        detail["columns"] = columns
        index = _pick_column(columns, spec.get("column"), detail)
        detail["column"] = columns[index]
        detail["rows"] = len(rows)
        if len(rows) > 1:
            raise ProviderError(
                "the query returned more than one row; make it return one "
                "(an aggregate such as count, avg or max)",
                detail=detail,
            )
        if not rows:
            return Measurement(value=None, samples=0, detail=detail)
        row = rows[0]
        for name, cell in zip(columns, row, strict=False):
            if cell is not None and not _is_number(cell):
                raise ProviderError(
                    f"column {name!r} is {_type_name(cell)}, not a number: a sql "
                    "check's row must hold numbers only",
                    detail=detail,
                )
        raw = row[index]
        if raw is None:
            return Measurement(value=None, samples=0, detail=detail)
        if spec.get("comparison_column") is not None:
            if spec["comparison_column"] not in columns:
                raise ProviderError(
                    f"the query has no column {spec['comparison_column']!r} "
                    f"(spec.comparison_column); it has {', '.join(columns)}",
                    detail=detail,
                )
            other = row[columns.index(spec["comparison_column"])]
            if other is not None and not math.isnan(float(other)):
                detail["comparison_value"] = float(other)
        value = float(raw)
        detail["value"] = value
        if math.isnan(value):
            return Measurement(value=None, samples=0, detail=detail)
        return Measurement(value=value, samples=1, detail=detail)

    @staticmethod
    def _error(
        error: BaseException, limits: dict[str, float], detail: dict
    ) -> ProviderError:
        text = database_error_text(error)
        state = error_code(error)
        if state in _TIMEOUT_STATES or state == "SQLITE_INTERRUPT":
            text = (
                f"query cancelled at the {limits['statement']:g}s statement "
                f"timeout ({text})"
            )
        elif state in _LOCK_STATES:
            text = f"query waited past the {limits['lock']:g}s lock timeout ({text})"
        detail["error"] = text
        return ProviderError(f"SQL error: {text}", detail=detail)
