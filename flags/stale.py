"""Stale flags: candidates for archiving (``manage.py flag stale``, the admin).

A flag state is stale after ``days`` days when either

- it has served one variation to everyone for that long: targeting off
  (everyone gets the off variation), or on with no rules, no live
  overrides and a single-variation default (or a split with one arm at
  100%), and neither the state nor an override of it changed since (the
  state's ``updated_at``, the audit log's override events); or
- it has not been evaluated for that long (``FlagUsage``, written by the
  serving processes' usage flush; a flag never evaluated counts from its
  creation).

A flag is listed when every environment considered finds it stale, since
archiving it removes it from all of them. Archived flags are never listed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from controlplane.audit.models import AuditEvent
from flags import engine
from flags.models import Environment, Flag, FlagState, FlagUsage, MerchantOverride

ONE_VARIATION = "one_variation"
NOT_EVALUATED = "not_evaluated"


@dataclass(frozen=True, slots=True)
class StaleState:
    """Why one flag state is stale."""

    environment: str
    reasons: tuple[str, ...]  # ONE_VARIATION and/or NOT_EVALUATED
    variation: str | None  # the one variation served, if that is a reason
    unchanged_since: dt.datetime | None
    last_evaluated_at: dt.datetime | None  # None: never (as far as recorded)

    def describe(self) -> str:
        """Return a one-line explanation, e.g. for the command's output."""
        parts = []
        if ONE_VARIATION in self.reasons:
            since = _date(self.unchanged_since)
            parts.append(f"serves {self.variation!r} to everyone since {since}")
        if NOT_EVALUATED in self.reasons:
            if self.last_evaluated_at is None:
                parts.append("never evaluated")
            else:
                parts.append(f"not evaluated since {_date(self.last_evaluated_at)}")
        return f"{self.environment}: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class StaleFlag:
    flag: Flag
    states: tuple[StaleState, ...]

    @property
    def archive_command(self) -> str:
        return f"manage.py flag archive {self.flag.key}"


def _date(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "?"


def single_variation(state: FlagState, has_overrides: bool) -> str | None:
    """Return the one variation ``state`` serves to everyone, else None."""
    if not state.enabled:
        return state.off_variation
    if state.rules or has_overrides:
        return None
    fallthrough = state.fallthrough or {}
    if "variation" in fallthrough:
        return fallthrough["variation"]
    arms = [arm for arm in fallthrough.get("split", ()) if arm.get("weight")]
    if len(arms) == 1 and arms[0]["weight"] == engine.BUCKETS:
        return arms[0]["variation"]
    return None


def stale_flags(
    *,
    days: int,
    environment: Environment | None = None,
    now: dt.datetime | None = None,
) -> list[StaleFlag]:
    """Return the flags stale for ``days`` days in every environment considered.

    ``environment`` limits the check to one environment. Five queries,
    whatever the number of flags.
    """
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=days)
    states = FlagState.objects.filter(flag__archived=False).select_related(
        "flag", "environment"
    )
    if environment is not None:
        states = states.filter(environment=environment)
    overridden = set(
        MerchantOverride.objects.filter(
            **({"environment": environment} if environment is not None else {})
        )
        .exclude(expires_at__lte=now)
        .values_list("flag_id", "environment_id")
        .distinct()
    )
    used = {
        (row.flag_id, row.environment_id): row.last_evaluated_at
        for row in FlagUsage.objects.all()
    }
    # "flag@env:merchant=variation": an override changed after the cutoff
    recent_overrides = {
        target.split(":", 1)[0]
        for target in AuditEvent.objects.filter(
            target_type="flags.merchantoverride", created_at__gt=cutoff
        ).values_list("target_repr", flat=True)
    }
    by_flag: dict[int, list[StaleState | None]] = {}
    flags: dict[int, Flag] = {}
    for state in states.order_by("flag__key", "environment__sort_order"):
        flags[state.flag_id] = state.flag
        reasons = []
        variation = single_variation(
            state, (state.flag_id, state.environment_id) in overridden
        )
        if (
            variation is not None
            and state.updated_at <= cutoff
            and f"{state.flag.key}@{state.environment.key}" not in recent_overrides
        ):
            reasons.append(ONE_VARIATION)
        last = used.get((state.flag_id, state.environment_id))
        if (last if last is not None else state.flag.created_at) <= cutoff:
            reasons.append(NOT_EVALUATED)
        by_flag.setdefault(state.flag_id, []).append(
            StaleState(
                environment=state.environment.key,
                reasons=tuple(reasons),
                variation=variation if ONE_VARIATION in reasons else None,
                unchanged_since=state.updated_at,
                last_evaluated_at=last,
            )
            if reasons
            else None
        )
    return [
        StaleFlag(flag=flags[flag_id], states=tuple(found))  # type: ignore[arg-type]
        for flag_id, found in by_flag.items()
        if all(item is not None for item in found)
    ]
