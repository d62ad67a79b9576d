"""Four-eyes in the admin: the rollout Start button and the override rows.

Real requests as logged-in superusers against real rows: under a policy the
admin makes change requests (or refuses), never applies the change itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from canary.models import Rollout, RolloutStatus
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from flags import services as flag_services
from flags.changes import services
from flags.changes.models import ChangeRequest, ChangeRequestStatus
from flags.models import FlagState, MerchantOverride
from tests.canary_ui.conftest import merchants, rollout_factory  # noqa: F401
from tests.flags.targeting_page import form_fields


def _superuser(name: str) -> Client:
    User.objects.create_superuser(name, f"{name}@example.com", "x")
    client = Client()
    client.login(username=name, password="x")
    return client


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _start_url(rollout: Rollout) -> str:
    return reverse("admin:canary_rollout_action", args=[rollout.pk, "start"])


def _approve(client: Client, change: ChangeRequest):
    return client.post(
        reverse("admin:changes_changerequest_approve", args=[change.pk]),
        {"comment": "checked"},
        follow=True,
    )


# -- the rollout Start button ---------------------------------------------------


def test_rollout_start_button__policy__change_request_then_approval_starts_once(
    rollout_factory, production, alice
):
    # Given
    services.approval_policy_set(actor=alice, environment=production, rollout_start=1)
    rollout = rollout_factory()
    alice_admin, bob_admin = _superuser("alice"), _superuser("bob")
    # When
    confirm = alice_admin.get(_start_url(rollout))
    sent = alice_admin.post(_start_url(rollout), {"reason": "go"}, follow=True)
    change = ChangeRequest.objects.get()
    draft = Rollout.objects.get(pk=rollout.pk).status
    approved = _approve(bob_admin, change)
    again = _approve(bob_admin, change)
    # Then
    assert "requires 1 approval(s)" in confirm.content.decode()
    texts = _messages(sent)
    assert any(f"Change request {change.pk} created" in t for t in texts), texts
    link = reverse("admin:changes_changerequest_change", args=[change.pk])
    assert f'<a href="{link}">' in sent.content.decode()  # a link, not escaped
    assert (change.operation, change.arguments["rollout"]) == (
        "rollout.start",
        rollout.pk,
    )
    assert draft == RolloutStatus.DRAFT
    assert any("applied" in t for t in _messages(approved)), _messages(approved)
    assert [m.level_tag for m in again.context["messages"]] == ["error"]
    change.refresh_from_db()
    assert change.status == ChangeRequestStatus.APPLIED
    assert Rollout.objects.get(pk=rollout.pk).status == RolloutStatus.RUNNING
    assert (
        AuditEvent.objects.filter(
            action="change_request.applied", target_id=str(change.pk)
        ).count()
        == 1
    )
    transitions = AuditEvent.objects.filter(
        target_id=str(rollout.pk), action="rollout.transition"
    )
    started = [e.actor_name for e in transitions if e.details.get("to") == "running"]
    assert started == ["alice"]  # once, as the author


def test_rollout_start_button__no_policy__starts_at_once(rollout_factory, db):
    # Given
    rollout = rollout_factory()
    client = _superuser("alice")
    # When
    confirm = client.get(_start_url(rollout))
    sent = client.post(_start_url(rollout), {"reason": "go"}, follow=True)
    # Then
    assert "requires" not in confirm.content.decode()
    assert not ChangeRequest.objects.exists()
    assert Rollout.objects.get(pk=rollout.pk).status == RolloutStatus.RUNNING
    assert any("is now running" in t for t in _messages(sent)), _messages(sent)


def test_rollout_start_button__policy_elsewhere__starts_at_once(
    rollout_factory, environments, alice
):
    # Given: only staging asks for approvals; the rollout is in production
    services.approval_policy_set(
        actor=alice, environment=environments["staging"], rollout_start=1
    )
    rollout = rollout_factory()
    client = _superuser("alice")
    # When
    client.post(_start_url(rollout), {"reason": "go"})
    # Then
    assert not ChangeRequest.objects.exists()
    assert Rollout.objects.get(pk=rollout.pk).status == RolloutStatus.RUNNING


# -- the override rows of the flag state page --------------------------------------


@pytest.fixture
def state(flag, production, merchant_factory) -> FlagState:
    """The flag's production state, with an override for m-1001 (on)."""
    pilot = merchant_factory(key="m-1001")
    merchant_factory(key="m-2002")
    flag_services.override_set(
        actor=SYSTEM, flag=flag, environment=production, merchant=pilot, variation="on"
    )
    return FlagState.objects.select_related("flag", "environment").get(
        flag=flag, environment=production
    )


def _state_url(state: FlagState) -> str:
    return reverse("admin:flags_flagstate_change", args=[state.pk])


def _page(client: Client, state: FlagState) -> dict[str, Any]:
    response = client.get(_state_url(state))
    assert response.status_code == 200
    return form_fields(response.content.decode(), "flagstate_form")


def _row_errors(response) -> str:
    form = response.context["adminform"].form
    return " ".join(form.errors.get("overrides_rows", []))


def _overrides(state: FlagState) -> dict[str, str]:
    return dict(
        MerchantOverride.objects.filter(
            flag=state.flag, environment=state.environment
        ).values_list("merchant__key", "variation")
    )


ADD_ROW = {"overrides_rows-1-merchant": "m-2002", "overrides_rows-1-variation": "off"}
CHANGE_ROW = {"overrides_rows-0-variation": "off"}
REMOVE_ROW = {"overrides_rows-0-delete": "on"}


@pytest.mark.parametrize(
    ("row", "operation"),
    [
        (ADD_ROW, "override.set"),
        (CHANGE_ROW, "override.set"),
        (REMOVE_ROW, "override.remove"),
    ],
    ids=["add", "change", "remove"],
)
def test_state_page_override_row__policy__change_request_override_unchanged(
    state, production, alice, row, operation
):
    # Given
    services.approval_policy_set(actor=alice, environment=production, override=1)
    client = _superuser("alice")
    data = _page(client, state) | row
    before = _overrides(state)
    # When
    response = client.post(_state_url(state), data, follow=True)
    # Then
    assert response.redirect_chain, _row_errors(response)
    change = ChangeRequest.objects.get()
    assert (change.operation, change.status) == (operation, ChangeRequestStatus.PENDING)
    assert change.arguments["flag"] == state.flag.key
    texts = _messages(response)
    assert any(f"Change request {change.pk} created" in t for t in texts), texts
    assert _overrides(state) == before
    assert not AuditEvent.objects.filter(action__startswith="override.").exclude(
        actor_name=SYSTEM.name
    )


def test_state_page_override_row__policy_then_approval__applied_as_author(
    state, production, alice
):
    # Given
    services.approval_policy_set(actor=alice, environment=production, override=1)
    alice_admin, bob_admin = _superuser("alice"), _superuser("bob")
    alice_admin.post(_state_url(state), _page(alice_admin, state) | CHANGE_ROW)
    change = ChangeRequest.objects.get()
    # When
    _approve(bob_admin, change)
    # Then
    assert _overrides(state) == {"m-1001": "off"}
    event = AuditEvent.objects.get(action="override.updated")
    assert event.actor_name == "alice"


@pytest.mark.parametrize("row", [ADD_ROW, CHANGE_ROW, REMOVE_ROW])
def test_state_page_override_row__no_policy__saved(state, row, db):
    # Given
    client = _superuser("alice")
    data = _page(client, state) | row
    # When
    response = client.post(_state_url(state), data)
    # Then
    assert response.status_code == 302, _row_errors(response)
    assert not ChangeRequest.objects.exists()
    assert _overrides(state) != {"m-1001": "on"}


def test_state_page_override_row__flag_state_policy_only__override_saved(
    state, production, alice
):
    # Given: serving fields need approval, overrides do not
    services.approval_policy_set(actor=alice, environment=production, flag_state=1)
    client = _superuser("alice")
    # When
    response = client.post(_state_url(state), _page(client, state) | CHANGE_ROW)
    # Then
    assert response.status_code == 302, _row_errors(response)
    assert _overrides(state) == {"m-1001": "off"}
    assert not ChangeRequest.objects.exists()


def test_state_page_serving_field__flag_state_policy__refused_nothing_written(
    state, production, alice
):
    # Given
    services.approval_policy_set(actor=alice, environment=production, flag_state=1)
    client = _superuser("alice")
    data = _page(client, state)
    data["bucket_by"] = "tier"
    version = state.version
    # When
    response = client.post(_state_url(state), data | CHANGE_ROW)
    # Then
    assert response.status_code == 200
    assert "requires 1 approval(s)" in response.content.decode()
    assert FlagState.objects.get(pk=state.pk).version == version
    assert _overrides(state) == {"m-1001": "on"}
    assert not ChangeRequest.objects.exists()


def test_state_page_override_row__policy_bad_expiry__row_error_no_request(
    state, production, alice
):
    # Given
    services.approval_policy_set(actor=alice, environment=production, override=1)
    client = _superuser("alice")
    data = _page(client, state) | {"overrides_rows-0-expires_at": "2001-01-01T00:00"}
    # When
    response = client.post(_state_url(state), data)
    # Then
    assert response.status_code == 200
    assert "override of m-1001" in _row_errors(response)
    assert not ChangeRequest.objects.exists()
    assert _overrides(state) == {"m-1001": "on"}
