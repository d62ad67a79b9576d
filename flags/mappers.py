"""ORM rows -> the engine's plain ruleset data: the only module that knows both."""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from collections.abc import Iterable
from typing import Any

from django.db import connections
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from flags import engine
from flags.models import Environment, FlagState, Merchant, MerchantOverride, Segment


def ruleset_data(environment: Environment) -> dict[str, Any]:
    """Return the JSON-shaped ruleset of ``environment`` at its current version.

    Read the version first: if a change commits while this runs, the data
    may be newer than the version it carries, never older, so the next
    version check reloads it.
    """
    version = (
        Environment.objects.filter(pk=environment.pk)
        .values_list("ruleset_version", flat=True)
        .get()
    )
    now = timezone.now()
    registry = _Registry()
    if not connections[Merchant.objects.db].in_atomic_block:
        # the registry is read on a second connection while this one reads
        # the flags (an open transaction's rows are not visible there)
        registry.start()
    flags = flags_data(environment, now=now)
    segments = {
        key: {"clauses": clauses}
        for key, clauses in Segment.objects.values_list("key", "clauses")
    }
    return {
        "environment": environment.key,
        "version": version,
        "generated_at": now.isoformat(),
        "flags": flags,
        "segments": segments,
        "merchants": registry.result(),
    }


class _Registry(threading.Thread):
    """``merchants_data()``, on a thread of its own or on the caller's."""

    def __init__(self) -> None:
        super().__init__(name="ruleset-registry", daemon=True)
        self._merchants: dict[str, dict[str, Any]] | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._merchants = merchants_data()
        except BaseException as exc:
            self._error = exc
        finally:
            connections[Merchant.objects.db].close()

    def result(self) -> dict[str, dict[str, Any]]:
        if self.ident is None:
            return merchants_data()
        self.join()
        if self._error is not None:
            raise self._error
        return self._merchants


def flags_data(
    environment: Environment,
    *,
    now: dt.datetime,
    flag_ids: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """Return the plain data of the environment's flags (or of ``flag_ids``).

    Archived flags are left out; so are overrides past their expiry.
    """
    live = MerchantOverride.objects.filter(
        environment=environment, flag__archived=False
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    states = FlagState.objects.filter(environment=environment, flag__archived=False)
    if flag_ids is not None:
        flag_ids = list(flag_ids)
        live = live.filter(flag_id__in=flag_ids)
        states = states.filter(flag_id__in=flag_ids)
    overrides: dict[int, list[dict]] = {}
    intern = sys.intern
    # no ORDER BY (the models' ordering sorts 100,000 rows over three joins)
    # and no server-side cursor: one round trip
    for flag_id, merchant_key, variation, expires_at in live.order_by().values_list(
        "flag_id", "merchant__key", "variation", "expires_at"
    ):
        overrides.setdefault(flag_id, []).append(
            {
                "merchant": merchant_key,
                "variation": intern(variation),
                "expires_at": expires_at.timestamp() if expires_at else None,
            }
        )
    flags = []
    for state in states.select_related("flag").order_by("flag__key"):
        flag = state.flag
        flags.append(
            {
                "key": flag.key,
                "value_type": flag.value_type,
                "variations": flag.variations,
                "enabled": state.enabled,
                "off_variation": state.off_variation,
                "rules": state.rules,
                "fallthrough": state.fallthrough,
                "bucket_by": state.bucket_by,
                "state_version": state.version,
                "overrides": overrides.get(flag.pk, []),
            }
        )
    return flags


# Separates merchant keys aggregated in one row; a key holding it is read
# one row per merchant instead (the counts tell).
_SEPARATOR = "\x1f"
_GROUPED_SQL = {
    "postgresql": (
        "SELECT attributes::text, string_agg(key, E'\\x1f'), count(*) FROM {table}"
        " WHERE is_active AND attributes <> '{{}}'::jsonb GROUP BY attributes"
    ),
    "sqlite": (
        "SELECT attributes, group_concat(key, char(31)), count(*) FROM {table}"
        " WHERE is_active AND attributes <> '{{}}' GROUP BY attributes"
    ),
}


def merchants_data() -> dict[str, dict[str, Any]]:
    """Return the attributes of every active merchant that has some.

    A million rows: registries hold a few hundred distinct attribute sets,
    not a million, so the database groups the merchants by attribute set and
    each set is parsed once and shared by every merchant that has it. No
    model instances, no per-row work in Python.
    """
    connection = connections[Merchant.objects.db]
    template = _GROUPED_SQL.get(connection.vendor)
    if template is None:
        return _merchants_by_row()
    merchants: dict[str, dict[str, Any]] = {}
    loads = json.loads
    with connection.cursor() as cursor:
        cursor.execute(
            template.format(table=connection.ops.quote_name(Merchant._meta.db_table))
        )
        for text, keys, count in cursor.fetchall():
            attributes = loads(text)
            if not attributes:
                continue
            split = keys.split(_SEPARATOR)
            if len(split) != count:
                return _merchants_by_row()
            merchants.update(dict.fromkeys(split, attributes))
    return merchants


def _merchants_by_row() -> dict[str, dict[str, Any]]:
    query = (
        Merchant.objects.filter(is_active=True)
        .exclude(attributes={})
        .order_by()
        .values_list("key", Cast("attributes", TextField()))
    )
    sql, params = query.query.sql_with_params()
    shared: dict[str, dict[str, Any]] = {}
    merchants: dict[str, dict[str, Any]] = {}
    with connections[query.db].cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(50_000):
            for key, text in rows:
                attributes = shared.get(text)
                if attributes is None:
                    attributes = shared[text] = json.loads(text)
                merchants[key] = attributes
    return merchants


def ruleset_compile(environment: Environment) -> engine.Ruleset:
    """Return the compiled ruleset of ``environment``."""
    return engine.compile_ruleset(ruleset_data(environment))
