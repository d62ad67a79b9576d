"""List filters of the flags admin: tags, killed flags and states, live overrides."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from flags.models import Flag

# -- list filters ----------------------------------------------------------------------


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags = {
            tag
            for tags in Flag.objects.values_list("tags", flat=True)
            for tag in tags or []
        }
        return [(tag, tag) for tag in sorted(tags)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        tag = self.value()
        if not tag:
            return queryset
        # Tags are a JSON list; filtered in Python so SQLite and PostgreSQL agree.
        pks = [
            pk for pk, tags in queryset.values_list("pk", "tags") if tag in (tags or [])
        ]
        return queryset.filter(pk__in=pks)


class FlagKilledFilter(admin.SimpleListFilter):
    title = "kill switch"
    parameter_name = "killed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "killed in an environment"), ("no", "not killed anywhere")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        killed = Q(states__killed_at__isnull=False)
        if self.value() == "yes":
            return queryset.filter(pk__in=Flag.objects.filter(killed).values("pk"))
        if self.value() == "no":
            return queryset.exclude(pk__in=Flag.objects.filter(killed).values("pk"))
        return queryset


class StateKilledFilter(admin.SimpleListFilter):
    title = "kill switch"
    parameter_name = "killed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "killed"), ("no", "not killed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(killed_at__isnull=self.value() == "no")
        return queryset


class OverrideLiveFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "live"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "in force"), ("no", "expired"), ("expiring", "has an expiry")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        if self.value() == "no":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "expiring":
            return queryset.filter(expires_at__isnull=False)
        return queryset
