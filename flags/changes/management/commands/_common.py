"""What the ``change`` and ``schedule`` commands share: parsing, output."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from controlplane.api.input import UntrustedInput, check_json_value, check_text
from controlplane.audit.management.commands.audit import parse_duration, parse_instant
from flags.changes.models import AuthoredChange


def parse_arguments(pairs: list[str], raw_json: str | None) -> dict[str, Any]:
    """Return the arguments from ``KEY=VALUE`` pairs and/or ``--json``.

    A value is read as JSON when it parses (``percentage=10``,
    ``enabled=true``), else taken as text (``flag=checkout_theme``).
    """
    arguments: dict[str, Any] = {}
    if raw_json:
        try:
            loaded = json.loads(raw_json)
        except ValueError:
            raise CommandError("--json: not valid JSON") from None
        if not isinstance(loaded, dict):
            raise CommandError("--json: must be a JSON object")
        arguments.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"argument {pair!r}: write it as KEY=VALUE")
        try:
            arguments[key] = json.loads(value)
        except ValueError:
            arguments[key] = value
    try:
        check_json_value(arguments, field="arguments", allow_nul=False)
    except UntrustedInput as exc:
        raise CommandError(str(exc)) from None
    return arguments


def parse_when(text: str) -> dt.datetime:
    """Return the time of ``--at``: ISO 8601 or a span from now (``10m``)."""
    check_text(text, field="--at")
    try:
        span = parse_duration(text)
        if span is not None:
            return timezone.now() + span
    except OverflowError:
        raise CommandError(f"--at: {text!r} is too far ahead") from None
    return parse_instant(text, option="--at")


def when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return timezone.localtime(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def change_header(extra: str = "") -> str:
    """Return the header line of ``change_line`` rows."""
    return (
        f"{'id':>5}  {'status':<9}  {'environment':<12} {'operation':<22} "
        f"{'target':<28} author{extra}"
    )


def change_line(change: AuthoredChange, extra: str = "") -> str:
    return (
        f"{change.pk:>5}  {change.status:<9}  {change.environment.key:<12} "
        f"{change.operation:<22} {change.target:<28} by {change.author_name}"
        f"{extra}{'  - ' + change.result if change.result else ''}"
    )
