"""The audit log admin: read-only, filterable by target, searchable."""

from __future__ import annotations

from django.urls import reverse

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from flags import services

CHANGELIST = reverse("admin:audit_auditevent_changelist")


def _change_url(event: AuditEvent) -> str:
    return reverse("admin:audit_auditevent_change", args=[event.pk])


def test_audit_admin__change_post__forbidden_and_event_unchanged(
    admin_client, flag_factory
):
    # Given
    flag = flag_factory()
    event = AuditEvent.objects.get(action="flag.created", target_id=str(flag.pk))
    # When
    response = admin_client.post(_change_url(event), {"action": "flag.deleted"})
    # Then
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.action == "flag.created"


def test_audit_admin__delete_and_add__forbidden(admin_client, flag_factory):
    # Given
    flag_factory()
    event = AuditEvent.objects.first()
    count = AuditEvent.objects.count()
    # When
    delete_get = admin_client.get(
        reverse("admin:audit_auditevent_delete", args=[event.pk])
    )
    delete_post = admin_client.post(
        reverse("admin:audit_auditevent_delete", args=[event.pk]), {"post": "yes"}
    )
    add = admin_client.get(reverse("admin:audit_auditevent_add"))
    # Then
    assert (delete_get.status_code, delete_post.status_code, add.status_code) == (
        403,
        403,
        403,
    )
    assert AuditEvent.objects.count() == count


def test_audit_admin__changelist__no_actions_no_add_button(admin_client, flag_factory):
    # Given
    flag_factory()
    # When
    response = admin_client.get(CHANGELIST)
    # Then
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="action"' not in body  # no bulk delete or any other action
    assert reverse("admin:audit_auditevent_add") not in body


def test_audit_admin__detail__read_only_with_changes_raw_json_and_hashes(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    state = services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=10
    )
    event = AuditEvent.objects.get(
        action="flag_state.percentage_set", target_id=str(state.pk)
    )
    # When
    response = admin_client.get(_change_url(event))
    # Then
    assert response.status_code == 200
    body = response.content.decode()
    assert "<pre" in body and "&quot;weight&quot;: 10000" in body
    assert event.hash in body and event.prev_hash in body
    fields = [row["path"] for row in response.context["changes"]]
    assert "version" in fields and "enabled" not in fields  # only what changed
    assert any(field.startswith("fallthrough.") for field in fields)
    assert 'name="_save"' not in body  # view only: no save button


def test_audit_admin__target_filter__only_that_objects_events(
    admin_client, environments, flag_factory, production
):
    # Given
    flag, other = flag_factory(), flag_factory()
    services.flag_update(actor=SYSTEM, flag=flag, name="renamed")
    services.flag_update(actor=SYSTEM, flag=other, name="renamed too")
    # When
    response = admin_client.get(
        CHANGELIST, {"target_type": "flags.flag", "target_id": str(flag.pk)}
    )
    # Then
    assert response.status_code == 200
    events = list(response.context["cl"].result_list)
    assert {(e.target_type, e.target_id) for e in events} == {
        ("flags.flag", str(flag.pk))
    }
    assert len(events) == 2
    assert response.context["audit_target"]["repr"] == flag.key


def test_audit_admin__filters_and_search__narrow_the_list(
    admin_client, admin_user, environments, flag_factory, production
):
    # Given: one event by the admin user, many by the system
    flag = flag_factory()
    admin_client.post(
        reverse("admin:flags_flag_changelist"),
        {"action": "archive", "_selected_action": [flag.pk]},
    )
    # When
    by_actor = admin_client.get(CHANGELIST, {"actor_type": "user"})
    by_action = admin_client.get(CHANGELIST, {"action": "flag.archived"})
    by_environment = admin_client.get(CHANGELIST, {"environment": "production"})
    by_search = admin_client.get(CHANGELIST, {"q": admin_user.username})
    # Then
    assert [e.action for e in by_actor.context["cl"].result_list] == ["flag.archived"]
    assert [e.actor_name for e in by_action.context["cl"].result_list] == [
        admin_user.username
    ]
    assert {e.environment for e in by_environment.context["cl"].result_list} == {
        "production"
    }
    assert [e.action for e in by_search.context["cl"].result_list] == ["flag.archived"]


def test_audit_admin__date_hierarchy__filters_by_day(admin_client, flag_factory):
    # Given
    flag_factory()
    event = AuditEvent.objects.first()
    day = event.created_at
    # When
    same_day = admin_client.get(
        CHANGELIST,
        {
            "created_at__year": day.year,
            "created_at__month": day.month,
            "created_at__day": day.day,
        },
    )
    other_year = admin_client.get(CHANGELIST, {"created_at__year": day.year - 1})
    # Then
    assert same_day.status_code == 200 and len(same_day.context["cl"].result_list) >= 1
    assert (
        other_year.status_code == 200 and len(other_year.context["cl"].result_list) == 0
    )
