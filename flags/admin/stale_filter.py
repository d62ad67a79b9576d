"""The flags list's "stale for" filter (``flags.stale``): archive candidates.

Pick 7, 30 or 90 days to list the flags serving one variation to everyone,
or not evaluated, for that long in every environment; then archive them with
the list's "Archive selected flags" action (``manage.py flag archive KEY``
from a terminal).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from flags.stale import stale_flags

DAYS = (7, 30, 90)


class StaleFlagFilter(admin.SimpleListFilter):
    title = "stale for"
    parameter_name = "stale_days"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(days), f"{days} days") for days in DAYS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value not in {str(days) for days in DAYS}:
            return queryset
        found = stale_flags(days=int(value))
        return queryset.filter(pk__in=[item.flag.pk for item in found])
