"""Outcome events: ingestion of what apps report, and pilot suggestions.

Outcome events are telemetry, not changes: they are bulk-inserted without an
audit row per event.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.api.input import text_problem
from controlplane.conf import setting
from controlplane.exceptions import InvalidInput, NotFound

EVENT_FIELDS = frozenset(
    {"flag", "merchant", "variation", "outcome", "duration_ms", "occurred_at", "name"}
)
OUTCOMES = frozenset({"success", "failure"})
MAX_FUTURE = timedelta(minutes=5)
MAX_PAST = timedelta(days=30)
MAX_DURATION_MS = 24 * 3600 * 1000.0
MAX_ERRORS = 50
BATCH_SIZE = 1000
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
_LIMITS = {"flag": 100, "merchant": 128, "variation": 100, "name": 100}


class EventsInvalid(InvalidInput):
    """Some events are invalid; ``errors`` maps ``events[i].field`` to messages."""

    def __init__(self, errors: dict[str, list[str]], *, total: int) -> None:
        first_field, first_messages = next(iter(errors.items()))
        count = len({key.split("]")[0] for key in errors if key.startswith("events[")})
        super().__init__(
            f"{first_field}: {first_messages[0]}"
            + (
                f" (and more: {count} of {total} events are invalid)"
                if count > 1
                else ""
            )
            + "; nothing was stored",
            field=first_field,
        )
        self.errors = errors

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "errors": self.errors}


def _check_key(
    event: dict, name: str, errors: list[tuple[str, str]], *, required: bool
) -> str:
    value = event.get(name)
    if value is None or value == "":
        if required:
            errors.append((name, "this field is required"))
        return ""
    if not isinstance(value, str):
        errors.append((name, "must be a string"))
        return ""
    if len(value) > _LIMITS[name]:
        errors.append((name, f"at most {_LIMITS[name]} characters"))
        return ""
    # no lone surrogate (unstorable, crashes hashing) and no NUL (PostgreSQL)
    problem = text_problem(value, allow_nul=False)
    if problem:
        errors.append((name, problem))
        return ""
    # merchant keys and names are free text (apps may report any merchant key
    # the evaluation API accepts); flag and variation keys are slugs
    if name in ("flag", "variation") and not _KEY.match(value):
        errors.append((name, "letters, digits and _ . : - only"))
        return ""
    return value


def _parse_time(raw: Any, now: datetime, errors: list[tuple[str, str]]) -> datetime:
    if raw is None:
        return now
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        errors.append(("occurred_at", "must be an ISO 8601 time or epoch seconds"))
        return now
    try:
        if isinstance(raw, str):
            when = datetime.fromisoformat(raw.strip())
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
        else:
            if not math.isfinite(raw):
                raise ValueError
            when = datetime.fromtimestamp(raw, tz=UTC)
    except (ValueError, OverflowError, OSError):
        errors.append(("occurred_at", "must be an ISO 8601 time or epoch seconds"))
        return now
    if when > now + MAX_FUTURE:
        errors.append(("occurred_at", "is in the future"))
    elif when < now - MAX_PAST:
        errors.append(("occurred_at", f"is older than {MAX_PAST.days} days"))
    return when


def _parse_event(
    event: Any, now: datetime
) -> tuple[dict | None, list[tuple[str, str]]]:
    if not isinstance(event, dict):
        return None, [("", "must be an object")]
    errors: list[tuple[str, str]] = []
    for key in event:
        if key not in EVENT_FIELDS:
            # the name is echoed in the answer: never as text it cannot encode
            label = str(key)
            if text_problem(label):
                label = ascii(label)
            errors.append((label, "unknown field"))
    flag = _check_key(event, "flag", errors, required=True)
    merchant = _check_key(event, "merchant", errors, required=True)
    variation = _check_key(event, "variation", errors, required=True)
    name = _check_key(event, "name", errors, required=False)
    outcome = event.get("outcome")
    if outcome is None:
        errors.append(("outcome", "this field is required"))
    # isinstance first: {} or [] is unhashable, and a set lookup would raise
    elif not isinstance(outcome, str) or outcome not in OUTCOMES:
        errors.append(("outcome", 'must be "success" or "failure"'))
    duration = event.get("duration_ms")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            errors.append(("duration_ms", "must be a number"))
            duration = None
        elif isinstance(duration, int) and abs(duration) > MAX_DURATION_MS:
            errors.append(("duration_ms", "must be a number between 0 and one day"))
            duration = None
        elif not math.isfinite(duration) or duration < 0:
            errors.append(("duration_ms", "must be a finite number >= 0"))
            duration = None
        elif duration > MAX_DURATION_MS:
            errors.append(("duration_ms", "must be at most one day"))
            duration = None
        else:
            duration = float(duration)
    occurred_at = _parse_time(event.get("occurred_at"), now, errors)
    if errors:
        return None, errors
    return {
        "flag_key": flag,
        "merchant_key": merchant,
        "variation": variation,
        "outcome": outcome,
        "duration_ms": duration,
        "name": name,
        "occurred_at": occurred_at,
    }, []


def outcome_events_ingest(
    *, events: Any, environment: Any = None, api_key_info: Any = None
) -> int:
    """Validate and store a batch of outcome events; return how many.

    The environment is ``environment`` (an Environment or its key) or the
    server key's (``api_key_info.environment_key``). The batch is all or
    nothing: any invalid event raises ``EventsInvalid`` (HTTP 400) with
    field errors keyed ``events[i].field`` and nothing is stored. Raise
    ``InvalidInput`` for a batch that is empty or larger than the setting
    ``OUTCOME_EVENTS_MAX_BATCH``, ``NotFound`` for an unknown environment.
    No audit row is written: events are telemetry, not changes.
    """
    from canary.models import OutcomeEvent
    from flags.models import Environment

    environment_id: int | None = None
    if environment is None and api_key_info is not None:
        # a server key already names its environment: no lookup needed
        environment_id = getattr(api_key_info, "environment_id", None)
        environment = api_key_info.environment_key
    if environment is None:
        raise InvalidInput("an environment is required", field="environment")
    if environment_id is None and isinstance(environment, str):
        found = Environment.objects.filter(key=environment).only("pk", "key").first()
        if found is None:
            raise NotFound(f"unknown environment {environment!r}", field="environment")
        environment = found
    if not isinstance(events, list):
        raise InvalidInput("must be a list of events", field="events")
    limit = int(setting("OUTCOME_EVENTS_MAX_BATCH"))
    if not events:
        raise InvalidInput("send at least one event", field="events")
    if len(events) > limit:
        raise InvalidInput(
            f"at most {limit} events per request, got {len(events)}: split the batch",
            field="events",
        )
    now = timezone.now()
    rows: list[dict] = []
    errors: dict[str, list[str]] = {}
    if environment_id is None:
        environment_id = environment.pk
    for index, event in enumerate(events):
        parsed, problems = _parse_event(event, now)
        if problems:
            if len(errors) < MAX_ERRORS:
                for name, message in problems:
                    path = f"events[{index}].{name}" if name else f"events[{index}]"
                    errors.setdefault(path, []).append(message)
            continue
        if not errors:
            rows.append(parsed)
    if errors:
        raise EventsInvalid(errors, total=len(events))
    _bulk_insert(OutcomeEvent, rows, environment_id=environment_id, received_at=now)
    return len(rows)


_INSERT_FIELDS = (
    "flag_key",
    "merchant_key",
    "variation",
    "outcome",
    "duration_ms",
    "name",
    "occurred_at",
)


def _bulk_insert(
    model: Any, rows: list[dict], *, environment_id: int, received_at: datetime
) -> None:
    """Insert validated rows in one transaction, ``BATCH_SIZE`` per statement.

    Equivalent to ``bulk_create`` but without building a model instance and
    compiling each value per row, which costs most of the time at thousands
    of events per request: on PostgreSQL ``COPY ... FROM STDIN``, on SQLite
    one ``executemany``, elsewhere multi-row ``INSERT ... VALUES``.
    """
    from django.db import connections, router

    alias = router.db_for_write(model)
    connection = connections[alias]
    ops = connection.ops
    meta = model._meta
    columns = [meta.get_field(name).column for name in _INSERT_FIELDS]
    columns += [
        meta.get_field("environment").column,
        meta.get_field("received_at").column,
    ]
    table = ops.quote_name(meta.db_table)
    column_sql = ", ".join(ops.quote_name(column) for column in columns)
    adapt_time = ops.adapt_datetimefield_value
    received = adapt_time(received_at)
    values = [
        (
            row["flag_key"],
            row["merchant_key"],
            row["variation"],
            row["outcome"],
            row["duration_ms"],
            row["name"],
            adapt_time(row["occurred_at"]),
            environment_id,
            received,
        )
        for row in rows
    ]
    one_row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.executemany(
                f"INSERT INTO {table} ({column_sql}) VALUES {one_row}", values
            )
            return
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({column_sql}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
            return
        for start in range(0, len(values), BATCH_SIZE):
            chunk = values[start : start + BATCH_SIZE]
            cursor.execute(
                f"INSERT INTO {table} ({column_sql}) VALUES "
                + ", ".join([one_row] * len(chunk)),
                [value for row in chunk for value in row],
            )


# -- pilot suggestion (a read: no write, no audit) ---------------------------

PILOT_MIN_SUCCESS_RATE = 0.80
PILOT_MIN_EVENTS = 10
PILOT_TINY_FRACTION = 0.10  # below 10% of the median volume is too small to tell
PILOT_BIG_MULTIPLE = 3.0  # above 3x the median, a regression hurts too much
PILOT_VOLUME_WEIGHT = 0.1
PILOT_ACTIVITY_WEIGHT = 0.05


@dataclass(frozen=True)
class PilotCandidate:
    """One merchant's recent activity and why it is (not) a good pilot."""

    merchant: str
    events: int
    failures: int
    success_rate: float
    active_days: int
    last_seen: datetime
    avg_duration_ms: float | None
    volume_ratio: float  # events / median events
    score: float
    reasons: tuple[str, ...] = field(default_factory=tuple)

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
            "volume_ratio": round(self.volume_ratio, 3),
            "score": round(self.score, 4),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class PilotSuggestion:
    flag_key: str
    environment_key: str
    days: int
    basis: str  # "flag": events of this flag; "environment": all events there
    median_events: float
    merchants_seen: int
    picks: tuple[PilotCandidate, ...]
    excluded: tuple[PilotCandidate, ...]

    def as_dict(self) -> dict:
        return {
            "flag": self.flag_key,
            "environment": self.environment_key,
            "days": self.days,
            "basis": self.basis,
            "median_events": self.median_events,
            "merchants_seen": self.merchants_seen,
            "picks": [pick.as_dict() for pick in self.picks],
            "excluded": [item.as_dict() for item in self.excluded],
        }


def pilot_score(
    *, success_rate: float, volume_ratio: float, active_days: int, days: int
) -> float:
    """Return ``success − 0.1·|log2(volume ÷ median)| + 0.05·(active days ÷ days)``.

    A steady merchant near the median volume with a high success rate wins:
    big enough to show a regression, small enough not to hurt many people.
    """
    distance = abs(math.log2(volume_ratio)) if volume_ratio > 0 else 10.0
    return (
        success_rate
        - PILOT_VOLUME_WEIGHT * distance
        + PILOT_ACTIVITY_WEIGHT * min(1.0, active_days / max(days, 1))
    )


def pilot_candidates_suggest(
    *,
    flag_key: str,
    environment_key: str,
    days: int = 7,
    limit: int = 5,
    now: datetime | None = None,
) -> PilotSuggestion:
    """Rank merchants for a pilot of ``flag_key`` from recent outcome events.

    Eligible: events in the last ``days`` days, success rate above 80%, at
    least ``PILOT_MIN_EVENTS`` events and 10% of the median volume, at most 3x
    the median, and not marked inactive in the merchant registry. Ranked by
    :func:`pilot_score`. Uses the flag's own events, or every event of the
    environment when the flag has none yet. Raise ``NotFound`` for an unknown
    environment, ``InvalidInput`` for days or limit below 1.
    """
    from django.db.models import Avg, Count, Max, Q
    from django.db.models.functions import TruncDate

    from canary.models import Outcome, OutcomeEvent
    from flags.models import Merchant
    from flags.selectors import environment_get

    if days < 1:
        raise InvalidInput("must be at least 1", field="days")
    if limit < 1:
        raise InvalidInput("must be at least 1", field="limit")
    environment = environment_get(environment_key)
    now = now or timezone.now()
    recent = OutcomeEvent.objects.filter(
        environment=environment,
        occurred_at__gte=now - timedelta(days=days),
        occurred_at__lte=now,
    )
    basis = "flag"
    if recent.filter(flag_key=flag_key).exists():
        recent = recent.filter(flag_key=flag_key)
    else:
        basis = "environment"
    rows = list(
        recent.order_by()
        .values("merchant_key")
        .annotate(
            events=Count("id"),
            failures=Count("id", filter=Q(outcome=Outcome.FAILURE)),
            active_days=Count(TruncDate("occurred_at"), distinct=True),
            last_seen=Max("occurred_at"),
            avg_duration=Avg("duration_ms"),
        )
    )
    if not rows:
        return PilotSuggestion(flag_key, environment.key, days, basis, 0.0, 0, (), ())
    median = float(statistics.median(row["events"] for row in rows))
    inactive = set(
        Merchant.objects.filter(
            key__in=[row["merchant_key"] for row in rows], is_active=False
        ).values_list("key", flat=True)
    )
    picks: list[PilotCandidate] = []
    excluded: list[PilotCandidate] = []
    for row in rows:
        events, failures = row["events"], row["failures"]
        success = (events - failures) / events
        ratio = events / median if median else 0.0
        reasons: list[str] = []
        problems: list[str] = []
        if row["merchant_key"] in inactive:
            problems.append("inactive in the merchant registry")
        if success <= PILOT_MIN_SUCCESS_RATE:
            problems.append(
                f"success {success:.1%} is not above {PILOT_MIN_SUCCESS_RATE:.0%}"
            )
        else:
            reasons.append(f"success {success:.1%} > {PILOT_MIN_SUCCESS_RATE:.0%}")
        if events < max(PILOT_MIN_EVENTS, PILOT_TINY_FRACTION * median):
            problems.append(
                f"too little traffic: {events} events ({ratio:.2f}x median) is too few to judge"
            )
        elif ratio > PILOT_BIG_MULTIPLE:
            problems.append(
                f"too big: {events} events is {ratio:.1f}x the median;"
                " a regression would hurt the most traffic"
            )
        else:
            reasons.append(f"volume {events} events = {ratio:.2f}x median {median:g}")
        reasons.append(f"active {row['active_days']}/{days} days")
        candidate = PilotCandidate(
            merchant=row["merchant_key"],
            events=events,
            failures=failures,
            success_rate=success,
            active_days=row["active_days"],
            last_seen=row["last_seen"],
            avg_duration_ms=row["avg_duration"],
            volume_ratio=ratio,
            score=pilot_score(
                success_rate=success,
                volume_ratio=ratio,
                active_days=row["active_days"],
                days=days,
            ),
            reasons=tuple(problems) if problems else tuple(reasons),
        )
        (excluded if problems else picks).append(candidate)
    picks.sort(key=lambda c: (-c.score, c.merchant))
    excluded.sort(key=lambda c: (-c.events, c.merchant))
    return PilotSuggestion(
        flag_key=flag_key,
        environment_key=environment.key,
        days=days,
        basis=basis,
        median_events=median,
        merchants_seen=len(rows),
        picks=tuple(picks[:limit]),
        excluded=tuple(excluded),
    )
