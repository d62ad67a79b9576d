"""The operations a pending change can hold, keyed by name.

Each operation checks its JSON arguments (``validate``), says which
environment, audit chains and flag-state fields it touches, snapshots those
fields for the stale-version rule, and applies itself by calling the
existing service (``apply``): no business rule is repeated here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.api.input import UntrustedInput, check_json_value
from controlplane.audit.services import environment_chain
from controlplane.exceptions import InvalidInput, NotFound
from flags import selectors, services
from flags.changes.operations import appliers, checks
from flags.changes.operations.checks import STATE_FIELDS
from flags.models import Environment, FlagState, MerchantOverride

# Kinds of change an approval policy counts separately.
FLAG_STATE, OVERRIDE, KILL, ROLLOUT_START = (
    "flag_state",
    "override",
    "kill",
    "rollout_start",
)
KINDS = (FLAG_STATE, OVERRIDE, KILL, ROLLOUT_START)


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
        changed = tuple(name for name in STATE_FIELDS if name in arguments)
        return (*changed, "killed") if "enabled" in arguments else changed

    def apply(
        self, *, actor: Any, arguments: dict, expected_version: int | None = None
    ) -> Any:
        """Apply the change through its service; raise what the service raises."""
        return self.run(actor, arguments, expected_version)


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
            checks.check_update,
            appliers.apply_update,
            fields=None,
        ),
        _op(
            "flag_state.enable",
            FLAG_STATE,
            _STATE_PERM,
            "turn targeting on",
            checks.check_flag_env,
            appliers.apply_enabled(True),
            fields=("enabled", "killed"),
        ),
        _op(
            "flag_state.disable",
            FLAG_STATE,
            _STATE_PERM,
            "turn targeting off",
            checks.check_flag_env,
            appliers.apply_enabled(False),
            fields=("enabled", "killed"),
        ),
        _op(
            "flag_state.percentage",
            FLAG_STATE,
            _STATE_PERM,
            "set the rollout percentage",
            checks.check_percentage,
            appliers.apply_set_percentage,
            fields=("fallthrough",),
        ),
        _op(
            "flag_state.serve",
            FLAG_STATE,
            _STATE_PERM,
            "serve one variation by default",
            checks.check_serve,
            appliers.apply_serve,
            fields=("fallthrough",),
        ),
        # An emergency stop is never refused as stale (as the service says).
        _op(
            "flag_state.kill",
            KILL,
            _STATE_PERM,
            "kill",
            checks.check_kill,
            appliers.apply_kill,
            fields=("enabled", "killed"),
            checks_stale=False,
        ),
        _op(
            "flag_state.restore",
            KILL,
            _STATE_PERM,
            "restore after a kill",
            checks.check_kill,
            appliers.apply_restore,
            fields=("enabled", "killed"),
            checks_stale=False,
        ),
        _op(
            "override.set",
            OVERRIDE,
            "flags.change_merchantoverride",
            "set a merchant override",
            checks.check_override_set,
            appliers.apply_override_set,
            fields=("override",),
        ),
        _op(
            "override.remove",
            OVERRIDE,
            "flags.delete_merchantoverride",
            "remove a merchant override",
            checks.check_override_remove,
            appliers.apply_override_remove,
            fields=("override",),
        ),
        # The rollout itself refuses a start that is no longer a draft.
        _op(
            "rollout.start",
            ROLLOUT_START,
            "canary.change_rollout",
            "start a rollout",
            checks.check_rollout_start,
            appliers.apply_rollout_start,
            atomic=False,
            checks_stale=False,
        ),
        # A release start is a start of every member rollout: the policy
        # counts it as a rollout start; the release refuses a repeat.
        _op(
            "release.start",
            ROLLOUT_START,
            "canary.change_release",
            "start a release",
            checks.check_release_start,
            appliers.apply_release_start,
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
        from flags.changes.rollouts import target_get

        return target_get(operation.name, arguments).environment
    return selectors.environment_get(arguments["environment"])


def target_of(operation: Operation, arguments: dict) -> str:
    if operation.name == "release.start":
        return f"release {arguments['release']}"
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
        for name in (*STATE_FIELDS, "killed")
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
