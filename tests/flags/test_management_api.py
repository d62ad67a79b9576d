"""Management REST API over real HTTP (Django test client), real database."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from flags import services
from flags.models import FlagState, Merchant, MerchantOverride, Segment

ALL_MODELS = [
    "environment",
    "merchant",
    "segment",
    "flag",
    "flagstate",
    "merchantoverride",
    "apikey",
]


def _user_with(*codenames: str, username: str = "ops") -> User:
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # drop the permission cache


@pytest.fixture
def api(db) -> Client:
    """A client logged in as a user with every permission of the flags API."""
    codenames = [
        f"{action}_{model}"
        for model in ALL_MODELS
        for action in ("view", "add", "change", "delete")
    ]
    client = Client()
    client.force_login(_user_with(*codenames, "view_auditevent"))
    return client


def _send(client: Client, method: str, url: str, body=None, **extra):
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(
        url, data=data, content_type="application/json", **extra
    )


# -- authentication and permissions ---------------------------------------------


def test_flags_list__anonymous__401_with_code(db):
    # Given
    client = Client()
    # When
    response = client.get("/api/v1/flags")
    # Then
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_flag_create__view_permission_only__403_and_nothing_written(db):
    # Given
    client = Client()
    client.force_login(_user_with("view_flag"))
    # When
    listed = client.get("/api/v1/flags")
    created = _send(client, "post", "/api/v1/flags", {"key": "new_flag"})
    # Then
    assert listed.status_code == 200
    assert created.status_code == 403
    assert created.json()["code"] == "permission_denied"
    assert "flags.add_flag" in created.json()["message"]
    assert not AuditEvent.objects.filter(action="flag.created").exists()


# -- environments ---------------------------------------------------------------


def test_environment_create__new_key__201_and_audited_as_user(api, flag_factory):
    # Given
    flag_factory("sequential_workflow")
    # When
    response = _send(api, "post", "/api/v1/environments", {"key": "qa", "name": "QA"})
    # Then
    assert response.status_code == 201
    assert response.json()["key"] == "qa"
    event = AuditEvent.objects.get(action="environment.created", target_repr="qa")
    assert (event.actor_type, event.actor_name) == ("user", "ops")
    assert FlagState.objects.filter(environment__key="qa").count() == 1


def test_environment_create__duplicate_and_bad_key__400_field_errors(api, production):
    # When
    duplicate = _send(api, "post", "/api/v1/environments", {"key": "production"})
    bad = _send(api, "post", "/api/v1/environments", {"key": "Not A Slug!"})
    missing = _send(api, "post", "/api/v1/environments", {})
    # Then
    assert duplicate.status_code == 400 and "key" in duplicate.json()["errors"]
    assert bad.status_code == 400 and "key" in bad.json()["errors"]
    assert missing.status_code == 400
    assert missing.json()["errors"] == {"key": ["This field is required."]}


def test_environment_retrieve__unknown_key__404_not_found(api, production):
    # When
    response = api.get("/api/v1/environments/nowhere")
    # Then
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert api.get("/api/v1/environments/production").json()["key"] == "production"


# -- merchants ------------------------------------------------------------------


def test_merchants_list__search_and_is_active__filters(api, merchant_factory):
    # Given
    merchant_factory("m-alpha", name="Alpha Shop")
    merchant_factory("m-beta", name="Beta", is_active=False)
    merchant_factory("m-gamma", name="Gamma alpha")
    # When
    searched = api.get("/api/v1/merchants", {"search": "ALPHA"}).json()
    inactive = api.get("/api/v1/merchants", {"is_active": "false"}).json()
    # Then
    assert [m["key"] for m in searched["results"]] == ["m-alpha", "m-gamma"]
    assert [m["key"] for m in inactive["results"]] == ["m-beta"]
    assert searched["count"] == 2


def test_merchant_patch__attributes__replaced_and_audited(api, merchant_factory):
    # Given
    merchant_factory("m-1", attributes={"tier": "silver"})
    # When
    response = _send(
        api, "patch", "/api/v1/merchants/m-1", {"attributes": {"tier": "gold"}}
    )
    # Then
    assert response.status_code == 200
    assert response.json()["attributes"] == {"tier": "gold"}
    event = AuditEvent.objects.get(action="merchant.updated")
    assert event.before["attributes"] == {"tier": "silver"}


def test_merchant_create__bad_attributes__400_field_level(api, db):
    # When
    not_object = _send(
        api, "post", "/api/v1/merchants", {"key": "m-1", "attributes": [1]}
    )
    nested = _send(
        api, "post", "/api/v1/merchants", {"key": "m-2", "attributes": {"a": {}}}
    )
    nul = _send(
        api, "post", "/api/v1/merchants", {"key": "m-3", "attributes": {"a": "x\x00"}}
    )
    # Then
    assert not_object.status_code == 400 and "attributes" in not_object.json()["errors"]
    assert nested.status_code == 400 and "attributes.a" in nested.json()["errors"]
    assert nul.status_code == 400 and "attributes.a" in nul.json()["errors"]
    assert not Merchant.objects.exists()


def test_merchant_bulk_upsert__mixed_batch__counts_and_one_event_per_change(
    api, merchant_factory
):
    # Given
    merchant_factory("m-same", name="Same", attributes={"tier": "gold"})
    merchant_factory("m-old", name="Old")
    before = AuditEvent.objects.count()
    items = [
        {"key": "m-same", "name": "Same", "attributes": {"tier": "gold"}},
        {"key": "m-old", "name": "Renamed", "is_active": False},
        {"key": "m-new", "name": "New", "attributes": {"country": "KR"}},
    ]
    # When
    response = _send(api, "post", "/api/v1/merchants/bulk-upsert", {"merchants": items})
    # Then
    assert response.status_code == 200
    assert response.json() == {"created": 1, "updated": 1, "unchanged": 1}
    assert AuditEvent.objects.count() == before + 2
    created = AuditEvent.objects.get(action="merchant.created", target_repr="m-new")
    assert created.details == {"bulk": True}
    assert Merchant.objects.get(key="m-old").is_active is False


def test_merchant_bulk_upsert__one_bad_item__400_names_item_and_nothing_written(
    api, db
):
    # Given
    items = [
        {"key": "m-1"},
        {"key": "m-2", "attributes": {"x": {"deep": 1}}},
        {"key": "m-1"},
    ]
    # When
    response = _send(api, "post", "/api/v1/merchants/bulk-upsert", {"merchants": items})
    duplicate = _send(
        api,
        "post",
        "/api/v1/merchants/bulk-upsert",
        {"merchants": [{"key": "m-1"}, {"key": "m-1"}]},
    )
    missing_key = _send(
        api,
        "post",
        "/api/v1/merchants/bulk-upsert",
        {"merchants": [{"key": "m-1"}, {"name": "x"}]},
    )
    # Then
    assert response.status_code == 400
    assert "merchants[1].attributes.x" in response.json()["errors"]
    assert (
        duplicate.status_code == 400
        and "merchants[1].key" in duplicate.json()["errors"]
    )
    assert (
        missing_key.status_code == 400
        and "merchants[1].key" in missing_key.json()["errors"]
    )
    assert not Merchant.objects.exists()


def test_merchant_bulk_upsert__over_limit__400(api, db, settings):
    # Given
    settings.CONTROLPLANE = {"MERCHANT_BULK_UPSERT_MAX": 2}
    items = [{"key": f"m-{n}"} for n in range(3)]
    # When
    response = _send(api, "post", "/api/v1/merchants/bulk-upsert", {"merchants": items})
    # Then
    assert response.status_code == 400
    assert "at most 2" in response.json()["errors"]["merchants"][0]
    assert not Merchant.objects.exists()


def test_merchant_bulk_upsert__1000_merchants__one_request_all_created(api, db):
    # Given
    items = [
        {"key": f"m-{n:04d}", "attributes": {"tier": "gold" if n % 2 else "silver"}}
        for n in range(1000)
    ]
    # When
    response = _send(api, "post", "/api/v1/merchants/bulk-upsert", {"merchants": items})
    again = _send(api, "post", "/api/v1/merchants/bulk-upsert", {"merchants": items})
    # Then
    assert response.json() == {"created": 1000, "updated": 0, "unchanged": 0}
    assert again.json() == {"created": 0, "updated": 0, "unchanged": 1000}
    assert AuditEvent.objects.filter(action="merchant.created").count() == 1000


# -- segments -------------------------------------------------------------------


def test_segment_crud__create_update_delete__each_audited(api, db):
    # Given
    clauses = [{"attribute": "tier", "op": "in", "values": ["gold"]}]
    # When
    created = _send(
        api, "post", "/api/v1/segments", {"key": "gold", "clauses": clauses}
    )
    patched = _send(api, "patch", "/api/v1/segments/gold", {"name": "Gold tier"})
    deleted = api.delete("/api/v1/segments/gold")
    # Then
    assert created.status_code == 201 and created.json()["clauses"][0]["op"] == "in"
    assert patched.json()["name"] == "Gold tier"
    assert deleted.status_code == 204
    assert not Segment.objects.exists()
    actions = list(
        AuditEvent.objects.filter(target_type="flags.segment")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["segment.created", "segment.updated", "segment.deleted"]


def test_segment_delete__used_by_rule__409_and_kept(api, production, flag_factory):
    # Given
    flag = flag_factory("f")
    services.segment_create(
        actor=_system(),
        key="gold",
        clauses=[{"attribute": "tier", "op": "in", "values": ["gold"]}],
    )
    rule = {
        "clauses": [{"op": "segment", "values": ["gold"]}],
        "serve": {"variation": "on"},
    }
    services.flag_state_update(
        actor=_system(),
        flag=flag,
        environment=production,
        expected_version=None,
        rules=[rule],
    )
    bad_clause = _send(
        api,
        "put",
        "/api/v1/segments/gold",
        {"name": "g", "description": "", "clauses": [{"op": "nope"}]},
    )
    # When
    response = api.delete("/api/v1/segments/gold")
    # Then
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert Segment.objects.filter(key="gold").exists()
    assert (
        bad_clause.status_code == 400 and "clauses[0].op" in bad_clause.json()["errors"]
    )


def _system():
    from controlplane.audit.actors import SYSTEM

    return SYSTEM


# -- flags ----------------------------------------------------------------------


def test_flag_create__string_flag__201_with_state_per_environment(api, environments):
    # Given
    body = {
        "key": "checkout_theme",
        "value_type": "string",
        "tags": ["ui"],
        "variations": [
            {"key": "classic", "value": "classic"},
            {"key": "dark", "value": "dark"},
        ],
    }
    # When
    response = _send(api, "post", "/api/v1/flags", body)
    # Then
    assert response.status_code == 201
    data = response.json()
    assert [v["key"] for v in data["variations"]] == ["classic", "dark"]
    assert {s["environment"] for s in data["states"]} == {"production", "staging"}
    assert api.get("/api/v1/flags", {"tag": "ui"}).json()["count"] == 1
    assert api.get("/api/v1/flags", {"tag": "other"}).json()["count"] == 0


def test_flag_create__string_without_variations__400_field(api, production):
    # When
    response = _send(api, "post", "/api/v1/flags", {"key": "t", "value_type": "string"})
    wrong_type = _send(api, "post", "/api/v1/flags", {"key": "t", "value_type": "date"})
    # Then
    assert response.status_code == 400 and "variations" in response.json()["errors"]
    assert wrong_type.status_code == 400 and "value_type" in wrong_type.json()["errors"]


def test_flag_archive__then_unarchive__list_hides_then_shows(
    api, production, flag_factory
):
    # Given
    flag_factory("old_flag")
    # When
    archived = api.post("/api/v1/flags/old_flag/archive")
    listed = api.get("/api/v1/flags").json()["count"]
    listed_all = api.get("/api/v1/flags", {"include_archived": "true"}).json()["count"]
    unarchived = api.post("/api/v1/flags/old_flag/unarchive")
    # Then
    assert archived.json()["archived"] is True
    assert (listed, listed_all) == (0, 1)
    assert unarchived.json()["archived"] is False
    assert (
        AuditEvent.objects.filter(
            action__in=["flag.archived", "flag.unarchived"]
        ).count()
        == 2
    )


def test_flag_patch__unknown_flag__404_and_put_missing_fields__400(api, flag_factory):
    # Given
    flag_factory("f")
    # When
    unknown = _send(api, "patch", "/api/v1/flags/nope", {"name": "x"})
    incomplete = _send(api, "put", "/api/v1/flags/f", {"name": "x"})
    renamed = _send(
        api, "patch", "/api/v1/flags/f", {"name": "Renamed", "owner": "team-a"}
    )
    # Then
    assert unknown.status_code == 404
    assert incomplete.status_code == 400 and "variations" in incomplete.json()["errors"]
    assert (renamed.json()["name"], renamed.json()["owner"]) == ("Renamed", "team-a")


# -- flag states ------------------------------------------------------------------


STATE = "/api/v1/flags/sequential_workflow/environments/production"


def test_flag_state_patch__current_version__applied_and_version_bumped(
    api, production, flag_factory
):
    # Given
    flag_factory("sequential_workflow")
    version = api.get(STATE).json()["version"]
    # When
    response = _send(
        api,
        "patch",
        STATE,
        {"version": version, "enabled": True, "fallthrough": {"variation": "on"}},
    )
    # Then
    assert response.status_code == 200
    assert response.json()["version"] == version + 1
    assert response.json()["enabled"] is True
    event = AuditEvent.objects.get(action="flag_state.updated")
    assert (event.environment, event.after["version"]) == ("production", version + 1)


def test_flag_state_patch__stale_version__409_with_current_version(
    api, production, flag_factory
):
    # Given
    flag = flag_factory("sequential_workflow")
    services.flag_state_set_enabled(
        actor=_system(), flag=flag, environment=production, enabled=True
    )
    current = FlagState.objects.get(flag=flag, environment=production).version
    # When
    response = _send(api, "patch", STATE, {"version": current - 1, "enabled": False})
    # Then
    assert response.status_code == 409
    body = response.json()
    assert (body["code"], body["current_version"]) == ("version_conflict", current)
    assert "version" in body["errors"]
    assert FlagState.objects.get(flag=flag, environment=production).enabled is True


def test_flag_state_write__no_version_or_bad_rules__400(api, production, flag_factory):
    # Given
    flag_factory("sequential_workflow")
    # When
    no_version = _send(api, "patch", STATE, {"enabled": True})
    bad_split = _send(
        api,
        "patch",
        STATE,
        {
            "version": 1,
            "fallthrough": {
                "split": [
                    {"variation": "on", "weight": 10},
                    {"variation": "off", "weight": 10},
                ]
            },
        },
    )
    put_partial = _send(api, "put", STATE, {"version": 1, "enabled": True})
    # Then
    assert no_version.status_code == 400 and "version" in no_version.json()["errors"]
    assert (
        bad_split.status_code == 400
        and "fallthrough.split" in bad_split.json()["errors"]
    )
    assert put_partial.status_code == 400 and "rules" in put_partial.json()["errors"]


def test_flag_state_commands__kill_restore_percentage__state_follows(
    api, production, flag_factory
):
    # Given
    flag_factory("sequential_workflow")
    _send(api, "post", f"{STATE}/enable")
    # When
    percentage = _send(api, "post", f"{STATE}/percentage", {"percentage": 12.5})
    killed = _send(api, "post", f"{STATE}/kill", {"reason": "errors up"})
    restored = _send(api, "post", f"{STATE}/restore")
    restored_again = _send(api, "post", f"{STATE}/restore")
    # Then
    assert percentage.json()["percentage"] == 12.5
    assert (killed.json()["enabled"], killed.json()["kill_reason"]) == (
        False,
        "errors up",
    )
    assert restored.json()["enabled"] is True and restored.json()["killed_at"] is None
    assert restored_again.status_code == 409
    events = AuditEvent.objects.filter(
        target_type="flags.flagstate", environment="production"
    )
    actions = list(events.order_by("id").values_list("action", flat=True))
    assert actions == [
        "flag_state.enabled",
        "flag_state.percentage_set",
        "flag_state.killed",
        "flag_state.restored",
    ]


def test_flag_state_percentage__out_of_range_or_stale__400_and_409(
    api, production, flag_factory
):
    # Given
    flag_factory("sequential_workflow")
    # When
    too_high = _send(api, "post", f"{STATE}/percentage", {"percentage": 150})
    stale = _send(api, "post", f"{STATE}/percentage", {"percentage": 10, "version": 99})
    disabled = _send(api, "post", f"{STATE}/disable", {"version": 1})
    # Then
    assert too_high.status_code == 400 and "percentage" in too_high.json()["errors"]
    assert stale.status_code == 409 and stale.json()["current_version"] == 1
    assert disabled.status_code == 200


def test_flag_state__unknown_environment_or_flag__404(api, production, flag_factory):
    # Given
    flag_factory("sequential_workflow")
    # When / Then
    assert (
        api.get("/api/v1/flags/sequential_workflow/environments/nowhere").status_code
        == 404
    )
    assert (
        api.post("/api/v1/flags/nope/environments/production/kill").status_code == 404
    )


# -- overrides ------------------------------------------------------------------


def test_override_put_get_delete__pilot_merchant__lifecycle_audited(
    api, production, flag_factory, merchant_factory
):
    # Given
    flag_factory("sequential_workflow")
    merchant_factory("m-pilot")
    url = f"{STATE}/overrides/m-pilot"
    expires = (timezone.now() + dt.timedelta(days=1)).isoformat()
    # When
    put = _send(
        api, "put", url, {"variation": "on", "note": "pilot", "expires_at": expires}
    )
    got = api.get(url)
    listed = api.get(f"{STATE}/overrides")
    deleted = api.delete(url + "?reason=done")
    gone = api.get(url)
    # Then
    assert put.status_code == 200 and put.json()["is_live"] is True
    assert got.json()["variation"] == "on"
    assert [o["merchant"] for o in listed.json()["results"]] == ["m-pilot"]
    assert deleted.status_code == 204 and gone.status_code == 404
    assert not MerchantOverride.objects.exists()
    removed = AuditEvent.objects.get(action="override.removed")
    assert removed.details["reason"] == "done"


def test_override_put__bad_variation_unknown_merchant_past_expiry__4xx(
    api, production, flag_factory, merchant_factory
):
    # Given
    flag_factory("sequential_workflow")
    merchant_factory("m-1")
    past = (timezone.now() - dt.timedelta(days=1)).isoformat()
    # When
    bad_variation = _send(api, "put", f"{STATE}/overrides/m-1", {"variation": "maybe"})
    unknown = _send(api, "put", f"{STATE}/overrides/m-nobody", {"variation": "on"})
    expired = _send(
        api, "put", f"{STATE}/overrides/m-1", {"variation": "on", "expires_at": past}
    )
    bad_date = _send(
        api,
        "put",
        f"{STATE}/overrides/m-1",
        {"variation": "on", "expires_at": "tomorrow"},
    )
    # Then
    assert (
        bad_variation.status_code == 400
        and "variation" in bad_variation.json()["errors"]
    )
    assert unknown.status_code == 404
    assert expired.status_code == 400 and "expires_at" in expired.json()["errors"]
    assert bad_date.status_code == 400 and "expires_at" in bad_date.json()["errors"]


# -- bad input ------------------------------------------------------------------


def test_merchants_create__malformed_json_or_wrong_type__400_parse_or_invalid(api, db):
    # When
    malformed = api.post(
        "/api/v1/merchants", data="{nope", content_type="application/json"
    )
    wrong_type = api.post(
        "/api/v1/merchants", data="key=m-1", content_type="text/plain"
    )
    not_object = api.post(
        "/api/v1/merchants", data="[1, 2]", content_type="application/json"
    )
    # Then
    assert malformed.status_code == 400 and malformed.json()["code"] == "parse_error"
    assert wrong_type.status_code == 415
    assert wrong_type.json()["code"] == "unsupported_media_type"
    assert not_object.status_code == 400 and not_object.json()["code"] == "invalid"


def test_list__absurd_offset_or_bad_filter__no_server_error(api, db):
    # When
    huge = api.get("/api/v1/merchants", {"offset": "9" * 40, "limit": "9" * 40})
    bad_bool = api.get("/api/v1/merchants", {"is_active": "perhaps"})
    nul = api.get("/api/v1/merchants", {"search": "a\x00b"})
    nul_path = api.get("/api/v1/merchants/a%00b")
    # Then
    assert huge.status_code == 200 and huge.json()["results"] == []
    assert bad_bool.status_code == 400 and "is_active" in bad_bool.json()["errors"]
    assert nul.status_code == 400
    assert nul_path.status_code == 404


# -- audit log ------------------------------------------------------------------


def test_audit_events_list__filters__only_matching_events(
    api, production, flag_factory
):
    # Given
    flag = flag_factory("sequential_workflow")
    _send(api, "post", f"{STATE}/enable")
    _send(api, "post", f"{STATE}/kill")
    state = FlagState.objects.get(flag=flag, environment=production)
    # When
    by_target = api.get(
        "/api/v1/audit-events",
        {"target_type": "flags.flagstate", "target_id": str(state.pk)},
    ).json()
    by_actor = api.get(
        "/api/v1/audit-events", {"actor": "ops", "action": "flag_state."}
    ).json()
    exact = api.get("/api/v1/audit-events", {"action": "flag_state.killed"}).json()
    # Then
    assert [e["action"] for e in by_target["results"]] == [
        "flag_state.killed",
        "flag_state.enabled",
    ]
    assert by_actor["count"] == 2 and exact["count"] == 1
    assert exact["results"][0]["actor"] == {
        "type": "user",
        "id": str(User.objects.get(username="ops").pk),
        "name": "ops",
    }


def test_audit_events_list__time_window_and_pagination__bounded(
    api, production, flag_factory
):
    # Given
    for n in range(3):
        flag_factory(f"f{n}")
    newest = AuditEvent.objects.order_by("-id").first()
    # When
    future = api.get(
        "/api/v1/audit-events",
        {"since": (newest.created_at + dt.timedelta(seconds=1)).isoformat()},
    )
    until = api.get("/api/v1/audit-events", {"until": newest.created_at.isoformat()})
    page = api.get("/api/v1/audit-events", {"limit": 2, "offset": 1})
    bad = api.get("/api/v1/audit-events", {"since": "yesterday"})
    # Then
    assert future.json()["count"] == 0
    assert until.json()["count"] == AuditEvent.objects.count() - 1
    assert len(page.json()["results"]) == 2 and page.json()["next"]
    assert bad.status_code == 400 and "since" in bad.json()["errors"]


def test_audit_events_verify__intact_chain__ok_with_count(api, production):
    # When
    response = api.get("/api/v1/audit-events/verify")
    # Then
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "checked": AuditEvent.objects.count(),
        "broken_id": None,
        "problem": "",
    }


def test_audit_events__without_view_permission__403(db):
    # Given
    client = Client()
    client.force_login(_user_with("view_flag"))
    # When
    response = client.get("/api/v1/audit-events")
    # Then
    assert response.status_code == 403


# -- API keys -------------------------------------------------------------------


@pytest.fixture
def fresh_key_cache():
    from controlplane.apikeys.cache import key_cache

    key_cache.clear()
    yield key_cache
    key_cache.clear()


def test_api_key_create__management_key__shown_once_and_bearer_acts_as_key(
    api, production, fresh_key_cache
):
    # Given
    _user_with("view_flag", "add_flag", username="ci-bot")
    # When
    created = _send(
        api,
        "post",
        "/api/v1/api-keys",
        {"name": "ci", "scope": "management", "user": "ci-bot"},
    )
    raw = created.json()["key"]
    bearer = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    listed = _send(bearer, "get", "/api/v1/flags")
    flag = _send(bearer, "post", "/api/v1/flags", {"key": "from_ci"})
    refused = _send(bearer, "post", "/api/v1/environments", {"key": "qa"})
    # Then
    assert created.status_code == 201
    assert raw.startswith(created.json()["prefix"])
    assert "key" not in api.get(f"/api/v1/api-keys/{created.json()['id']}").json()
    assert listed.status_code == 200 and flag.status_code == 201
    assert refused.status_code == 403
    event = AuditEvent.objects.get(action="flag.created", target_repr="from_ci")
    assert (event.actor_type, event.actor_name) == ("api_key", "ci")


def test_api_key_revoke__then_bearer__401_and_second_revoke_409(
    api, production, fresh_key_cache
):
    # Given
    _user_with("view_flag", username="reader")
    created = _send(
        api,
        "post",
        "/api/v1/api-keys",
        {"name": "reader", "scope": "management", "user": "reader"},
    ).json()
    # When
    revoked = api.post(f"/api/v1/api-keys/{created['id']}/revoke")
    again = api.post(f"/api/v1/api-keys/{created['id']}/revoke")
    fresh_key_cache.clear()
    refused = Client(HTTP_AUTHORIZATION=f"Bearer {created['key']}").get("/api/v1/flags")
    wrong = Client(HTTP_AUTHORIZATION="Bearer cp_mgt_not-a-key").get("/api/v1/flags")
    # Then
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert again.status_code == 409
    assert refused.status_code == 401 and wrong.status_code == 401
    assert api.get("/api/v1/api-keys").json()["count"] == 0
    assert api.get("/api/v1/api-keys", {"include_revoked": "true"}).json()["count"] == 1


def test_api_key_create__bad_input_or_server_key_use__400_404_403(
    api, production, fresh_key_cache
):
    # Given
    User.objects.create_superuser("root", password="x")
    # When
    server_without_env = _send(
        api, "post", "/api/v1/api-keys", {"name": "s", "scope": "server"}
    )
    unknown_env = _send(
        api,
        "post",
        "/api/v1/api-keys",
        {"name": "s", "scope": "server", "environment": "nowhere"},
    )
    more_powerful = _send(
        api,
        "post",
        "/api/v1/api-keys",
        {"name": "m", "scope": "management", "user": "root"},
    )
    server = _send(
        api,
        "post",
        "/api/v1/api-keys",
        {"name": "checkout", "scope": "server", "environment": "production"},
    )
    server_key_here = Client(HTTP_AUTHORIZATION=f"Bearer {server.json()['key']}").get(
        "/api/v1/flags"
    )
    # Then
    assert server_key_here.status_code == 403
    assert server_without_env.status_code == 400
    assert "environment" in server_without_env.json()["errors"]
    assert unknown_env.status_code == 404
    assert more_powerful.status_code == 403
    assert server.status_code == 201 and server.json()["environment"] == "production"
    assert api.get("/api/v1/api-keys/999999").status_code == 404


def test_merchant_with_slash_in_key__detail_and_override__addressable(
    api, production, flag_factory, merchant_factory
):
    # Given
    flag_factory("sequential_workflow")
    merchant_factory("shop/kr/42")
    # When
    got = api.get("/api/v1/merchants/shop/kr/42")
    put = _send(api, "put", f"{STATE}/overrides/shop/kr/42", {"variation": "on"})
    # Then
    assert got.status_code == 200 and got.json()["key"] == "shop/kr/42"
    assert put.status_code == 200 and put.json()["merchant"] == "shop/kr/42"
