"""Outcome events: ingestion of what apps report.

Pilot suggestions from these events are a read: ``canary.selectors``.

Outcome events are telemetry, not changes: they are bulk-inserted without an
audit row per event.

An event may carry an ``id`` (a relay gives each event one): an id is stored
once per environment (and flag), so a batch sent again after its answer was
lost is not counted twice (the event is accepted, not stored again).

An event names the flag it reports on (``flag`` + ``variation``), or every
flag served to the request (``flags``: ``{flag key: variation}``, what the
client's and the OpenFeature hooks' request scopes report), or both. It is
stored once per flag it names, so each flag's checks read its own rows
with the variation that flag served, and a release's members
(``canary.release_models``) each see the request with the others'
assignments alongside: the factorial design its attribution reads.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction

from canary import clock
from controlplane.api.input import text_problem
from controlplane.conf import setting
from controlplane.exceptions import InvalidInput, NotFound

EVENT_FIELDS = frozenset(
    {
        "flag",
        "merchant",
        "variation",
        "outcome",
        "duration_ms",
        "occurred_at",
        "name",
        "id",
        "flags",
    }
)
# Flags one event may name: a request's release members and their like.
MAX_EVENT_FLAGS = 20
OUTCOMES = frozenset({"success", "failure"})
MAX_FUTURE = timedelta(minutes=5)
MAX_PAST = timedelta(days=30)
MAX_DURATION_MS = 24 * 3600 * 1000.0
MAX_ERRORS = 50
BATCH_SIZE = 1000
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
_LIMITS = {"flag": 100, "merchant": 128, "variation": 100, "name": 100, "id": 64}


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
    if name in ("flag", "variation", "id") and not _KEY.match(value):
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
    served = _served_flags(event, errors)
    # a bad ``flags`` is reported as such, not also as a missing ``flag``
    flag = _check_key(event, "flag", errors, required=event.get("flags") is None)
    merchant = _check_key(event, "merchant", errors, required=True)
    variation = _check_key(event, "variation", errors, required=bool(flag))
    if flag and served is not None and served.get(flag, variation) != variation:
        errors.append(
            ("flags", f"names {flag!r} with another variation than variation")
        )
    name = _check_key(event, "name", errors, required=False)
    event_id = _check_key(event, "id", errors, required=False)
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
    flags = dict(served or {})
    if flag:
        flags = {flag: variation, **flags}
    return [
        {
            "flag_key": key,
            "merchant_key": merchant,
            "variation": served_variation,
            "outcome": outcome,
            "duration_ms": duration,
            "name": name,
            "occurred_at": occurred_at,
            "event_id": event_id or None,
        }
        for key, served_variation in flags.items()
    ], []


def _served_flags(event: dict, errors: list[tuple[str, str]]) -> dict | None:
    """Return the event's ``flags`` map, checked (None when absent)."""
    raw = event.get("flags")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        errors.append(("flags", "must be a non-empty object of flag key -> variation"))
        return None
    if len(raw) > MAX_EVENT_FLAGS:
        errors.append(("flags", f"at most {MAX_EVENT_FLAGS} flags per event"))
        return None
    served: dict[str, str] = {}
    for key, variation in raw.items():
        problems: list[tuple[str, str]] = []
        clean_key = _check_key({"flag": key}, "flag", problems, required=True)
        clean_variation = _check_key(
            {"variation": variation}, "variation", problems, required=True
        )
        if problems:
            label = str(key) if not text_problem(str(key)) else ascii(str(key))
            errors.extend((f"flags.{label[:100]}", message) for _, message in problems)
            continue
        served[clean_key] = clean_variation
    return served if len(served) == len(raw) else None


def outcome_events_ingest(
    *, events: Any, environment: Any = None, api_key_info: Any = None
) -> int:
    """Validate and store a batch of outcome events; return how many events
    (an event naming several flags is stored as one row per flag).

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
    now = clock.now()
    rows = outcome_events_validate(events=events, now=now)
    if environment_id is None:
        environment_id = environment.pk
    _bulk_insert(OutcomeEvent, rows, environment_id=environment_id, received_at=now)
    return len(events)


def outcome_events_validate(*, events: Any, now: datetime | None = None) -> list[dict]:
    """Return the parsed events of a batch; store nothing, read no database.

    Raise ``InvalidInput`` for a batch that is not a list, is empty or is
    larger than ``OUTCOME_EVENTS_MAX_BATCH``, and ``EventsInvalid`` with
    field errors keyed ``events[i].field`` when any event is invalid. A
    relay checks with this before it accepts a batch for later delivery.
    """
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
    now = now or clock.now()
    rows: list[dict] = []
    errors: dict[str, list[str]] = {}
    for index, event in enumerate(events):
        parsed, problems = _parse_event(event, now)
        if problems:
            if len(errors) < MAX_ERRORS:
                for name, message in problems:
                    path = f"events[{index}].{name}" if name else f"events[{index}]"
                    errors.setdefault(path, []).append(message)
            continue
        if not errors:
            rows.extend(parsed)
    if errors:
        raise EventsInvalid(errors, total=len(events))
    return rows


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
    one ``executemany``, elsewhere multi-row ``INSERT ... VALUES``. Rows
    with an event id go through ``INSERT ... ON CONFLICT DO NOTHING``: an id
    already stored for the environment (a batch sent again) is skipped.
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
    values = []
    with_ids: dict[tuple[str, str], tuple] = {}
    for row in rows:
        value = (
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
        event_id = row.get("event_id")
        if event_id is None:
            values.append(value)
        else:  # the same id twice in one batch is one event too
            with_ids.setdefault((event_id, row["flag_key"]), (*value, event_id))
    one_row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        if with_ids:
            id_column = ops.quote_name(meta.get_field("event_id").column)
            cursor.executemany(
                f"INSERT INTO {table} ({column_sql}, {id_column}) VALUES "
                f"({', '.join(['%s'] * (len(columns) + 1))}) ON CONFLICT DO NOTHING",
                list(with_ids.values()),
            )
        if not values:
            return
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
