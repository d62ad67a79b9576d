"""Per-environment approval policies (how many approvals each kind needs)."""

from __future__ import annotations

from typing import Any

from controlplane.audit.services import (
    audited_transaction,
    environment_chain,
    record_audit_event,
)
from controlplane.exceptions import InvalidInput
from flags.changes.models import ApprovalPolicy
from flags.changes.operations import KINDS
from flags.models import Environment

MAX_APPROVALS = 10


def _snapshot(policy: ApprovalPolicy | None) -> dict[str, int] | None:
    if policy is None:
        return None
    return {kind: policy.approvals_for(kind) for kind in KINDS}


def approval_policy_set(
    *, actor: Any, environment: Environment, **approvals: int
) -> ApprovalPolicy:
    """Set how many approvals each kind of change needs in ``environment``.

    Keyword arguments are kinds (flag_state, override, kill, rollout_start)
    with a count in 0..10; kinds not named keep their value.
    """
    for kind, count in approvals.items():
        if kind not in KINDS:
            raise InvalidInput(f"{kind}: unknown kind of change", field=kind)
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 0 <= count <= MAX_APPROVALS
        ):
            raise InvalidInput(
                f"{kind}: must be a whole number in 0..{MAX_APPROVALS}", field=kind
            )
    with audited_transaction(chains=[environment_chain(environment.key)]):
        policy = (
            ApprovalPolicy.objects.select_for_update()
            .filter(environment=environment)
            .first()
        )
        before = _snapshot(policy)
        policy = policy or ApprovalPolicy(environment=environment)
        for kind, count in approvals.items():
            setattr(policy, f"{kind}_approvals", count)
        if _snapshot(policy) == before:
            return policy
        policy.save()
        record_audit_event(
            actor=actor,
            action="approval_policy.updated",
            target=policy,
            environment=environment.key,
            before=before,
            after=_snapshot(policy),
        )
    return policy
