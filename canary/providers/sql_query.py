"""Vet a sql check's query with a real SQL parser before it is kept or run.

The query is parsed with sqlglot in the dialect of the database it will
run on. It must be exactly one statement, a SELECT (``WITH ... SELECT`` and
set operations of SELECTs included) with no data-modifying CTE, no locking
clause (FOR UPDATE/SHARE), no SELECT INTO, and every function it calls on
the allow-list (``CANARY_SQL_ALLOWED_FUNCTIONS``). This refuses what a
read-only transaction would let through: ``pg_sleep``, advisory locks
(session-level, they outlive the rollback), ``pg_terminate_backend``,
``set_config``, ``dblink``, large objects, file reads. The query that runs
is the text as written, so what was vetted is what the database parses.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from controlplane.exceptions import InvalidInput

FIELD = "spec.query"
# A health-check query is a few lines; the limit bounds the parser's work.
MAX_QUERY_CHARS = 10_000
DIALECTS: dict[str, str] = {"postgresql": "postgres", "sqlite": "sqlite"}
_DIALECT_NAMES = {"postgres": "PostgreSQL", "sqlite": "SQLite"}

# Nodes that write, change the session or lock rows, wherever they appear
# (a DELETE inside a CTE is as bad as one on its own).
_REFUSED: tuple[tuple[type[exp.Expression], str], ...] = tuple(
    (node_type, what)
    for name, what in (
        ("DML", "a data-modifying statement (INSERT, UPDATE, DELETE, MERGE)"),
        ("DDL", "a schema change (CREATE, DROP, ALTER, ...)"),
        ("Command", "a command that is not a SELECT"),
        ("Into", "SELECT INTO"),
        ("Lock", "a locking clause (FOR UPDATE / FOR SHARE)"),
        ("Set", "SET"),
        ("Pragma", "PRAGMA"),
        ("Transaction", "a transaction statement"),
        ("Commit", "a transaction statement"),
        ("Rollback", "a transaction statement"),
        ("Copy", "COPY"),
    )
    if isinstance(node_type := getattr(exp, name, None), type)
)


def dialect_for(vendor: str) -> str:
    """Return the sqlglot dialect of a Django database ``vendor``."""
    try:
        return DIALECTS[vendor]
    except KeyError:
        raise InvalidInput(
            f"the sql provider does not support {vendor} databases "
            f"(supported: {', '.join(sorted(DIALECTS))})",
            field="spec.database",
        ) from None


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(message, field=FIELD)


def _parse(query: str, dialect: str) -> list[exp.Expression]:
    name = _DIALECT_NAMES.get(dialect, dialect)
    try:
        statements = sqlglot.parse(query, dialect=dialect)
    except ParseError as error:
        where = ""
        first = (error.errors or [{}])[0]
        if first.get("line") is not None:
            where = f" (line {first['line']}, column {first.get('col')})"
        description = str(first.get("description") or "").strip()
        raise _refuse(
            f"cannot be parsed as {name} SQL{where}"
            + (f": {description}" if description else "")
        ) from None
    except TokenError:
        raise _refuse(f"cannot be parsed as {name} SQL (bad token)") from None
    except RecursionError:  # the parser descends once per nesting level
        raise _refuse("is nested too deeply to be vetted") from None
    return [statement for statement in statements if statement is not None]


def called_name(node: exp.Func, query: str) -> str | None:
    """Return the lower-case name ``node`` is called by, or None for syntax.

    The name as written wins (sqlglot maps ``ifnull`` to Coalesce and
    ``now`` to CurrentTimestamp); keyword forms (``CAST``, ``::``,
    ``EXTRACT(... FROM ...)``, ``CURRENT_TIMESTAMP``) have no written call
    and go by their SQL name; CASE, AND/OR and operators such as ``~`` are
    syntax, not calls.
    """
    if isinstance(node, (exp.Connector, exp.Case, exp.SubqueryPredicate)):
        return None
    if isinstance(node, exp.If) and isinstance(node.parent, exp.Case):
        return None
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    start, end = node.meta.get("start"), node.meta.get("end")
    if isinstance(start, int) and isinstance(end, int) and 0 <= start <= end:
        return query[start : end + 1].strip('"`[] ').lower()
    if isinstance(node, (exp.Binary, exp.Unary, exp.Predicate)):
        return None  # written as an operator
    if isinstance(node, exp.Cast):
        return "cast"
    return node.sql_name().lower()


def query_vet(query: str, *, dialect: str, allowed_functions: Iterable[str]) -> str:
    """Return ``query`` (stripped) if it may run as a sql check.

    Raise ``InvalidInput`` on ``spec.query`` for a query the parser cannot
    parse (or too long or too deeply nested to vet), more than one statement, anything but a SELECT, a write, lock or
    SELECT INTO anywhere in it, a schema-qualified function call, or a
    function outside ``allowed_functions``.
    """
    text = query.strip()
    if len(text) > MAX_QUERY_CHARS:
        raise _refuse(f"must be at most {MAX_QUERY_CHARS} characters")
    statements = _parse(text, dialect)
    if len(statements) != 1:
        raise _refuse(f"must be exactly one statement, not {len(statements)}")
    (statement,) = statements
    if not isinstance(statement, (exp.Select, exp.SetOperation)):
        raise _refuse(
            "only a read-only SELECT (or WITH ... SELECT) is allowed, "
            f"not {statement.key.upper()}"
        )
    allowed = {name.strip().lower() for name in allowed_functions}
    refused: list[str] = []
    for node in statement.walk():
        for node_type, what in _REFUSED:
            if isinstance(node, node_type):
                raise _refuse(f"{what} is not allowed in a sql check")
        if not isinstance(node, exp.Func):
            continue
        name = called_name(node, text)
        if name is None:
            continue
        if isinstance(node.parent, exp.Dot) and node.parent.expression is node:
            raise _refuse(f"schema-qualified function calls are not allowed ({name})")
        if name not in allowed and name not in refused:
            refused.append(name)
    if refused:
        raise _refuse(
            f"calls {', '.join(refused)}, not in CANARY_SQL_ALLOWED_FUNCTIONS "
            "(aggregates, arithmetic, date/time, coalesce/nullif, casts; an "
            "operator can extend the list in settings)"
        )
    return text.rstrip().rstrip(";").rstrip()
