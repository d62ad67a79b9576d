"""The provider contract: what every health-check provider implements.

A provider turns a check's ``spec`` into one :class:`Measurement`. It never
decides pass or fail: the check semantics (``canary.health``) do that. A
provider that cannot measure raises :class:`ProviderError`, which the check
records as verdict ``error`` (never ``pass``); a provider that measured
nothing returns ``Measurement(value=None)`` ("no data").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from controlplane.exceptions import InvalidInput


@dataclass(frozen=True)
class Measurement:
    """One measured value with what is needed to explain it.

    ``value`` is None when there was no data. ``detail`` holds the query or
    URL, the raw value(s), units and latency. ``cohorts`` is filled by the
    outcomes provider only: ``{"treatment": {"n", "failures", "error_rate",
    "p50", "p95", "durations": [...]}, "control": {...}}``.
    """

    value: float | None
    samples: int | None = None
    detail: dict = field(default_factory=dict)
    cohorts: dict | None = None
    # Compare mode (outcomes provider): per-merchant windows of the current
    # range, ``{"treatment": {key: window}, "control": {...}}``
    # (canary.baselines), plus ``"previous_control"`` -- the control's
    # windows of the previous phase -- in a 100% phase (its own few control
    # events are stragglers served before the move).
    merchants: dict | None = None

    @property
    def has_data(self) -> bool:
        return self.value is not None


class ProviderError(Exception):
    """The provider failed (timeout, connection refused, bad response, SQL
    error); the check records verdict ``error``, never ``pass``."""

    def __init__(self, message: str, *, detail: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


@dataclass(frozen=True)
class MeasureContext:
    """What a provider may need to know about the rollout it measures."""

    flag_key: str
    environment_key: str
    treatment_variation: str
    since: datetime  # phase start
    until: datetime | None = None
    # Compare mode: measure per-merchant windows (canary.baselines).
    compare: bool = False
    # When set, the treated cohort is these merchants whatever variation
    # they were served (verification after a rollback).
    treated_merchants: tuple[str, ...] | None = None
    # The previous phase's range (a 100% phase only): its control windows
    # stand in for the live control.
    previous_since: datetime | None = None
    previous_until: datetime | None = None
    # Compare mode: the rollout's captured baselines
    # (``Rollout.merchant_baseline``); a quantile check counts each
    # merchant's current events above its baseline quantile.
    baseline: Mapping[str, Any] | None = None
    # Compare mode, a release member: the other active members'
    # ``(flag key, treatment variation)``; the measurement adds who was
    # served each one's treatment in the range (``siblings`` of the windows).
    siblings: tuple[tuple[str, str], ...] = ()
    # Compare mode: merchants left out of both cohorts (a release's pilots
    # in a split phase: treated by override, not by bucketing).
    exclude_merchants: tuple[str, ...] = ()
    # Compare mode, a release member: ``(flag key, treatment variation)`` of
    # the members rolled back in this phase; the merchants served one's
    # treatment in the range are left out of both cohorts (they carried
    # that feature's harm in both arms, in expectation only).
    exclude_treated: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class Provider(Protocol):
    """A health-check provider: validate a spec, then measure it."""

    name: str

    def validate_spec(self, spec: dict) -> dict:
        """Return the normalised spec; raise ``InvalidInput`` with field
        ``spec.<name>`` for a bad one."""
        ...

    def measure(
        self, spec: dict, ctx: MeasureContext, *, timeout: float
    ) -> Measurement:
        """Measure once within ``timeout`` seconds; raise ``ProviderError``."""
        ...


# Helpers shared by the providers' validate_spec().


def require_mapping(spec: Any) -> dict:
    """Return ``spec`` if it is a dict, else raise ``InvalidInput``."""
    if not isinstance(spec, dict):
        raise InvalidInput("spec must be an object", field="spec")
    return spec


def reject_unknown(spec: dict, allowed: set[str]) -> None:
    """Raise ``InvalidInput`` for the first key not in ``allowed``."""
    for key in spec:
        if key not in allowed:
            raise InvalidInput(
                f"unknown field (allowed: {', '.join(sorted(allowed))})",
                field=f"spec.{key}",
            )


def require_str(spec: dict, name: str, *, default: str | None = None) -> str:
    """Return the non-empty string ``spec[name]`` (or ``default``)."""
    value = spec.get(name, default)
    if value is None:
        raise InvalidInput("this field is required", field=f"spec.{name}")
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("must be a non-empty string", field=f"spec.{name}")
    return value.strip()


def optional_number(
    spec: dict, name: str, *, minimum: float | None = None, integer: bool = False
) -> float | int | None:
    """Return ``spec[name]`` as a number (None when absent)."""
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput("must be a number", field=f"spec.{name}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput("must be a finite number", field=f"spec.{name}")
    if integer and int(value) != value:
        raise InvalidInput("must be an integer", field=f"spec.{name}")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"must be at least {minimum:g}", field=f"spec.{name}")
    return int(value) if integer else value


def validate_url(spec: dict, name: str, value: str) -> str:
    """Return ``value`` if it is an http(s) URL with a host."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise InvalidInput("must be an http:// or https:// URL", field=f"spec.{name}")
    return value


def finite_or_none(value: float) -> float | None:
    """Return ``value``, or None for NaN (no data); infinities are kept."""
    return None if math.isnan(value) else value
