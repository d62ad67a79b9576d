"""Write evaluation counts to ``FlagUsage`` (the serving processes' flush).

Not a domain change: nothing here is audited, and nothing changes what any
flag serves. Each call is one ``INSERT ... ON CONFLICT DO UPDATE`` (per
``CHUNK`` rows): counts add up and ``last_evaluated_at`` keeps the later time,
so several processes flushing their own counts, in any order, agree.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction

from flags.models import Environment, Flag, FlagUsage

CHUNK = 5000  # rows per statement: 3 parameters each, under SQLite's limit


def flag_usage_upsert(*, counts: dict[tuple[str, str], int], at: dt.datetime) -> None:
    """Add ``counts`` ((environment key, flag key) -> n) evaluated at ``at``.

    Keys naming no existing flag or environment are skipped.
    """
    items = sorted(counts.items())
    quote = connection.ops.quote_name
    usage = quote(FlagUsage._meta.db_table)
    flags = quote(Flag._meta.db_table)
    environments = quote(Environment._meta.db_table)
    when = connection.ops.adapt_datetimefield_value(at)
    with transaction.atomic():
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            rows = ", ".join(["(%s, %s, %s)"] * len(chunk))
            params: list = []
            for (environment, flag), count in chunk:
                params += [environment, flag, count]
            with connection.cursor() as cursor:
                cursor.execute(
                    f"WITH v(env, flag, n) AS (VALUES {rows}) "
                    f"INSERT INTO {usage} "
                    "(flag_id, environment_id, last_evaluated_at, count) "
                    f"SELECT f.id, e.id, %s, v.n FROM v "
                    f"JOIN {flags} f ON f.key = v.flag "
                    f"JOIN {environments} e ON e.key = v.env "
                    "WHERE 1 = 1 "
                    "ON CONFLICT (flag_id, environment_id) DO UPDATE SET "
                    f"count = {usage}.count + excluded.count, "
                    "last_evaluated_at = CASE WHEN excluded.last_evaluated_at > "
                    f"{usage}.last_evaluated_at THEN excluded.last_evaluated_at "
                    f"ELSE {usage}.last_evaluated_at END",
                    [*params, when],
                )


MAX_REPORTED_FLAGS = 10_000
MAX_REPORTED_COUNT = 10**12


def flag_usage_report(*, environment_key: str, counts: object) -> int:
    """Add a relay's counts ({flag key: n}) for its environment, evaluated now.

    Raises InvalidInput naming the field for anything but a bounded object
    of flag keys to positive integers; returns the number of flags reported.
    """
    from django.utils import timezone

    from controlplane.exceptions import InvalidInput

    if not isinstance(counts, dict):
        raise InvalidInput("counts: must be an object of flag keys", field="counts")
    if len(counts) > MAX_REPORTED_FLAGS:
        raise InvalidInput(
            f"counts: at most {MAX_REPORTED_FLAGS} flags per report", field="counts"
        )
    for flag, count in counts.items():
        if len(flag) > 100:
            raise InvalidInput(
                "counts: a flag key is over 100 characters", field="counts"
            )
        if type(count) is not int or not 0 < count <= MAX_REPORTED_COUNT:
            raise InvalidInput(
                f"counts.{flag}: must be a whole number from 1 to {MAX_REPORTED_COUNT}",
                field=f"counts.{flag}",
            )
    if counts:
        flag_usage_upsert(
            counts={(environment_key, flag): n for flag, n in counts.items()},
            at=timezone.now(),
        )
    return len(counts)
