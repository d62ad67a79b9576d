"""What ``manage.py flag override add|remove`` prints after the change.

Read back from the database: the override now saved, what is in force for
the merchant (the engine's answer with its reason and level), the
merchant's recent outcome events of the flag in the environment (last 7
days: events, success rate, the latest failures with their time), and its
audit history for the flag. Read-only.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.apps import apps
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.module_loading import import_string
from rich.table import Table

from controlplane.audit.management.commands.audit import parse_duration, parse_instant
from controlplane.audit.models import AuditEvent
from controlplane.conf import setting
from controlplane.management.commands._output import OutputCommand
from flags import engine, mappers, selectors
from flags.models import Environment, Flag, Merchant

# Looked up by name: flags imports nothing from the apps above it
# (tests/test_layers.py); without the canary app there are no outcome events.
_OUTCOME_HISTORY = "canary.merchant_history.merchant_outcome_history"


def format_time(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _ago(value: dt.datetime, now: dt.datetime) -> str:
    seconds = max(0, int((now - value).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


class OverrideOutput(OutputCommand):
    """The read-back of ``flag override add|remove``."""

    def _overrides_table(self, title: str, overrides: list) -> Table:
        now = timezone.now()
        table = self.table(
            title,
            "environment",
            "merchant",
            "variation",
            "expires",
            "note",
            "by",
            "live",
        )
        for override in overrides:
            table.add_row(
                override.environment.key,
                override.merchant.key,
                override.variation,
                format_time(override.expires_at),
                override.note or "",
                override.created_by or "",
                "yes" if override.is_live(now) else "expired",
            )
        return table

    def _parse_expires(self, text: str | None) -> dt.datetime | None:
        if not text:
            return None
        span = parse_duration(text)
        if span is not None:
            if span.total_seconds() <= 0:
                raise CommandError(f"--expires: {text!r} must be in the future")
            return timezone.now() + span
        expires = parse_instant(text, option="--expires")
        if expires <= timezone.now():
            raise CommandError(f"--expires: {format_time(expires)} is in the past")
        return expires

    def _warn(self, message: str) -> None:
        self.stderr.write(f"warning: {message}", self.style.WARNING)

    def _print_in_force(
        self, flag: Flag, environment: Environment, merchant: Merchant
    ) -> None:
        """Read back from the database and say what now applies to the merchant."""
        override = selectors.override_list(
            flag=flag, environment=environment, merchant=merchant
        ).first()
        state = selectors.flag_state_get(flag=flag, environment=environment)
        ruleset = mappers.ruleset_compile(environment)
        answer = engine.evaluate(ruleset, flag.key, {engine.MERCHANT: merchant.key})
        if override is not None:
            expires = (
                f", expires {format_time(override.expires_at)}"
                if override.expires_at
                else ""
            )
            note = f", note {override.note!r}" if override.note else ""
            self.stdout.write(
                f"Override saved: {flag.key} in {environment.key} for {merchant.key} -> "
                f"{override.variation}{expires}{note}"
            )
        self.stdout.write(
            f"In force for {merchant.key}: {flag.key} = {format_value(answer.value)} "
            f"(variation {answer.variation}, reason {answer.reason}, level {answer.level}, "
            f"ruleset version {answer.version})"
        )
        if not state.enabled:
            how = "killed" if state.killed_at else "disabled"
            self._warn(
                f"{flag.key} is {how} in {environment.key}: the override has no effect until "
                f"it is {'restored' if state.killed_at else 'enabled'}"
            )
        self._print_outcomes(flag, environment, merchant)
        self._print_history(flag, merchant)

    def _print_outcomes(
        self, flag: Flag, environment: Environment, merchant: Merchant
    ) -> None:
        """Print the merchant's outcome events of the flag, last 7 days."""
        if not apps.is_installed("canary"):
            return
        history = import_string(_OUTCOME_HISTORY)(
            flag_key=flag.key, environment=environment, merchant_key=merchant.key
        )
        where = f"{merchant.key} for {flag.key} in {environment.key}"
        if not history.events:
            self.stdout.write(
                f"Outcomes of {where}, last {history.days} days: no events."
            )
            return
        last = (
            f"; last event {format_time(history.last_event_at)} "
            f"({_ago(history.last_event_at, history.until)})"
        )
        self.stdout.write(
            f"Outcomes of {where}, last {history.days} days: {history.events} "
            f"event{'s' if history.events != 1 else ''}, "
            f"{history.success_rate:.1%} success ({history.successes} succeeded, "
            f"{history.failures} failed){last}"
        )
        if not history.last_failures:
            return
        failures = self.table(
            f"Last failures of {merchant.key} (newest first, "
            f"{len(history.last_failures)} of {history.failures})",
            "time",
            "ago",
            "variation",
            "name",
            "duration ms",
        )
        for failure in history.last_failures:
            failures.add_row(
                format_time(failure.occurred_at),
                _ago(failure.occurred_at, history.until),
                failure.variation,
                failure.name or "-",
                "-" if failure.duration_ms is None else f"{failure.duration_ms:.0f}",
            )
        self.print(failures)

    def _print_history(self, flag: Flag, merchant: Merchant) -> None:
        limit = int(setting("AUDIT_HISTORY_LIMIT"))
        events = list(
            AuditEvent.objects.filter(
                details__merchant=merchant.key, details__flag=flag.key
            ).order_by("-id")[:limit]
        )
        if not events:
            self.stdout.write(f"No audit history of {merchant.key} for {flag.key}.")
            return
        table = self.table(
            f"Recent history of {merchant.key} for {flag.key} (newest first, up to {limit})",
            "event",
            "time",
            "actor",
            "action",
            "environment",
            "change",
        )
        for event in events:
            table.add_row(
                str(event.pk),
                format_time(event.created_at),
                f"{event.actor_type}:{event.actor_name}",
                event.action,
                event.environment,
                self._change_summary(event),
            )
        self.print(table)

    @staticmethod
    def _change_summary(event: AuditEvent) -> str:
        before = (
            (event.before or {}).get("variation")
            if isinstance(event.before, dict)
            else None
        )
        after = (
            (event.after or {}).get("variation")
            if isinstance(event.after, dict)
            else None
        )
        if before and after:
            return f"{before} -> {after}"
        if after:
            return f"-> {after}"
        if before:
            return f"{before} -> (removed)"
        return ""
