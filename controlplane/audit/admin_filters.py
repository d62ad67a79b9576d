"""The audit list's filters: actor, target type, environment and time.

Each lists what the log holds (distinct values, bounded), so nobody types
an actor's name or a model label; the time filter takes a recent window
("last hour") or a range typed into its two fields.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from controlplane.audit.models import AuditEvent

# Choices a filter lists at most (the most recent first for actors).
MAX_CHOICES = 100
NO_ENVIRONMENT = "-"


class ActorFilter(admin.SimpleListFilter):
    """Events by one actor: ``?actor=user:alice``."""

    title = "actor"
    parameter_name = "actor"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        pairs = (
            AuditEvent.objects.order_by("actor_type", "actor_name")
            .values_list("actor_type", "actor_name")
            .distinct()[:MAX_CHOICES]
        )
        return [(f"{kind}:{name}", f"{name} ({kind})") for kind, name in pairs]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        kind, _, name = value.partition(":")
        return queryset.filter(actor_type=kind, actor_name=name)


def target_type_label(target_type: str) -> str:
    """Return a target type as a person names it (``flags.flagstate``: flag state)."""
    try:
        return str(apps.get_model(target_type)._meta.verbose_name)
    except (LookupError, ValueError):
        return target_type


class TargetTypeFilter(admin.SimpleListFilter):
    """Events about one kind of object: ``?target_type=flags.flag``.

    The parameter is the one the "History (audit)" links pass with
    ``target_id``, so that link also selects the type here.
    """

    title = "target type"
    parameter_name = "target_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        types = (
            AuditEvent.objects.order_by("target_type")
            .values_list("target_type", flat=True)
            .distinct()[:MAX_CHOICES]
        )
        return sorted(
            ((kind, f"{target_type_label(kind)} ({kind})") for kind in types),
            key=lambda choice: choice[1],
        )

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(target_type=value) if value else queryset


class EnvironmentFilter(admin.SimpleListFilter):
    """Events of one environment, or of none (the registry): ``?environment=``."""

    title = "environment"
    parameter_name = "environment"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        keys = (
            AuditEvent.objects.order_by("environment")
            .values_list("environment", flat=True)
            .distinct()[:MAX_CHOICES]
        )
        return [
            (key or NO_ENVIRONMENT, key or "none (registry, keys, users)")
            for key in keys
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(environment="" if value == NO_ENVIRONMENT else value)


WINDOWS: dict[str, tuple[str, dt.timedelta]] = {
    "15m": ("last 15 minutes", dt.timedelta(minutes=15)),
    "1h": ("last hour", dt.timedelta(hours=1)),
    "24h": ("last 24 hours", dt.timedelta(hours=24)),
    "7d": ("last 7 days", dt.timedelta(days=7)),
    "30d": ("last 30 days", dt.timedelta(days=30)),
}


def parse_time(text: str, *, end: bool = False) -> dt.datetime | None:
    """Return ``text`` (ISO date or date and time) as an aware time, or None.

    A time without a zone is in the current time zone; a date alone is its
    midnight, or with ``end`` the next midnight (so "until 2026-12-01"
    includes that day).
    """
    text = text.strip()
    try:
        # A date first: parse_datetime reads "2026-12-01" as its midnight.
        day = parse_date(text)
        if day is not None:
            if end:
                day += dt.timedelta(days=1)
            moment = dt.datetime.combine(day, dt.time())
        else:
            moment = parse_datetime(text)
            if moment is None:
                return None
    except (ValueError, OverflowError):
        return None  # well formed but out of range (month 13, year 0)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_current_timezone())
    return moment


class TimeFilter(admin.ListFilter):
    """Events in a recent window (``?within=1h``) or a range (``?since=&until=``).

    ``since`` is inclusive, ``until`` exclusive; either may be left out.
    """

    title = "time"
    template = "admin/audit/auditevent/time_filter.html"
    parameters = ("within", "since", "until")

    def __init__(
        self, request: HttpRequest, params: dict, model: Any, model_admin: Any
    ):
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]

    @classmethod
    def problem(cls, request: HttpRequest) -> str:
        """Return what is wrong with the request's time parameters, or ""."""
        within = request.GET.get("within")
        if within and within not in WINDOWS:
            return f"within: choose one of {', '.join(WINDOWS)}"
        bounds = {}
        for name in ("since", "until"):
            text = request.GET.get(name, "")
            if not text.strip():
                continue
            moment = parse_time(text[:64], end=name == "until")
            if moment is None or len(text) > 64:
                return (
                    f"{name}: enter a date (2026-12-01) or a date and time "
                    "(2026-12-01T18:30 or 2026-12-01 18:30:05)"
                )
            bounds[name] = moment
        if len(bounds) == 2 and bounds["since"] >= bounds["until"]:
            return "until: must be after since"
        return ""

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        within = self.used_parameters.get("within")
        if within in WINDOWS:
            queryset = queryset.filter(
                created_at__gte=timezone.now() - WINDOWS[within][1]
            )
        since = parse_time(self.used_parameters.get("since") or "")
        if since is not None:
            queryset = queryset.filter(created_at__gte=since)
        until = parse_time(self.used_parameters.get("until") or "", end=True)
        if until is not None:
            queryset = queryset.filter(created_at__lt=until)
        return queryset

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        # What the range form must carry along: every other parameter.
        self.hidden = [
            (name, value)
            for name, value in changelist.params.items()
            if name not in self.parameters
        ]
        self.since = self.used_parameters.get("since", "")
        self.until = self.used_parameters.get("until", "")
        within = self.used_parameters.get("within")
        yield {
            "selected": not self.used_parameters,
            "query_string": changelist.get_query_string(remove=list(self.parameters)),
            "display": "any time",
        }
        for key, (label, _) in WINDOWS.items():
            yield {
                "selected": within == key,
                "query_string": changelist.get_query_string(
                    {"within": key}, ["since", "until"]
                ),
                "display": label,
            }


__all__ = [
    "ActorFilter",
    "EnvironmentFilter",
    "TargetTypeFilter",
    "TimeFilter",
    "parse_time",
    "target_type_label",
]
