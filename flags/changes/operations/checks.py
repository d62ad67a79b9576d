"""Argument checks of the operations: raw JSON in, normalized arguments out."""

from __future__ import annotations

import math
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.exceptions import InvalidInput
from flags import engine, selectors, services, validation
from flags.models import Environment, Flag, FlagState

STATE_FIELDS = ("enabled", "off_variation", "rules", "fallthrough", "bucket_by")
_MAX_TEXT = 500


def _text(
    arguments: dict, name: str, *, required: bool = True, limit: int = 200
) -> str:
    value = arguments.get(name, None if required else "")
    if value is None and not required:
        value = ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(
            f"arguments.{name}: {'is required' if required else 'must be text'}",
            field=f"arguments.{name}",
        )
    if len(value) > limit:
        raise InvalidInput(
            f"arguments.{name}: at most {limit} characters",
            field=f"arguments.{name}",
        )
    return value


def _only(arguments: dict, *allowed: str) -> None:
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"arguments.{unknown[0]}: unknown argument (allowed: {', '.join(allowed)})",
            field=f"arguments.{unknown[0]}",
        )


def _flag_env(arguments: dict) -> tuple[Flag, Environment, FlagState]:
    flag = selectors.flag_get(_text(arguments, "flag"))
    environment = selectors.environment_get(_text(arguments, "environment"))
    return (
        flag,
        environment,
        selectors.flag_state_get(flag=flag, environment=environment),
    )


def _invalid(exc: engine.RulesetError) -> InvalidInput:
    field = f"arguments.{exc.field}"
    return InvalidInput(f"{field}: {exc.message}", field=field)


def check_flag_env(arguments: dict) -> dict:
    _only(arguments, "flag", "environment")
    _flag_env(arguments)
    return {"flag": arguments["flag"], "environment": arguments["environment"]}


def check_kill(arguments: dict) -> dict:
    _only(arguments, "flag", "environment", "reason")
    _flag_env(arguments)
    return {
        "flag": arguments["flag"],
        "environment": arguments["environment"],
        "reason": _text(arguments, "reason", required=False, limit=_MAX_TEXT),
    }


def check_update(arguments: dict) -> dict:
    _only(arguments, "flag", "environment", *STATE_FIELDS)
    flag, _, _ = _flag_env(arguments)
    out = {"flag": arguments["flag"], "environment": arguments["environment"]}
    if not any(name in arguments for name in STATE_FIELDS):
        raise InvalidInput(
            f"arguments: name at least one of {', '.join(STATE_FIELDS)}",
            field="arguments",
        )
    if "enabled" in arguments:
        if not isinstance(arguments["enabled"], bool):
            raise InvalidInput(
                "arguments.enabled: must be true or false", field="arguments.enabled"
            )
        out["enabled"] = arguments["enabled"]
    keys = flag.variation_keys
    if "off_variation" in arguments:
        out["off_variation"] = _text(arguments, "off_variation", limit=100)
        if out["off_variation"] not in keys:
            raise InvalidInput(
                f"arguments.off_variation: unknown variation {out['off_variation']!r}",
                field="arguments.off_variation",
            )
    if "bucket_by" in arguments:
        out["bucket_by"] = _text(arguments, "bucket_by", limit=64)
    try:
        if "fallthrough" in arguments:
            out["fallthrough"] = validation.validate_serve(
                arguments["fallthrough"], keys, "fallthrough"
            )
        if "rules" in arguments:
            # segments are checked again when the change applies
            out["rules"] = arguments["rules"]
            validation.validate_rules(arguments["rules"], keys, _segments(arguments))
    except engine.RulesetError as exc:
        raise _invalid(exc) from None
    return out


def _segments(arguments: dict) -> list[str]:
    from flags.models import Segment

    return list(Segment.objects.values_list("key", flat=True))


def _percentage(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(
            "arguments.percentage: must be a number", field="arguments.percentage"
        )
    if not math.isfinite(float(value)) or not 0 <= value <= 100:
        raise InvalidInput(
            "arguments.percentage: must be between 0 and 100",
            field="arguments.percentage",
        )
    return float(value)


def check_percentage(arguments: dict) -> dict:
    _only(arguments, "flag", "environment", "percentage", "treatment", "control")
    flag, _, _ = _flag_env(arguments)
    out = {
        "flag": arguments["flag"],
        "environment": arguments["environment"],
        "percentage": _percentage(arguments.get("percentage")),
        "treatment": _text(arguments, "treatment", required=False, limit=100) or None,
        "control": _text(arguments, "control", required=False, limit=100) or None,
    }
    try:
        services.percentage_split(
            flag, out["percentage"], out["treatment"], out["control"]
        )
    except InvalidInput as exc:
        field = f"arguments.{exc.field}"
        raise InvalidInput(f"arguments.{exc.message}", field=field) from None
    return out


def check_serve(arguments: dict) -> dict:
    _only(arguments, "flag", "environment", "variation")
    flag, _, _ = _flag_env(arguments)
    variation = _text(arguments, "variation", limit=100)
    if variation not in flag.variation_keys:
        raise InvalidInput(
            f"arguments.variation: unknown variation {variation!r}",
            field="arguments.variation",
        )
    return {
        "flag": arguments["flag"],
        "environment": arguments["environment"],
        "variation": variation,
    }


def _expires(value: Any) -> str | None:
    if value in (None, ""):
        return None
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None or timezone.is_naive(parsed):
        raise InvalidInput(
            "arguments.expires_at: must be an ISO 8601 time with a time zone",
            field="arguments.expires_at",
        )
    if parsed <= timezone.now():
        raise InvalidInput(
            "arguments.expires_at: must be in the future",
            field="arguments.expires_at",
        )
    return parsed.isoformat()


def check_override_set(arguments: dict) -> dict:
    _only(
        arguments, "flag", "environment", "merchant", "variation", "note", "expires_at"
    )
    flag, _, _ = _flag_env(arguments)
    selectors.merchant_get(_text(arguments, "merchant", limit=128))
    variation = _text(arguments, "variation", limit=100)
    if variation not in flag.variation_keys:
        raise InvalidInput(
            f"arguments.variation: {variation!r} is not a variation of {flag.key}",
            field="arguments.variation",
        )
    return {
        "flag": arguments["flag"],
        "environment": arguments["environment"],
        "merchant": arguments["merchant"],
        "variation": variation,
        "note": _text(arguments, "note", required=False, limit=_MAX_TEXT),
        "expires_at": _expires(arguments.get("expires_at")),
    }


def check_override_remove(arguments: dict) -> dict:
    _only(arguments, "flag", "environment", "merchant", "reason")
    _flag_env(arguments)
    selectors.merchant_get(_text(arguments, "merchant", limit=128))
    return {
        "flag": arguments["flag"],
        "environment": arguments["environment"],
        "merchant": arguments["merchant"],
        "reason": _text(arguments, "reason", required=False, limit=_MAX_TEXT),
    }


def check_rollout_start(arguments: dict) -> dict:
    from flags.changes.rollouts import rollout_get

    _only(arguments, "rollout", "reason")
    raw = arguments.get("rollout")
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw < 2**53:
        raise InvalidInput(
            "arguments.rollout: must be a rollout id", field="arguments.rollout"
        )
    rollout = rollout_get(raw)
    return {
        "rollout": rollout.pk,
        "reason": _text(arguments, "reason", required=False, limit=_MAX_TEXT),
    }


def check_release_start(arguments: dict) -> dict:
    from flags.changes.rollouts import release_get

    _only(arguments, "release", "reason")
    raw = arguments.get("release")
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw < 2**53:
        raise InvalidInput(
            "arguments.release: must be a release id", field="arguments.release"
        )
    release = release_get(raw)
    return {
        "release": release.pk,
        "reason": _text(arguments, "reason", required=False, limit=_MAX_TEXT),
    }
