"""An audit event's admin page: what changed as rows, the target linked."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction
from django.urls import reverse

from controlplane.audit.actors import SYSTEM
from controlplane.audit.admin import MAX_ROWS
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import record_audit_event
from flags import services


def _event_url(event: AuditEvent) -> str:
    return reverse("admin:audit_auditevent_change", args=[event.pk])


def _rows(body: str) -> dict[str, tuple[str, str]]:
    """Return {field: (before, after)} as the page's change table shows them."""
    table = body.split('id="audit-changes"', 1)[1].split("</table>", 1)[0]
    rows = {}
    for field, before, after in re.findall(
        r"<th scope=\"row\"><code>(.*?)</code></th>\s*"
        r"<td class=\"diff-before\">(.*?)</td>\s*<td class=\"diff-arrow\">→</td>\s*"
        r"<td class=\"diff-after\">(.*?)</td>",
        table,
        flags=re.S,
    ):
        rows[re.sub(r"<[^>]+>", "", field)] = tuple(
            re.sub(r"<[^>]+>", "", cell).strip() for cell in (before, after)
        )
    return rows


def _form_data(response) -> dict[str, Any]:
    """Return what a browser posts back from a rendered admin change form."""
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


def _record(**kwargs) -> AuditEvent:
    with transaction.atomic():
        return record_audit_event(actor=SYSTEM, **kwargs)


def test_event_page__flag_renamed_through_the_admin__name_row_only(
    admin_client, admin_user, flag_factory
):
    # Given: the flag renamed through its admin change form
    flag = flag_factory(name="Checkout theme", description="colours")
    url = reverse("admin:flags_flag_change", args=[flag.pk])
    data = _form_data(admin_client.get(url)) | {"name": "Checkout theme v2"}
    saved = admin_client.post(url, {**data, "_save": "1"})
    assert saved.status_code == 302
    event = AuditEvent.objects.get(action="flag.updated", target_id=str(flag.pk))
    # When
    response = admin_client.get(_event_url(event))
    # Then
    assert response.status_code == 200
    body = response.content.decode()
    assert _rows(body) == {"name": ("Checkout theme", "Checkout theme v2")}
    assert event.actor_name == admin_user.username


def test_event_page__split_changed__nested_rows_and_raw_json_collapsed(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=10
    )
    state = services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=50
    )
    event = AuditEvent.objects.filter(
        action="flag_state.percentage_set", target_id=str(state.pk)
    ).first()  # the newest: 10% -> 50%
    # When
    response = admin_client.get(_event_url(event))
    # Then
    body = response.content.decode()
    rows = _rows(body)
    assert rows["fallthrough.split[0].weight"] == ("10000", "50000")
    assert rows["fallthrough.split[1].weight"] == ("90000", "50000")
    assert rows["version"] == (str(state.version - 1), str(state.version))
    assert "enabled" not in rows and "bucket_by" not in rows
    # the raw JSON: in a collapsed fieldset, with every key
    raw = body.split("Raw JSON", 1)[1].split("</details>", 1)[0]
    assert "&quot;bucket_by&quot;" in raw and "&quot;weight&quot;: 50000" in raw
    assert re.search(r"<details[^>]*>\s*<summary>\s*<h2[^>]*>\s*Raw JSON", body)


def test_event_page__transition__status_rows_with_tones(admin_client, db):
    # Given: what rollout_transition records, about a rollout that is gone
    event = _record(
        action="rollout.transition",
        target=("canary.rollout", "999999", "checkout 10%"),
        environment="production",
        before={"status": "running"},
        after={"status": "paused"},
        details={"from": "running", "to": "paused", "reason": "ops"},
    )
    # When
    response = admin_client.get(_event_url(event))
    # Then
    body = response.content.decode()
    assert _rows(body) == {"status": ("running", "paused")}  # from/to not repeated
    assert '<span class="tone tone-ok">running</span>' in body
    assert '<span class="tone tone-warn">paused</span>' in body
    # the action takes the tone of where it went
    assert re.search(r'class="tone tone-warn">rollout\.<wbr>transition', body)


def test_event_page__created__every_field_added(admin_client, merchant_factory):
    # Given
    merchant = merchant_factory("m-1001", attributes={"tier": "gold"})
    event = AuditEvent.objects.get(
        target_id=str(merchant.pk), target_type="flags.merchant"
    )
    # When
    body = admin_client.get(_event_url(event)).content.decode()
    # Then
    rows = _rows(body)
    assert rows["key"] == ("—", "m-1001")
    assert rows["attributes.tier"] == ("—", "gold")


def test_event_page__no_before_after__says_so(admin_client, db):
    # Given
    event = _record(
        action="check.ran", target=("canary.healthcheck", "1"), details={"n": 1}
    )
    # When
    body = admin_client.get(_event_url(event)).content.decode()
    # Then
    assert "This event records no before and after." in body


def test_event_page__thousands_of_fields__rows_capped(admin_client, db):
    # Given
    event = _record(
        action="merchant.bulk_imported",
        target=("flags.merchant", "bulk"),
        before=None,
        after={f"m-{n}": n for n in range(MAX_ROWS + 25)},
    )
    # When
    response = admin_client.get(_event_url(event))
    # Then
    assert len(response.context["changes"]) == MAX_ROWS
    assert "and 25 more" in response.content.decode()


def test_event_page__target_exists__linked_to_its_change_page(
    admin_client, flag_factory
):
    # Given
    flag = flag_factory()
    event = AuditEvent.objects.get(action="flag.created", target_id=str(flag.pk))
    # When
    body = admin_client.get(_event_url(event)).content.decode()
    # Then
    flag_url = reverse("admin:flags_flag_change", args=[flag.pk])
    assert f'<a href="{flag_url}">{flag.key}</a>' in body


def test_event_page__target_removed__plain_text(
    admin_client, environments, flag_factory, merchant_factory, production
):
    # Given: an override set, then removed (its row is gone)
    flag, merchant = flag_factory(), merchant_factory()
    override = services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=merchant,
        variation="on",
    )
    services.override_remove(
        actor=SYSTEM, flag=flag, environment=production, merchant=merchant
    )
    event = AuditEvent.objects.get(action="override.removed")
    # When
    response = admin_client.get(_event_url(event))
    # Then
    body = response.content.decode()
    gone_url = reverse("admin:flags_merchantoverride_change", args=[override.pk])
    assert gone_url not in body
    assert event.target_repr in body
    assert _rows(body)["variation"] == ("on", "—")


@pytest.mark.parametrize(
    "target",
    [
        ("canary.healthcheck", "1"),  # a model without an admin
        ("flags.flag", "not-a-number"),  # not a key of that model
        ("nothing", "x"),  # not a model at all
    ],
)
def test_event_page__target_without_a_page__plain_text(admin_client, db, target):
    # Given
    event = _record(action="x.y", target=(*target, "the target"), after={"a": 1})
    # When
    response = admin_client.get(_event_url(event))
    # Then
    assert response.status_code == 200
    assert "the target" in response.content.decode()
    assert response.context["target_url"] is None


def test_event_page__viewer_without_flag_permission__target_not_linked(
    client, flag_factory
):
    # Given: staff who may view the audit log, not flags
    flag = flag_factory()
    user = User.objects.create_user("auditor", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client.force_login(user)
    event = AuditEvent.objects.get(action="flag.created", target_id=str(flag.pk))
    # When
    response = client.get(_event_url(event))
    # Then
    assert response.status_code == 200
    assert reverse("admin:flags_flag_change", args=[flag.pk]) not in (
        response.content.decode()
    )


def test_event_page__read_only__no_save_delete_or_history_of_edits(
    admin_client, flag_factory
):
    # Given
    flag = flag_factory()
    event = AuditEvent.objects.get(action="flag.created", target_id=str(flag.pk))
    # When
    body = admin_client.get(_event_url(event)).content.decode()
    # Then
    assert 'name="_save"' not in body and 'name="_continue"' not in body
    assert reverse("admin:audit_auditevent_delete", args=[event.pk]) not in body
    # its "events about this target" link opens the target's history
    assert "target_type=flags.flag&amp;target_id=" in body


def test_event_page__kill__what_changed_and_the_reason_in_details(
    admin_client, environments, flag_factory, production
):
    # Given
    flag = flag_factory()
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=production, enabled=True
    )
    state = services.flag_state_kill(
        actor=SYSTEM, flag=flag, environment=production, reason="errors up"
    )
    event = AuditEvent.objects.get(action="flag_state.killed", target_id=str(state.pk))
    # When
    response = admin_client.get(_event_url(event))
    # Then
    body = response.content.decode()
    rows = _rows(body)
    assert rows["killed"] == ("false", "true")
    assert rows["enabled"] == ("true", "false")
    assert [(row["path"], row["value"]) for row in response.context["details"]] == [
        ("reason", "<code>errors up</code>")
    ]
    assert re.search(r'class="tone tone-bad">flag_state\.<wbr>killed', body)
