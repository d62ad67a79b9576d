"""Move the flag for a rollout, and put it back, through ``flags.services``.

Every change goes through the flag services, so each has its own audit
event and bumps the ruleset version. Call these inside the rollout's
transaction.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from canary.models import Rollout, TargetType
from controlplane.exceptions import DomainError
from flags import services as flag_services
from flags.models import Environment, Flag, FlagState, Merchant, MerchantOverride


def override_capture(override: MerchantOverride | None) -> dict | None:
    if override is None:
        return None
    return {
        "variation": override.variation,
        "note": override.note,
        "expires_at": override.expires_at.isoformat() if override.expires_at else None,
    }


def phase_apply(*, rollout: Rollout, index: int, actor: Any) -> None:
    """Make phase ``index`` of ``rollout`` live on the flag, through
    ``flags.services`` (each change audited and announced).

    Pilot and internal phases give their merchants the treatment variation
    by override; a percentage phase serves the treatment to that share
    (100% serves it to everyone). A disabled flag is enabled first, serving
    the control variation to everyone else. Idempotent: an unchanged target
    writes nothing. Call inside the rollout's transaction.
    """
    phase = rollout.phases.get(index=index)
    flag = Flag.objects.get(pk=rollout.flag_id)
    environment = Environment.objects.get(pk=rollout.environment_id)
    treatment, control = rollout.treatment_variation, rollout.control_variation
    state = FlagState.objects.get(flag=flag, environment=environment)
    if not state.enabled:
        flag_services.flag_state_update(
            actor=actor,
            flag=flag,
            environment=environment,
            expected_version=None,
            enabled=True,
            fallthrough={"variation": control},
        )
    if phase.target_type in (TargetType.PILOT, TargetType.INTERNAL):
        merchants = Merchant.objects.filter(key__in=phase.pilot_merchants).order_by(
            "key"
        )
        for merchant in merchants:
            flag_services.override_set(
                actor=actor,
                flag=flag,
                environment=environment,
                merchant=merchant,
                variation=treatment,
                note=f"rollout {rollout.pk}: phase {phase.name}",
            )
    elif phase.percentage is not None and phase.percentage >= 100:
        flag_services.flag_state_serve(
            actor=actor, flag=flag, environment=environment, variation=treatment
        )
    else:
        flag_services.flag_state_set_percentage(
            actor=actor,
            flag=flag,
            environment=environment,
            percentage=phase.percentage or 0,
            treatment=treatment,
            control=control,
        )


def overrides_restore(rollout: Rollout, actor: Any, reason: str) -> list[str]:
    """Put the pilot merchants' overrides back as they were at start.

    Remove the overrides the rollout added; put back ones it replaced.
    Return what could not be restored (e.g. a merchant deactivated since).
    """
    prior = (rollout.captured_state or {}).get("pilot_overrides") or {}
    if not prior:
        return []
    flag = Flag.objects.get(pk=rollout.flag_id)
    environment = Environment.objects.get(pk=rollout.environment_id)
    merchants = {m.key: m for m in Merchant.objects.filter(key__in=list(prior))}
    problems: list[str] = []
    # Wall time, not canary.clock: override expiry is judged by the flags
    # layer (its rulesets), which reads the real time.
    now = timezone.now()
    for key in sorted(prior):
        merchant = merchants.get(key)
        if merchant is None:
            continue  # deleted merchant: its overrides went with it
        before = prior[key]
        current = MerchantOverride.objects.filter(
            flag=flag, environment=environment, merchant=merchant
        ).first()
        try:
            if before is None:
                if current is not None:
                    flag_services.override_remove(
                        actor=actor,
                        flag=flag,
                        environment=environment,
                        merchant=merchant,
                        reason=f"rollout {rollout.pk}: {reason}",
                    )
                continue
            expires_at = (
                parse_datetime(before["expires_at"])
                if before.get("expires_at")
                else None
            )
            if expires_at is not None and expires_at <= now:
                if current is not None:
                    flag_services.override_remove(
                        actor=actor,
                        flag=flag,
                        environment=environment,
                        merchant=merchant,
                        reason=f"rollout {rollout.pk}: {reason} (earlier override has expired)",
                    )
                continue
            flag_services.override_set(
                actor=actor,
                flag=flag,
                environment=environment,
                merchant=merchant,
                variation=before["variation"],
                note=before.get("note", ""),
                expires_at=expires_at,
            )
        except DomainError as exc:
            problems.append(f"{key}: {exc.message}")
    return problems


def flag_restore(rollout: Rollout, actor: Any, reason: str) -> list[str]:
    """Restore the flag state and pilot overrides captured at start."""
    captured = rollout.captured_state
    if not captured:
        return []
    problems = overrides_restore(rollout, actor, reason)
    flag_services.flag_state_restore_snapshot(
        actor=actor,
        flag=Flag.objects.get(pk=rollout.flag_id),
        environment=Environment.objects.get(pk=rollout.environment_id),
        snapshot=captured,
        reason=f"rollout {rollout.pk}: {reason}",
    )
    return problems
