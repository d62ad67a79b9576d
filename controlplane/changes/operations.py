"""The operations a pending change can hold, keyed by name.

Each operation checks its JSON arguments (``validate``), says which
environment, audit chains and flag-state fields it touches, snapshots those
fields for the stale-version rule, and applies itself by calling the
existing service (``apply``): no business rule is repeated here.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.api.input import UntrustedInput, check_json_value
from controlplane.audit.services import environment_chain
from controlplane.exceptions import InvalidInput, NotFound
from flags import engine, selectors, services, validation
from flags.models import Environment, Flag, FlagState, MerchantOverride

# Kinds of change an approval policy counts separately.
FLAG_STATE, OVERRIDE, KILL, ROLLOUT_START = (
    "flag_state",
    "override",
    "kill",
    "rollout_start",
)
KINDS = (FLAG_STATE, OVERRIDE, KILL, ROLLOUT_START)
_STATE_FIELDS = ("enabled", "off_variation", "rules", "fallthrough", "bucket_by")
_MAX_TEXT = 500


@dataclass(frozen=True, slots=True)
class Operation:
    """One kind of change, applied later by the service it names."""

    name: str
    kind: str
    permission: str  # the Django permission the direct path needs
    summary: str
    check: Callable[[dict], dict]  # raw arguments -> normalized, or raise
    run: Callable[..., Any]  # (actor, arguments, expected_version) -> result
    # Flag-state fields this change sets (the stale-version rule compares
    # them); None: decided by the arguments (flag_state.update).
    fields: tuple[str, ...] | None = ()
    # False: never refused as stale; the service alone decides (a kill is
    # idempotent, a restore refuses a state that is not killed).
    checks_stale: bool = True
    # False: apply() opens network calls (a rollout's preflight) and must
    # run outside any transaction.
    atomic: bool = True

    def validate(self, arguments: Any) -> dict:
        """Return the normalized arguments; raise InvalidInput naming the field."""
        if not isinstance(arguments, dict):
            raise InvalidInput("arguments: must be an object", field="arguments")
        try:
            check_json_value(arguments, field="arguments", allow_nul=False)
        except UntrustedInput as exc:
            raise InvalidInput(str(exc), field=exc.field) from None
        try:
            return self.check(arguments)
        except NotFound as exc:
            field = f"arguments.{exc.field}" if exc.field else "arguments"
            raise InvalidInput(f"{field}: {exc.message}", field=field) from None

    def compared_fields(self, arguments: dict) -> tuple[str, ...]:
        if self.fields is not None:
            return self.fields
        changed = tuple(name for name in _STATE_FIELDS if name in arguments)
        return (*changed, "killed") if "enabled" in arguments else changed

    def apply(
        self, *, actor: Any, arguments: dict, expected_version: int | None = None
    ) -> Any:
        """Apply the change through its service; raise what the service raises."""
        return self.run(actor, arguments, expected_version)


# -- argument checks --------------------------------------------------------------


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


def _check_flag_env(arguments: dict) -> dict:
    _only(arguments, "flag", "environment")
    _flag_env(arguments)
    return {"flag": arguments["flag"], "environment": arguments["environment"]}


def _check_kill(arguments: dict) -> dict:
    _only(arguments, "flag", "environment", "reason")
    _flag_env(arguments)
    return {
        "flag": arguments["flag"],
        "environment": arguments["environment"],
        "reason": _text(arguments, "reason", required=False, limit=_MAX_TEXT),
    }


def _check_update(arguments: dict) -> dict:
    _only(arguments, "flag", "environment", *_STATE_FIELDS)
    flag, _, _ = _flag_env(arguments)
    out = {"flag": arguments["flag"], "environment": arguments["environment"]}
    if not any(name in arguments for name in _STATE_FIELDS):
        raise InvalidInput(
            f"arguments: name at least one of {', '.join(_STATE_FIELDS)}",
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


def _check_percentage(arguments: dict) -> dict:
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


def _check_serve(arguments: dict) -> dict:
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


def _check_override_set(arguments: dict) -> dict:
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


def _check_override_remove(arguments: dict) -> dict:
    _only(arguments, "flag", "environment", "merchant", "reason")
    _flag_env(arguments)
    selectors.merchant_get(_text(arguments, "merchant", limit=128))
    return {
        "flag": arguments["flag"],
        "environment": arguments["environment"],
        "merchant": arguments["merchant"],
        "reason": _text(arguments, "reason", required=False, limit=_MAX_TEXT),
    }


def _check_rollout_start(arguments: dict) -> dict:
    from canary.services import rollout_get

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


# -- appliers -----------------------------------------------------------------------


def _objects(arguments: dict) -> dict[str, Any]:
    return {
        "flag": selectors.flag_get(arguments["flag"]),
        "environment": selectors.environment_get(arguments["environment"]),
    }


def _update(actor: Any, arguments: dict, version: int | None) -> Any:
    fields = {k: arguments[k] for k in _STATE_FIELDS if k in arguments}
    return services.flag_state_update(
        actor=actor, expected_version=version, **_objects(arguments), **fields
    )


def _enabled(value: bool) -> Callable[..., Any]:
    def run(actor: Any, arguments: dict, version: int | None) -> Any:
        return services.flag_state_set_enabled(
            actor=actor,
            enabled=value,
            expected_version=version,
            **_objects(arguments),
        )

    return run


def _set_percentage(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.flag_state_set_percentage(
        actor=actor,
        percentage=arguments["percentage"],
        treatment=arguments.get("treatment"),
        control=arguments.get("control"),
        expected_version=version,
        **_objects(arguments),
    )


def _serve(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.flag_state_serve(
        actor=actor,
        variation=arguments["variation"],
        expected_version=version,
        **_objects(arguments),
    )


def _kill(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.flag_state_kill(
        actor=actor, reason=arguments.get("reason", ""), **_objects(arguments)
    )


def _restore(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.flag_state_restore(
        actor=actor, reason=arguments.get("reason", ""), **_objects(arguments)
    )


def _override_set(actor: Any, arguments: dict, version: int | None) -> Any:
    expires = arguments.get("expires_at")
    return services.override_set(
        actor=actor,
        merchant=selectors.merchant_get(arguments["merchant"]),
        variation=arguments["variation"],
        note=arguments.get("note", ""),
        expires_at=dt.datetime.fromisoformat(expires) if expires else None,
        **_objects(arguments),
    )


def _override_remove(actor: Any, arguments: dict, version: int | None) -> Any:
    return services.override_remove(
        actor=actor,
        merchant=selectors.merchant_get(arguments["merchant"]),
        reason=arguments.get("reason", ""),
        **_objects(arguments),
    )


def _rollout_start(actor: Any, arguments: dict, version: int | None) -> Any:
    from canary.services import rollout_start_checked

    rollout, _ = rollout_start_checked(
        rollout_id=arguments["rollout"], actor=actor, reason=arguments.get("reason", "")
    )
    return rollout


def _op(
    name: str, kind: str, permission: str, summary: str, check, run, **kw
) -> Operation:
    return Operation(name, kind, permission, summary, check, run, **kw)


_STATE_PERM = "flags.change_flagstate"
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        _op(
            "flag_state.update",
            FLAG_STATE,
            _STATE_PERM,
            "replace serving fields",
            _check_update,
            _update,
            fields=None,
        ),
        _op(
            "flag_state.enable",
            FLAG_STATE,
            _STATE_PERM,
            "turn targeting on",
            _check_flag_env,
            _enabled(True),
            fields=("enabled", "killed"),
        ),
        _op(
            "flag_state.disable",
            FLAG_STATE,
            _STATE_PERM,
            "turn targeting off",
            _check_flag_env,
            _enabled(False),
            fields=("enabled", "killed"),
        ),
        _op(
            "flag_state.percentage",
            FLAG_STATE,
            _STATE_PERM,
            "set the rollout percentage",
            _check_percentage,
            _set_percentage,
            fields=("fallthrough",),
        ),
        _op(
            "flag_state.serve",
            FLAG_STATE,
            _STATE_PERM,
            "serve one variation by default",
            _check_serve,
            _serve,
            fields=("fallthrough",),
        ),
        # An emergency stop is never refused as stale (as the service says).
        _op(
            "flag_state.kill",
            KILL,
            _STATE_PERM,
            "kill",
            _check_kill,
            _kill,
            fields=("enabled", "killed"),
            checks_stale=False,
        ),
        _op(
            "flag_state.restore",
            KILL,
            _STATE_PERM,
            "restore after a kill",
            _check_kill,
            _restore,
            fields=("enabled", "killed"),
            checks_stale=False,
        ),
        _op(
            "override.set",
            OVERRIDE,
            "flags.change_merchantoverride",
            "set a merchant override",
            _check_override_set,
            _override_set,
            fields=("override",),
        ),
        _op(
            "override.remove",
            OVERRIDE,
            "flags.delete_merchantoverride",
            "remove a merchant override",
            _check_override_remove,
            _override_remove,
            fields=("override",),
        ),
        # The rollout itself refuses a start that is no longer a draft.
        _op(
            "rollout.start",
            ROLLOUT_START,
            "canary.change_rollout",
            "start a rollout",
            _check_rollout_start,
            _rollout_start,
            atomic=False,
            checks_stale=False,
        ),
    )
}


def operation_get(name: Any) -> Operation:
    """Return the operation ``name``; raise InvalidInput for an unknown one."""
    if not isinstance(name, str) or name not in OPERATIONS:
        shown = name if isinstance(name, str) and len(name) <= 64 else "this"
        raise InvalidInput(
            f"operation: unknown operation {shown!r} "
            f"(known: {', '.join(sorted(OPERATIONS))})",
            field="operation",
        )
    return OPERATIONS[name]


# -- where a change lands, and what it was based on ---------------------------------


def environment_of(operation: Operation, arguments: dict) -> Environment:
    if operation.kind == ROLLOUT_START:
        from canary.models import Rollout

        return (
            Rollout.objects.select_related("environment")
            .get(pk=arguments["rollout"])
            .environment
        )
    return selectors.environment_get(arguments["environment"])


def target_of(operation: Operation, arguments: dict) -> str:
    if operation.kind == ROLLOUT_START:
        return f"rollout {arguments['rollout']}"
    if operation.kind == OVERRIDE:
        return f"{arguments['flag']} for {arguments['merchant']}"
    return str(arguments["flag"])


def chains_of(operation: Operation, environment: Environment) -> list[str] | None:
    """Return the audit chains applying ``operation`` appends to (None: any)."""
    # canary services lock every chain (audited_transaction() without chains)
    return (
        None
        if operation.kind == ROLLOUT_START
        else [environment_chain(environment.key)]
    )


def observed(
    operation: Operation, arguments: dict, *, lock: bool = False
) -> tuple[int | None, dict[str, Any]]:
    """Return the flag state's version and the values of the fields it sets.

    With ``lock``, the state row is locked first (the caller's transaction):
    the comparison then holds until the change is applied.
    """
    if operation.kind == ROLLOUT_START:
        return None, {}
    flag = selectors.flag_get(arguments["flag"])
    environment = selectors.environment_get(arguments["environment"])
    states = FlagState.objects.filter(flag=flag, environment=environment)
    state = (states.select_for_update() if lock else states).get()
    snapshot = services.state_snapshot(state)
    values: dict[str, Any] = {
        name: snapshot[name]
        for name in (*_STATE_FIELDS, "killed")
        if name in operation.compared_fields(arguments)
    }
    if operation.kind == OVERRIDE:
        override = MerchantOverride.objects.filter(
            flag=flag, environment=environment, merchant__key=arguments["merchant"]
        ).first()
        values["override"] = (
            None
            if override is None
            else {
                "variation": override.variation,
                "expires_at": override.expires_at.isoformat()
                if override.expires_at
                else None,
            }
        )
    return state.version, values


def stale_fields(
    operation: Operation, arguments: dict, expected: dict
) -> tuple[list[str], int | None]:
    """Return the fields it sets that differ from ``expected`` (state locked)."""
    version, now = observed(operation, arguments, lock=True)
    if not operation.checks_stale:
        return [], version
    changed = [name for name in sorted(now) if expected.get(name) != now[name]]
    return changed, version
