"""Change requests: four-eyes approval through the services, real database."""

from __future__ import annotations

import pytest

from controlplane.audit.models import AuditEvent
from controlplane.exceptions import Conflict, Forbidden, InvalidInput, InvalidTransition
from flags import selectors
from flags import services as flag_services
from flags.changes import gate, services
from flags.changes.models import ChangeRequestStatus as Status

PCT = "flag_state.percentage"


def _state(flag, production):
    return selectors.flag_state_get(flag=flag, environment=production)


def _args(pct: float = 25) -> dict:
    return {"flag": "checkout_theme", "environment": "production", "percentage": pct}


def test_submit__no_policy__applies_now(flag, production, alice):
    # When
    outcome = gate.submit(actor=alice, operation=PCT, arguments=_args(10))
    # Then
    assert not outcome.is_pending
    assert outcome.result.fallthrough["split"][0]["weight"] == 10_000
    assert _state(flag, production).version == 2


def test_submit__policy__creates_request_and_changes_nothing(
    flag, production, alice, two_eyes
):
    # When
    outcome = gate.submit(actor=alice, operation=PCT, arguments=_args())
    # Then
    change = outcome.change_request
    assert outcome.is_pending and change.status == Status.PENDING
    assert change.required_approvals == 2 and change.based_on_version == 1
    assert _state(flag, production).version == 1
    assert AuditEvent.objects.filter(
        action="change_request.created", target_id=str(change.pk)
    ).exists()


def test_approve__author__forbidden(flag, alice, two_eyes):
    # Given
    change = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    # When / Then
    with pytest.raises(Forbidden, match="author cannot approve"):
        services.change_request_approve(change_request_id=change.pk, actor=alice)
    change.refresh_from_db()
    assert change.status == Status.PENDING and change.reviews.count() == 0


def test_approve__author_through_cli_name__forbidden(flag, alice, two_eyes):
    # Given: the same person at the command line
    from controlplane.audit.actors import actor_for_cli

    change = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    # When / Then
    with pytest.raises(Forbidden):
        services.change_request_approve(
            change_request_id=change.pk, actor=actor_for_cli("alice")
        )


def test_approve__two_distinct_reviewers__applied_once_with_audit(
    flag, production, alice, bob, carol, two_eyes
):
    # Given
    change = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    # When
    first = services.change_request_approve(change_request_id=change.pk, actor=bob)
    state_between = _state(flag, production)
    second = services.change_request_approve(
        change_request_id=change.pk, actor=carol, comment="ok"
    )
    # Then
    assert first.status == Status.PENDING and state_between.version == 1
    assert second.status == Status.APPLIED
    state = _state(flag, production)
    assert state.version == 2
    assert state.fallthrough["split"][0]["weight"] == 25_000
    actions = list(
        AuditEvent.objects.filter(
            target_id=str(change.pk), target_type="changes.changerequest"
        )
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "change_request.created",
        "change_request.approved",
        "change_request.approved",
        "change_request.applied",
    ]
    # the flag change is the author's
    event = AuditEvent.objects.get(action="flag_state.percentage_set")
    assert event.actor_name == "alice"
    with pytest.raises(InvalidTransition):
        services.change_request_approve(
            change_request_id=change.pk, actor=flag_services_actor("dave")
        )
    assert AuditEvent.objects.filter(action="flag_state.percentage_set").count() == 1


def flag_services_actor(name: str):
    from controlplane.audit.actors import Actor

    return Actor(type="user", id=name, name=name)


def test_approve__same_reviewer_twice__conflict(flag, alice, bob, two_eyes):
    # Given
    change = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    services.change_request_approve(change_request_id=change.pk, actor=bob)
    # When / Then
    with pytest.raises(Conflict, match="already reviewed"):
        services.change_request_approve(change_request_id=change.pk, actor=bob)


def test_reject__ends_it_with_comment(flag, production, alice, bob, two_eyes):
    # Given
    change = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    # When
    change = services.change_request_reject(
        change_request_id=change.pk, actor=bob, comment="too fast"
    )
    # Then
    assert change.status == Status.REJECTED and "too fast" in change.result
    assert _state(flag, production).version == 1
    assert AuditEvent.objects.filter(action="change_request.rejected").count() == 1


def test_cancel__by_author_only(flag, alice, bob, two_eyes):
    # Given
    change = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    # When / Then
    with pytest.raises(Forbidden, match="only the author"):
        services.change_request_cancel(change_request_id=change.pk, actor=bob)
    change = services.change_request_cancel(change_request_id=change.pk, actor=alice)
    assert change.status == Status.CANCELLED
    assert AuditEvent.objects.filter(action="change_request.cancelled").count() == 1


def test_approve__fields_changed_since__failed_with_reason(
    flag, production, alice, bob, carol, two_eyes
):
    # Given: someone moves the percentage (directly, as the service) meanwhile
    change = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    flag_services.flag_state_set_percentage(
        actor=bob, flag=flag, environment=production, percentage=5
    )
    services.change_request_approve(change_request_id=change.pk, actor=bob)
    # When
    change = services.change_request_approve(change_request_id=change.pk, actor=carol)
    # Then
    assert change.status == Status.FAILED
    assert "fallthrough changed since version 1" in change.result
    assert _state(flag, production).fallthrough["split"][0]["weight"] == 5_000


def test_approve__unrelated_field_changed_since__applied(
    flag, production, alice, bob, carol, two_eyes
):
    # Given: the off variation changes, which the percentage does not set
    change = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    flag_services.flag_state_update(
        actor=bob,
        flag=flag,
        environment=production,
        expected_version=1,
        bucket_by="account",
    )
    # When
    services.change_request_approve(change_request_id=change.pk, actor=bob)
    change = services.change_request_approve(change_request_id=change.pk, actor=carol)
    # Then
    assert change.status == Status.APPLIED
    state = _state(flag, production)
    assert state.bucket_by == "account" and state.version == 3


@pytest.mark.parametrize(
    "operation, arguments, field",
    [
        ("flag_state.nope", {}, "operation"),
        (
            PCT,
            {"flag": "checkout_theme", "environment": "production"},
            "arguments.percentage",
        ),
        (PCT, {**_args(), "percentage": 1e308}, "arguments.percentage"),
        (PCT, {**_args(), "treatment": "on\x00"}, "arguments.treatment"),
        (PCT, {**_args(), "extra": 1}, "arguments.extra"),
        (PCT, {**_args(), "flag": "missing"}, "arguments.flag"),
        ("rollout.start", {"rollout": 10**30}, "arguments.rollout"),
    ],
)
def test_create__bad_input__field_error(flag, alice, operation, arguments, field):
    # When / Then
    with pytest.raises(InvalidInput) as caught:
        services.change_request_create(
            actor=alice, operation=operation, arguments=arguments
        )
    assert caught.value.field == field


def test_kill__policy_leaves_kills_immediate(flag, production, alice, two_eyes):
    # When
    outcome = gate.submit(
        actor=alice,
        operation="flag_state.kill",
        arguments={"flag": "checkout_theme", "environment": "production"},
    )
    # Then
    assert not outcome.is_pending
    assert _state(flag, production).killed_at is not None


def test_create__same_change_pending__conflict_names_it(
    flag, production, alice, bob, two_eyes
):
    # Given: a pending request for 25%
    first = gate.submit(actor=alice, operation=PCT, arguments=_args()).change_request
    # When / Then: the same change again (twice pressed, or by someone else,
    # whatever the reason given)
    for actor, reason in ((alice, ""), (bob, "again")):
        with pytest.raises(Conflict, match=f"change request {first.pk} already asks"):
            gate.submit(actor=actor, operation=PCT, arguments=_args(), reason=reason)
    # Then: a different value is its own request; a cancelled one frees it
    other = gate.submit(actor=alice, operation=PCT, arguments=_args(30))
    assert other.change_request.pk != first.pk
    services.change_request_cancel(change_request_id=first.pk, actor=alice)
    again = gate.submit(actor=alice, operation=PCT, arguments=_args())
    assert again.change_request.status == Status.PENDING
    assert AuditEvent.objects.filter(action="change_request.created").count() == 3
