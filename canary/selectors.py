"""Reads of the canary app shared by commands, the API and services.

``pilot_candidates_suggest``: which merchants to pilot a flag on, by the
operators' rule of the seed plans, with the reason each near-miss was left
out. A read: no write, no audit.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connections, transaction
from django.db.models import Avg, Count, Max, Q
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from canary import clock
from canary.models import Outcome, OutcomeEvent
from controlplane.exceptions import InvalidInput
from flags.models import Merchant
from flags.selectors import environment_get

# "A month" of workflows: also how far back outcome events are accepted.
PILOT_MONTH_DAYS = 30
# Near misses kept, nearest first (a million merchants would be a million).
LEFT_OUT_KEPT = 100


@dataclass(frozen=True)
class PilotCriteria:
    """The operators' rule for a pilot merchant (defaults: the seed plans').

    A registry merchant that is active, has an outcome event in the last
    ``active_days`` days, a success rate above ``min_success`` and between
    ``min_monthly`` and ``max_monthly`` workflows (outcome events) in the
    last ``PILOT_MONTH_DAYS`` days.
    """

    active_days: int = 7
    min_success: float = 0.8
    min_monthly: int = 5
    max_monthly: int = 20

    def clean(self) -> PilotCriteria:
        """Return self; raise InvalidInput naming the first bad criterion."""
        if not 1 <= self.active_days <= PILOT_MONTH_DAYS:
            raise InvalidInput(
                f"active_days: must be 1 to {PILOT_MONTH_DAYS}", field="active_days"
            )
        if not 0 <= self.min_success < 1:
            raise InvalidInput(
                "min_success: must be at least 0 and below 1", field="min_success"
            )
        if self.min_monthly < 0:
            raise InvalidInput("min_monthly: must be at least 0", field="min_monthly")
        if self.max_monthly < max(1, self.min_monthly):
            raise InvalidInput(
                "max_monthly: must be at least 1 and at least min_monthly",
                field="max_monthly",
            )
        return self

    def text(self) -> str:
        """Return the rule in one sentence."""
        return (
            f"active registry merchant, seen in the last {self.active_days} days, "
            f"success rate above {self.min_success:.0%}, {self.min_monthly} to "
            f"{self.max_monthly} workflows in {PILOT_MONTH_DAYS} days"
        )

    def as_dict(self) -> dict:
        return {
            "active_days": self.active_days,
            "min_success": self.min_success,
            "min_monthly": self.min_monthly,
            "max_monthly": self.max_monthly,
            "month_days": PILOT_MONTH_DAYS,
        }


@dataclass(frozen=True)
class PilotCandidate:
    """One merchant's last month of outcome events, and why it is (not) a pick."""

    merchant: str
    events: int
    failures: int
    success_rate: float
    active_days: int
    last_seen: datetime
    avg_duration_ms: float | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict:
        return {
            "merchant": self.merchant,
            "events": self.events,
            "failures": self.failures,
            "success_rate": round(self.success_rate, 4),
            "active_days": self.active_days,
            "last_seen": self.last_seen.isoformat(),
            "avg_duration_ms": (
                round(self.avg_duration_ms, 2)
                if self.avg_duration_ms is not None
                else None
            ),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class PilotSuggestion:
    flag_key: str
    environment_key: str
    criteria: PilotCriteria
    basis: str  # "flag": events of this flag; "environment": all events there
    merchants_seen: int
    picks: tuple[PilotCandidate, ...]
    left_out: tuple[PilotCandidate, ...]  # the nearest misses, at most a limit
    left_out_total: int = 0  # every merchant left out

    def as_dict(self) -> dict:
        return {
            "flag": self.flag_key,
            "environment": self.environment_key,
            "criteria": self.criteria.as_dict(),
            "basis": self.basis,
            "merchants_seen": self.merchants_seen,
            "picks": [pick.as_dict() for pick in self.picks],
            "left_out": [item.as_dict() for item in self.left_out],
            "left_out_total": self.left_out_total,
        }


def _problems(
    row: dict, criteria: PilotCriteria, registry: dict[str, bool], now: datetime
) -> list[str]:
    """Return why the merchant of ``row`` is not a pilot (empty: it is one)."""
    problems: list[str] = []
    key = row["merchant_key"]
    if key not in registry:
        # Evaluation accepts any merchant key, but an override needs a row.
        problems.append("not in the merchant registry")
    elif not registry[key]:
        problems.append("inactive in the merchant registry")
    if row["last_seen"] < now - timedelta(days=criteria.active_days):
        problems.append(
            f"not active in the last {criteria.active_days} days "
            f"(last seen {row['last_seen']:%Y-%m-%d})"
        )
    events, failures = row["events"], row["failures"]
    success = (events - failures) / events
    if success <= criteria.min_success:
        problems.append(
            f"success {success:.1%} is not above {criteria.min_success:.0%}"
        )
    if events < criteria.min_monthly:
        problems.append(
            f"{events} workflows in {PILOT_MONTH_DAYS} days: fewer than "
            f"{criteria.min_monthly}"
        )
    elif events > criteria.max_monthly:
        problems.append(
            f"{events} workflows in {PILOT_MONTH_DAYS} days: more than "
            f"{criteria.max_monthly}"
        )
    return problems


def pilot_candidates_suggest(
    *,
    flag_key: str,
    environment_key: str,
    criteria: PilotCriteria | None = None,
    limit: int = 5,
    left_out_limit: int = LEFT_OUT_KEPT,
    now: datetime | None = None,
) -> PilotSuggestion:
    """Suggest pilot merchants for ``flag_key`` from the last month of events.

    Only merchants of the registry that are active and meet every
    ``criteria`` are picked, best first (highest success rate, then most
    active days, then most workflows, then key); every other merchant with
    events is left out with its reasons, nearest misses first. Uses the
    flag's own events, or every event of the environment when the flag has
    none yet. ``left_out`` holds the ``left_out_limit`` nearest misses and
    ``left_out_total`` counts them all. Raise NotFound for an unknown
    environment, InvalidInput for a bad criterion or a limit below 1.
    """
    criteria = (criteria or PilotCriteria()).clean()
    if limit < 1:
        raise InvalidInput("limit: must be at least 1", field="limit")
    environment = environment_get(environment_key)
    now = now or clock.now()
    recent = OutcomeEvent.objects.filter(
        environment=environment,
        occurred_at__gte=now - timedelta(days=PILOT_MONTH_DAYS),
        occurred_at__lte=now,
    )
    basis = "flag"
    if recent.filter(flag_key=flag_key).exists():
        recent = recent.filter(flag_key=flag_key)
    else:
        basis = "environment"
    since = now - timedelta(days=PILOT_MONTH_DAYS)
    if connections[recent.db].vendor == "postgresql":
        top, nearest, seen, left_total = _pilot_top_postgresql(
            environment_id=environment.pk,
            flag_key=flag_key if basis == "flag" else None,
            since=since,
            until=now,
            criteria=criteria,
            now=now,
            limit=limit,
            left_out_limit=left_out_limit,
        )
    else:
        top, nearest, seen, left_total = _pilot_top(
            _pilot_rows(recent), criteria, now, limit, left_out_limit
        )
    return PilotSuggestion(
        flag_key=flag_key,
        environment_key=environment.key,
        criteria=criteria,
        basis=basis,
        merchants_seen=seen,
        picks=tuple(_candidate(row, criteria, now) for row in top),
        left_out=tuple(_candidate(row, criteria, now) for row in nearest),
        left_out_total=left_total,
    )


def _pilot_rows(recent) -> Iterator[tuple]:
    """Yield per merchant: key, events, failures, active days, last seen,
    average duration, registry status (None: not in the registry).

    One query: the month's events aggregated per merchant (on PostgreSQL
    through the ``outcome_env_flag_merchant`` covering index, in merchant
    order, no sort), joined with the registry.
    """
    aggregated = (
        recent.order_by()
        .values("merchant_key")
        .annotate(
            # counted over an indexed column: the index alone answers
            events=Count("outcome"),
            failures=Count("outcome", filter=Q(outcome=Outcome.FAILURE)),
            active_days=Count(TruncDate("occurred_at"), distinct=True),
            last_seen=Max("occurred_at"),
            avg_duration=Avg("duration_ms"),
        )
        .values_list(
            "merchant_key",
            "events",
            "failures",
            "active_days",
            "last_seen",
            "avg_duration",
        )
    )
    sql, params = aggregated.query.sql_with_params()
    connection = connections[aggregated.db]
    quote = connection.ops.quote_name
    table = quote(Merchant._meta.db_table)
    joined = (
        f"SELECT a.*, m.{quote('is_active')} FROM ({sql}) a"
        f" LEFT JOIN {table} m ON m.{quote('key')} = a.{quote('merchant_key')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(joined, params)
        while chunk := cursor.fetchmany(10_000):
            for key, events, failures, days, last, avg, active in chunk:
                if not isinstance(last, datetime):
                    last = _parse_time(last)
                yield (
                    key,
                    events,
                    failures,
                    days,
                    last,
                    avg,
                    None if active is None else bool(active),
                )


def _pilot_top(
    rows: Iterator[tuple],
    criteria: PilotCriteria,
    now: datetime,
    limit: int,
    left_out_limit: int,
) -> tuple[list[tuple], list[tuple], int, int]:
    """Return the best picks, the nearest misses, merchants seen, misses."""
    picks: list[tuple] = []
    left_out: list[tuple] = []
    seen = 0
    for row in rows:
        seen += 1
        misses = _miss_count(row, criteria, now)
        if misses:
            # nearest misses first: fewest reasons, then most events
            left_out.append((misses, -row[1], row[0], row))
        else:
            success = (row[1] - row[2]) / row[1]
            picks.append((-success, -row[3], -row[1], row[0], row))
    top = [item[-1] for item in heapq.nsmallest(limit, picks)]
    nearest = [item[-1] for item in heapq.nsmallest(left_out_limit, left_out)]
    return top, nearest, seen, len(left_out)


_PILOT_SQL = """
WITH scored AS MATERIALIZED (
    SELECT a.*, m.is_active,
           (m.is_active IS NOT TRUE)::int
           + (a.last_seen < %(recent)s)::int
           + ((a.events - a.failures)::float8 / a.events <= %(min_success)s)::int
           + (a.events < %(min_monthly)s OR a.events > %(max_monthly)s)::int
           AS misses
    FROM (
        SELECT e.merchant_key,
               count(*) AS events,
               count(*) FILTER (WHERE e.outcome = %(failure)s) AS failures,
               bit_count(bit_or(
                   1::bigint << ((e.occurred_at AT TIME ZONE %(zone)s)::date
                                 - %(first_day)s::date)
               )::bit(64)) AS days,
               max(e.occurred_at) AS last_seen,
               avg(e.duration_ms) AS avg_duration
        FROM {events} e
        WHERE e.environment_id = %(environment)s {flag_filter}
          AND e.occurred_at >= %(since)s AND e.occurred_at <= %(until)s
        GROUP BY e.merchant_key
    ) a
    LEFT JOIN {merchants} m ON m.key = a.merchant_key
)
(SELECT 0, merchant_key, events, failures, days, last_seen, avg_duration, is_active
 FROM scored WHERE misses = 0
 ORDER BY (events - failures)::float8 / events DESC, days DESC, events DESC,
          merchant_key COLLATE "C"
 LIMIT %(limit)s)
UNION ALL
(SELECT 1, merchant_key, events, failures, days, last_seen, avg_duration, is_active
 FROM scored WHERE misses > 0
 ORDER BY misses, events DESC, merchant_key COLLATE "C"
 LIMIT %(left_out_limit)s)
UNION ALL
SELECT 2, NULL, count(*), count(*) FILTER (WHERE misses > 0), NULL, NULL, NULL, NULL
FROM scored
"""


def _pilot_top_postgresql(
    *,
    environment_id: int,
    flag_key: str | None,
    since: datetime,
    until: datetime,
    criteria: PilotCriteria,
    now: datetime,
    limit: int,
    left_out_limit: int,
) -> tuple[list[tuple], list[tuple], int, int]:
    """``_pilot_top`` in the database: only the rows shown come back.

    The active days are a bit mask (one bit per calendar day of the month,
    ``bit_or``) instead of ``COUNT(DISTINCT date)``, so there is no sort per
    merchant; the events are read from the ``outcome_env_flag_merchant``
    index alone; the rule is applied, ranked and cut in SQL with the same
    order as ``_pilot_top`` (code-point order of keys, as in Python).
    """
    connection = connections[OutcomeEvent.objects.db]
    quote = connection.ops.quote_name
    zone = timezone.get_current_timezone()
    sql = _PILOT_SQL.format(
        events=quote(OutcomeEvent._meta.db_table),
        merchants=quote(Merchant._meta.db_table),
        flag_filter="AND e.flag_key = %(flag)s" if flag_key is not None else "",
    )
    params = {
        "failure": Outcome.FAILURE.value,
        "zone": str(zone),
        "first_day": since.astimezone(zone).date(),
        "environment": environment_id,
        "flag": flag_key,
        "since": since,
        "until": until,
        "recent": now - timedelta(days=criteria.active_days),
        "min_success": criteria.min_success,
        "min_monthly": criteria.min_monthly,
        "max_monthly": criteria.max_monthly,
        "limit": limit,
        "left_out_limit": left_out_limit,
    }
    top: list[tuple] = []
    nearest: list[tuple] = []
    seen = left_total = 0
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        # A month of a busy flag is millions of index entries: let two
        # workers aggregate them in parallel (partial aggregates, merged in
        # merchant order). The default costs keep the plan serial because
        # the merge moves a row per merchant; measured at a million
        # merchants, the parallel plan takes about 70% of the time.
        cursor.execute("SET LOCAL parallel_setup_cost = 100")
        cursor.execute("SET LOCAL parallel_tuple_cost = 0.01")
        cursor.execute(sql, params)
        for part, key, events, failures, days, last, avg, active in cursor.fetchall():
            if part == 2:
                seen, left_total = events, failures
                continue
            row = (key, events, failures, days, last, avg, active)
            (top if part == 0 else nearest).append(row)
    return top, nearest, seen, left_total


def _parse_time(value: str) -> datetime:
    parsed = parse_datetime(str(value))
    if parsed is None:
        raise ValueError(f"not a time: {value!r}")
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _miss_count(row: tuple, criteria: PilotCriteria, now: datetime) -> int:
    """Return how many of the rule's conditions the merchant misses."""
    _key, events, failures, _days, last_seen, _avg, active = row
    return (
        (not active)
        + (last_seen < now - timedelta(days=criteria.active_days))
        + ((events - failures) / events <= criteria.min_success)
        + (not criteria.min_monthly <= events <= criteria.max_monthly)
    )


def _candidate(row: tuple, criteria: PilotCriteria, now: datetime) -> PilotCandidate:
    key, events, failures, days, last_seen, avg, active = row
    record = {
        "merchant_key": key,
        "events": events,
        "failures": failures,
        "last_seen": last_seen,
    }
    registry = {} if active is None else {key: active}
    success = (events - failures) / events
    problems = _problems(record, criteria, registry, now)
    return PilotCandidate(
        merchant=key,
        events=events,
        failures=failures,
        success_rate=success,
        active_days=days,
        last_seen=last_seen,
        avg_duration_ms=avg,
        reasons=tuple(problems)
        or (
            f"success {success:.1%} > {criteria.min_success:.0%}",
            f"{events} workflows in {PILOT_MONTH_DAYS} days",
            f"last seen {last_seen:%Y-%m-%d}",
        ),
    )
