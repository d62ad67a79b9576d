"""Level 1: put a flag back as captured (or kill it) through the flag services."""

from __future__ import annotations

from typing import Any

from rollback.actuators.base import ActuatorError, StepContext

_COMPARED = ("enabled", "off_variation", "rules", "fallthrough", "bucket_by", "killed")


def _load(params: dict[str, Any]):
    from flags.models import Environment, Flag, FlagState

    try:
        flag = Flag.objects.get(key=params["flag"])
        environment = Environment.objects.get(key=params["environment"])
        state = FlagState.objects.get(flag=flag, environment=environment)
    except (Flag.DoesNotExist, Environment.DoesNotExist, FlagState.DoesNotExist):
        raise ActuatorError(
            f"flag {params.get('flag')!r} in {params.get('environment')!r} does not exist",
            retryable=False,
        ) from None
    return flag, environment, state


def _extra_overrides(flag, environment, params: dict[str, Any]) -> list:
    """Return overrides added since the capture (pilot merchants to remove)."""
    from django.utils.dateparse import parse_datetime

    from flags.models import MerchantOverride

    kept, captured_at = params.get("overrides"), params.get("captured_at")
    qs = MerchantOverride.objects.select_related("merchant").filter(
        flag=flag, environment=environment
    )
    if kept is not None:
        qs = qs.exclude(merchant__key__in=kept)
    elif captured_at:
        qs = qs.filter(created_at__gt=parse_datetime(captured_at))
    else:
        return []
    return list(qs.order_by("merchant__key"))


def _state_matches(state, snapshot: dict[str, Any]) -> bool:
    from flags.services import state_snapshot

    current = state_snapshot(state)
    return all(current.get(k) == snapshot.get(k, current.get(k)) for k in _COMPARED)


class FlagToggleActuator:
    """Restore a captured flag state, drop pilot overrides, or kill the flag.

    params: {flag, environment, snapshot (a state_snapshot, or null = kill),
    overrides (merchant keys that had overrides at capture), captured_at
    (without that list: remove overrides created after this time)}; neither =
    keep every override.
    """

    kind = "flag_toggle"

    def timeout(self, params: dict[str, Any]) -> float:
        # A few short transactions: with the grace the lease stays well
        # under 30 s, so a worker that died here is replaced quickly.
        return 10.0

    def heartbeats(self, params: dict[str, Any]) -> bool:
        return False  # in-process work: the lease is timeout + grace

    def plan(self, params: dict[str, Any]) -> str:
        where = f"{params.get('flag')} in {params.get('environment')}"
        if params.get("snapshot") is None:
            return f"kill flag {where} (everyone gets the off variation)"
        snap = params["snapshot"]
        text = (
            f"restore flag {where} to its captured state (enabled={snap.get('enabled')}"
        )
        text += f", fallthrough={snap.get('fallthrough')})"
        if params.get("overrides") is not None:
            text += f"; remove overrides not in {sorted(params['overrides'])}"
        return text

    def verify(self, params: dict[str, Any]) -> bool:
        flag, environment, state = _load(params)
        snapshot = params.get("snapshot")
        if snapshot is None:
            return not state.enabled
        return _state_matches(state, snapshot) and not _extra_overrides(
            flag, environment, params
        )

    def execute(self, params: dict[str, Any], ctx: StepContext) -> str:
        from controlplane.exceptions import NotFound
        from flags import services

        flag, environment, state = _load(params)
        reason = f"rollback run #{ctx.run_id}: {ctx.reason}"[:500]
        snapshot = params.get("snapshot")
        lines: list[str] = []
        if snapshot is None:
            if state.enabled:
                services.flag_state_kill(
                    actor=ctx.actor, flag=flag, environment=environment, reason=reason
                )
                lines.append(f"killed {flag.key} in {environment.key}")
            else:
                lines.append(f"{flag.key} in {environment.key} already off")
            return "\n".join(lines)
        for override in _extra_overrides(flag, environment, params):
            try:
                services.override_remove(
                    actor=ctx.actor,
                    flag=flag,
                    environment=environment,
                    merchant=override.merchant,
                    reason=reason,
                )
                lines.append(f"removed override for {override.merchant.key}")
            except NotFound:
                lines.append(f"override for {override.merchant.key} already gone")
        if _state_matches(state, snapshot):
            lines.append(
                f"{flag.key} in {environment.key} already in the captured state"
            )
        else:
            services.flag_state_restore_snapshot(
                actor=ctx.actor,
                flag=flag,
                environment=environment,
                snapshot=snapshot,
                reason=reason,
            )
            lines.append(
                f"restored {flag.key} in {environment.key} to the captured state"
            )
        return "\n".join(lines)
