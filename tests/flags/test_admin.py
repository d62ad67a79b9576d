"""The flags admin: real requests as a logged-in superuser, real rows, real audit."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.urls import reverse
from django.utils import timezone

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from flags import services
from flags.models import (
    Environment,
    Flag,
    FlagState,
    Merchant,
    MerchantOverride,
    Segment,
)


def _url(model: type, view: str, *args: Any) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def _form_data(response) -> dict[str, Any]:
    """Return what a browser would post back from a rendered admin change form."""
    form = response.context["adminform"].form
    data: dict[str, Any] = {}
    for name in form.fields:
        value = form[name].value()
        if value is True:
            data[name] = "on"
        elif value not in (None, False):
            data[name] = value
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
    return data


def _state(flag: Flag, environment) -> FlagState:
    return FlagState.objects.select_related("flag", "environment").get(
        flag=flag, environment=environment
    )


def _action(model: type, action: str, objects: list, **extra: Any) -> dict[str, Any]:
    return {
        "action": action,
        helpers.ACTION_CHECKBOX_NAME: [o.pk for o in objects],
        **extra,
    }


# -- flags ----------------------------------------------------------------------


def test_flag_add__posted__creates_states_everywhere_and_audits_admin_user(
    admin_client, admin_user, environments
):
    # Given
    data = {
        "key": "checkout_theme",
        "name": "Checkout theme",
        "value_type": "string",
        "variations": '[{"key": "blue", "value": "blue"}, {"key": "green", "value": "green"}]',
        "off_variation": "blue",
        "tags": "checkout, ui",
    }
    # When
    response = admin_client.post(_url(Flag, "add"), data)
    # Then
    assert response.status_code == 302, response.content.decode()[:2000]
    flag = Flag.objects.get(key="checkout_theme")
    assert flag.tags == ["checkout", "ui"]
    states = FlagState.objects.filter(flag=flag)
    assert sorted(s.environment.key for s in states) == ["production", "staging"]
    assert {s.off_variation for s in states} == {"blue"}
    event = AuditEvent.objects.get(action="flag.created", target_id=str(flag.pk))
    assert (event.actor_type, event.actor_name) == ("user", admin_user.username)
    assert event.actor_id == str(admin_user.pk)


def test_flag_add__value_not_of_the_type__field_error_and_no_row(
    admin_client, environments
):
    # Given
    data = {
        "key": "timeout_ms",
        "name": "Timeout",
        "value_type": "number",
        "variations": '[{"key": "fast", "value": "100"}]',
    }
    # When
    response = admin_client.post(_url(Flag, "add"), data)
    # Then
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "is not a valid number value" in errors["variations"][0]
    assert not Flag.objects.filter(key="timeout_ms").exists()
    assert not AuditEvent.objects.filter(action="flag.created").exists()


def test_flag_add__bool_without_variations__gets_on_off(admin_client, environments):
    # When
    response = admin_client.post(
        _url(Flag, "add"),
        {"key": "sequential_workflow", "name": "Sequential", "value_type": "bool"},
    )
    # Then
    assert response.status_code == 302
    assert Flag.objects.get(key="sequential_workflow").variation_keys == ["on", "off"]


def test_flag_change__posted__updates_through_service_key_and_type_fixed(
    admin_client, admin_user, environments, flag_factory
):
    # Given
    flag = flag_factory("enable_supplier_policy", name="Old name")
    page = admin_client.get(_url(Flag, "change", flag.pk))
    data = _form_data(page) | {
        "name": "New name",
        "key": "renamed",
        "value_type": "string",
    }
    # When
    response = admin_client.post(_url(Flag, "change", flag.pk), data)
    # Then
    assert response.status_code == 302, response.content.decode()[:3000]
    flag.refresh_from_db()
    assert (flag.key, flag.value_type, flag.name) == (
        "enable_supplier_policy",
        "bool",
        "New name",
    )
    event = AuditEvent.objects.get(action="flag.updated", target_id=str(flag.pk))
    assert event.actor_name == admin_user.username
    assert (event.before["name"], event.after["name"]) == ("Old name", "New name")


def test_flag_change__variation_in_use_removed__service_error_shown_nothing_written(
    admin_client, environments, flag_factory
):
    # Given: a string flag whose off variation is "a"
    flag = flag_factory(
        value_type="string",
        off_variation="a",
        variations=[{"key": "a", "value": "A"}, {"key": "b", "value": "B"}],
    )
    page = admin_client.get(_url(Flag, "change", flag.pk))
    data = _form_data(page) | {"variations": '[{"key": "b", "value": "B"}]'}
    events_before = AuditEvent.objects.count()
    # When
    response = admin_client.post(_url(Flag, "change", flag.pk), data)
    # Then
    assert response.status_code == 200
    assert "still in use" in response.context["adminform"].form.errors["variations"][0]
    flag.refresh_from_db()
    assert flag.variation_keys == ["a", "b"]
    assert AuditEvent.objects.count() == events_before


def test_flag_archive_action__selected__archived_with_audit(
    admin_client, environments, flag_factory
):
    # Given
    flag = flag_factory()
    # When
    response = admin_client.post(
        _url(Flag, "changelist"), _action(Flag, "archive", [flag])
    )
    # Then
    assert response.status_code == 302
    flag.refresh_from_db()
    assert flag.archived is True
    assert (
        AuditEvent.objects.filter(
            action="flag.archived", target_id=str(flag.pk)
        ).count()
        == 1
    )


def test_flag_changelist__states__summarised_per_environment(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory("sequential_workflow")
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=production, enabled=True
    )
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=10
    )
    # When
    response = admin_client.get(_url(Flag, "changelist"))
    # Then
    assert response.status_code == 200
    assert "production: on 10% / staging: off" in response.content.decode()


# -- actions on flag states ------------------------------------------------------------


def test_flag_state_kill_action__confirmed__kills_each_state_and_audits(
    admin_client, admin_user, environments, flag_factory, production
):
    # Given
    flags = [flag_factory(), flag_factory()]
    for flag in flags:
        services.flag_state_set_enabled(
            actor=SYSTEM, flag=flag, environment=production, enabled=True
        )
    states = [_state(flag, production) for flag in flags]
    url = _url(FlagState, "changelist")
    # When: the action first shows the confirmation page
    page = admin_client.post(url, _action(FlagState, "kill", states, index=0))
    # Then
    assert page.status_code == 200
    assert [row["label"] for row in page.context["rows"]] == [str(s) for s in states]
    assert all(_state(flag, production).enabled for flag in flags)  # nothing yet
    # When: confirmed with a reason
    done = admin_client.post(
        url, _action(FlagState, "kill", states, confirm="yes", reason="checkout errors")
    )
    # Then
    assert done.status_code == 302
    for flag in flags:
        state = _state(flag, production)
        assert (state.enabled, state.kill_reason) == (False, "checkout errors")
        assert state.killed_at is not None
        event = AuditEvent.objects.get(
            action="flag_state.killed", target_id=str(state.pk)
        )
        assert event.actor_name == admin_user.username
        assert event.details["reason"] == "checkout errors"


def test_flag_state_kill_action__no_reason__page_again_nothing_killed(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    state = _state(flag, production)
    # When
    response = admin_client.post(
        _url(FlagState, "changelist"),
        _action(FlagState, "kill", [state], confirm="yes", reason=""),
    )
    # Then
    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert _state(flag, production).killed_at is None


def test_flag_state_restore_action__killed_and_not_killed__restores_one_reports_other(
    admin_client, environments, flag_factory, production
):
    # Given
    killed, alive = flag_factory(), flag_factory()
    services.flag_state_kill(
        actor=SYSTEM, flag=killed, environment=production, reason="x"
    )
    states = [_state(killed, production), _state(alive, production)]
    # When
    response = admin_client.post(
        _url(FlagState, "changelist"),
        _action(FlagState, "restore", states, confirm="yes", reason="fixed"),
        follow=True,
    )
    # Then
    assert response.status_code == 200
    assert _state(killed, production).enabled is True
    assert _state(killed, production).killed_at is None
    texts = [str(m) for m in response.context["messages"]]
    assert any("Restored 1 flag state(s)" in t for t in texts)
    assert any("is not killed" in t for t in texts)


def test_flag_state_percentage_action__confirmed__fallthrough_split_changes(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    state = _state(flag, production)
    url = _url(FlagState, "changelist")
    page = admin_client.post(
        url, _action(FlagState, "set_percentage", [state], index=0)
    )
    assert page.status_code == 200 and "percentage" in page.context["form"].fields
    # When
    response = admin_client.post(
        url,
        _action(FlagState, "set_percentage", [state], confirm="yes", percentage="12.5"),
    )
    # Then
    assert response.status_code == 302
    state = _state(flag, production)
    assert state.fallthrough == {
        "split": [
            {"variation": "on", "weight": 12500},
            {"variation": "off", "weight": 87500},
        ]
    }
    assert state.version == 2
    assert (
        AuditEvent.objects.filter(
            action="flag_state.percentage_set", target_id=str(state.pk)
        ).count()
        == 1
    )


def test_flag_percentage_action__environment_chosen__only_that_state_changes(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    staging = environments["staging"]
    url = _url(Flag, "changelist")
    page = admin_client.post(
        url, _action(Flag, "set_percentage_in_environment", [flag], index=0)
    )
    assert page.status_code == 200 and page.context["environment_form"] is not None
    # When
    response = admin_client.post(
        url,
        _action(
            Flag,
            "set_percentage_in_environment",
            [flag],
            confirm="yes",
            percentage="50",
            environment=staging.pk,
        ),
    )
    # Then
    assert response.status_code == 302
    assert _state(flag, staging).percentage == 50
    assert _state(flag, production).percentage is None


def test_flag_state_percentage_action__out_of_range__form_error_nothing_changes(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    state = _state(flag, production)
    # When
    response = admin_client.post(
        _url(FlagState, "changelist"),
        _action(FlagState, "set_percentage", [state], confirm="yes", percentage="150"),
    )
    # Then
    assert response.status_code == 200
    assert "percentage" in response.context["form"].errors
    assert _state(flag, production).version == 1


# -- flag state change form (optimistic locking) ------------------------------------------


def test_flag_state_change__current_version__updates_and_audits(
    admin_client, admin_user, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    state = _state(flag, production)
    page = admin_client.get(_url(FlagState, "change", state.pk))
    data = _form_data(page) | {
        "enabled": "on",
        "fallthrough": '{"split": [{"variation": "on", "weight": 25000},'
        ' {"variation": "off", "weight": 75000}]}',
    }
    # When
    response = admin_client.post(_url(FlagState, "change", state.pk), data)
    # Then
    assert response.status_code == 302, response.content.decode()[:3000]
    state = _state(flag, production)
    assert (state.enabled, state.percentage, state.version) == (True, 25, 2)
    event = AuditEvent.objects.get(action="flag_state.updated", target_id=str(state.pk))
    assert event.actor_name == admin_user.username


def test_flag_state_change__stale_version__conflict_shown_nothing_written(
    admin_client, environments, flag_factory, production
):
    # Given: the form is loaded, then someone else changes the state
    flag = flag_factory()
    state = _state(flag, production)
    page = admin_client.get(_url(FlagState, "change", state.pk))
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=5
    )
    events_before = AuditEvent.objects.count()
    data = _form_data(page) | {"enabled": "on"}
    # When
    response = admin_client.post(_url(FlagState, "change", state.pk), data)
    # Then
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "is at version 2, not 1" in " ".join(form.non_field_errors())
    assert "nothing was changed" in response.content.decode()
    state = _state(flag, production)
    assert (state.enabled, state.version, state.percentage) == (False, 2, 5)
    assert AuditEvent.objects.count() == events_before


def test_flag_state_change__invalid_split__field_error_nothing_written(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    state = _state(flag, production)
    page = admin_client.get(_url(FlagState, "change", state.pk))
    data = _form_data(page) | {
        "fallthrough": '{"split": [{"variation": "on", "weight": 10}]}',
    }
    # When
    response = admin_client.post(_url(FlagState, "change", state.pk), data)
    # Then
    assert response.status_code == 200
    assert (
        "must sum to 100000"
        in response.context["adminform"].form.errors["fallthrough"][0]
    )
    assert _state(flag, production).version == 1


def test_flag_state_change_page__killed__shows_kill_and_reason(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    services.flag_state_kill(
        actor=SYSTEM, flag=flag, environment=production, reason="latency spike"
    )
    # When
    response = admin_client.get(_url(FlagState, "change", _state(flag, production).pk))
    # Then
    body = response.content.decode()
    assert "KILLED" in body and "latency spike" in body


# -- overrides -----------------------------------------------------------------------


def _override_post(
    flag: Flag, environment, merchant: Merchant, **extra: Any
) -> dict[str, Any]:
    return {
        "flag": flag.pk,
        "environment": environment.pk,
        "merchant": merchant.pk,
        "variation": "on",
        "note": "pilot",
        "expires_at_0": "",
        "expires_at_1": "",
        **extra,
    }


def test_override_add__inactive_merchant__service_error_and_no_row(
    admin_client, environments, flag_factory, merchant_factory, production
):
    # Given
    flag = flag_factory()
    merchant = merchant_factory(is_active=False)
    # When
    response = admin_client.post(
        _url(MerchantOverride, "add"), _override_post(flag, production, merchant)
    )
    # Then
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "is inactive" in errors["merchant"][0]
    assert not MerchantOverride.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="override.").exists()


def test_override_add__active_merchant__created_with_expiry_and_audited(
    admin_client, admin_user, environments, flag_factory, merchant_factory, production
):
    # Given
    flag = flag_factory()
    merchant = merchant_factory()
    tomorrow = timezone.now() + dt.timedelta(days=1)
    data = _override_post(
        flag,
        production,
        merchant,
        expires_at_0=tomorrow.strftime("%Y-%m-%d"),
        expires_at_1="12:00:00",
    )
    # When
    response = admin_client.post(_url(MerchantOverride, "add"), data)
    # Then
    assert response.status_code == 302, response.content.decode()[:3000]
    override = MerchantOverride.objects.get()
    assert (override.variation, override.created_by) == ("on", admin_user.username)
    assert override.expires_at is not None
    event = AuditEvent.objects.get(action="override.created")
    assert event.actor_name == admin_user.username


def test_override_add__unknown_variation__field_error(
    admin_client, environments, flag_factory, merchant_factory, production
):
    # Given
    flag, merchant = flag_factory(), merchant_factory()
    # When
    response = admin_client.post(
        _url(MerchantOverride, "add"),
        _override_post(flag, production, merchant, variation="maybe"),
    )
    # Then
    assert response.status_code == 200
    assert (
        "is not a variation"
        in response.context["adminform"].form.errors["variation"][0]
    )
    assert not MerchantOverride.objects.exists()


def test_override_delete__confirmed__removed_through_service(
    admin_client, environments, flag_factory, merchant_factory, production
):
    # Given
    flag, merchant = flag_factory(), merchant_factory()
    override = services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=merchant,
        variation="on",
    )
    # When
    response = admin_client.post(
        _url(MerchantOverride, "delete", override.pk), {"post": "yes"}
    )
    # Then
    assert response.status_code == 302
    assert not MerchantOverride.objects.exists()
    assert AuditEvent.objects.filter(action="override.removed").count() == 1


# -- merchants, segments, environments ---------------------------------------------------


def test_merchant_add__attributes_not_an_object__field_error_and_no_row(
    admin_client, db
):
    # When
    response = admin_client.post(
        _url(Merchant, "add"),
        {"key": "m-1", "name": "M", "is_active": "on", "attributes": '["gold"]'},
    )
    # Then
    assert response.status_code == 200
    assert "attributes" in response.context["adminform"].form.errors
    assert not Merchant.objects.exists()


def test_merchant_add__bad_attribute_value__service_error_on_field(admin_client, db):
    # When
    response = admin_client.post(
        _url(Merchant, "add"),
        {"key": "m-1", "is_active": "on", "attributes": '{"tier": {"nested": 1}}'},
    )
    # Then
    assert response.status_code == 200
    assert (
        "attributes.tier" in response.context["adminform"].form.errors["attributes"][0]
    )
    assert not Merchant.objects.exists()


def test_merchant_changelist__attributes__shown_as_key_value_list(
    admin_client, merchant_factory
):
    # Given
    merchant_factory("acme", attributes={"tier": "gold", "country": "KR"})
    # When
    response = admin_client.get(_url(Merchant, "changelist"), {"q": "acme"})
    # Then
    body = response.content.decode()
    assert (
        "<strong>country</strong>: KR" in body and "<strong>tier</strong>: gold" in body
    )


def test_merchant_change__deactivated__audited_as_admin(
    admin_client, admin_user, merchant_factory
):
    # Given
    merchant = merchant_factory(attributes={"tier": "gold"})
    page = admin_client.get(_url(Merchant, "change", merchant.pk))
    data = _form_data(page)
    data.pop("is_active")
    # When
    response = admin_client.post(_url(Merchant, "change", merchant.pk), data)
    # Then
    assert response.status_code == 302, response.content.decode()[:3000]
    merchant.refresh_from_db()
    assert merchant.is_active is False and merchant.attributes == {"tier": "gold"}
    event = AuditEvent.objects.get(action="merchant.updated")
    assert event.actor_name == admin_user.username


def test_segment_add__bad_operator__field_error_and_no_row(admin_client, db):
    # When
    response = admin_client.post(
        _url(Segment, "add"),
        {
            "key": "gold",
            "name": "Gold",
            "clauses": '[{"attribute": "tier", "op": "like", "values": ["gold"]}]',
        },
    )
    # Then
    assert response.status_code == 200
    assert "clauses[0].op" in response.context["adminform"].form.errors["clauses"][0]
    assert not Segment.objects.exists()


def test_segment_delete__used_by_a_rule__error_message_and_kept(
    admin_client, environments, flag_factory, production
):
    # Given
    segment = services.segment_create(
        actor=SYSTEM,
        key="gold",
        clauses=[{"attribute": "tier", "op": "in", "values": ["gold"]}],
    )
    flag = flag_factory()
    services.flag_state_update(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        expected_version=None,
        rules=[
            {
                "clauses": [{"op": "segment", "values": ["gold"]}],
                "serve": {"variation": "on"},
            }
        ],
    )
    # When
    response = admin_client.post(
        _url(Segment, "delete", segment.pk), {"post": "yes"}, follow=True
    )
    # Then
    assert response.status_code == 200
    assert any("is used by" in str(m) for m in response.context["messages"])
    assert Segment.objects.filter(pk=segment.pk).exists()
    assert not AuditEvent.objects.filter(action="segment.deleted").exists()


def test_environment_add__posted__states_for_every_flag(admin_client, flag_factory, db):
    # Given
    flag = flag_factory()
    # When
    response = admin_client.post(
        _url(Environment, "add"), {"key": "qa", "name": "QA", "sort_order": 3}
    )
    # Then
    assert response.status_code == 302
    assert FlagState.objects.filter(flag=flag, environment__key="qa").exists()
    assert AuditEvent.objects.filter(
        action="environment.created", target_repr="qa"
    ).exists()


# -- every page renders; history links --------------------------------------------------


@pytest.fixture
def one_of_everything(environments, flag_factory, merchant_factory, production):
    flag = flag_factory()
    merchant = merchant_factory(attributes={"tier": "gold"})
    services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=merchant,
        variation="on",
    )
    services.segment_create(
        actor=SYSTEM,
        key="gold",
        clauses=[{"attribute": "tier", "op": "in", "values": ["gold"]}],
    )
    services.flag_state_kill(
        actor=SYSTEM, flag=flag, environment=production, reason="x"
    )
    services.alert_trigger_create(
        actor=SYSTEM, flag=flag, environment=production, name="alertmanager"
    )


def test_admin_pages__every_registered_model__changelist_add_and_change_render(
    admin_client, one_of_everything
):
    # Given
    registered = [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in {"flags", "audit"}
    ]
    assert len(registered) >= 7
    for model, model_admin in registered:
        # When
        listing = admin_client.get(_url(model, "changelist"))
        obj = model._default_manager.first()
        change = admin_client.get(_url(model, "change", obj.pk))
        # Then
        assert listing.status_code == 200, model
        assert change.status_code == 200, model
        if model._meta.app_label == "flags":
            assert "History (audit)" in change.content.decode(), model
        if model_admin.has_add_permission(listing.wsgi_request):
            assert admin_client.get(_url(model, "add")).status_code == 200, model


def test_flag_change_page__history_link__opens_audit_filtered_to_the_flag(
    admin_client, environments, flag_factory
):
    # Given
    flag, other = flag_factory(), flag_factory()
    services.flag_update(actor=SYSTEM, flag=flag, name="renamed")
    page = admin_client.get(_url(Flag, "change", flag.pk))
    link = page.context["audit_history_url"]
    # When
    response = admin_client.get(link)
    # Then
    assert f"target_type=flags.flag&target_id={flag.pk}" in link
    events = list(response.context["cl"].result_list)
    assert [e.action for e in events] == ["flag.updated", "flag.created"]
    assert all(e.target_id == str(flag.pk) for e in events)
    assert other.key not in {e.target_repr for e in events}


@pytest.mark.parametrize("model", [Flag, FlagState, MerchantOverride])
def test_changelist__more_rows__same_number_of_queries(
    admin_client, environments, flag_factory, merchant_factory, production, model
):
    # Given
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    merchant = merchant_factory()

    def add_flags(count: int) -> None:
        for _ in range(count):
            flag = flag_factory(tags=["t"])
            services.override_set(
                actor=SYSTEM,
                flag=flag,
                environment=production,
                merchant=merchant,
                variation="on",
            )

    add_flags(2)
    admin_client.get(_url(model, "changelist"))  # warm sessions and caches
    with CaptureQueriesContext(connection) as few:
        admin_client.get(_url(model, "changelist"))
    add_flags(6)
    # When
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(_url(model, "changelist"))
    # Then
    assert response.status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)
