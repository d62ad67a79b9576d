"""Alert triggers: secret URLs a monitoring system calls to kill a flag.

Real HTTP through Django's test client (the evaluation requests through the
hot path, as the app would send them), real database, real audit rows.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from flags import services
from flags.models import AlertTrigger, FlagState
from flags.services.triggers import secret_hash, trigger_url
from flags.snapshot import store
from tests.flags.test_hotpath_client import HotPathClient

EVALUATE = "/api/v1/evaluate"


def alertmanager(status: str = "firing", **overrides) -> dict:
    """Return an Alertmanager webhook payload (version 4) for HighErrorRate."""
    labels = {
        "alertname": "HighErrorRate",
        "service": "checkout",
        "severity": "page",
    }
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "controlplane",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "checkout 5xx above 2%"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": {**labels, "instance": "web-1"},
                "annotations": {"summary": "checkout 5xx above 2%"},
                "startsAt": "2026-12-01T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": "a1b2c3",
            }
        ],
    }
    body.update(overrides)
    return body


def call(client: Client, url: str, body=None, **extra):
    data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    return client.post(
        url,
        data=data if data is not None else b"",
        content_type=extra.pop("content_type", "application/json"),
        **extra,
    )


@pytest.fixture
def workflow(production, flag_factory):
    """sequential_workflow on for everyone in production."""
    flag = flag_factory("sequential_workflow")
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=production, enabled=True
    )
    services.flag_state_serve(
        actor=SYSTEM, flag=flag, environment=production, variation="on"
    )
    return flag


@pytest.fixture
def trigger(workflow, production):
    made, raw = services.alert_trigger_create(
        actor=SYSTEM, flag=workflow, environment=production, name="alertmanager"
    )
    return made, trigger_url(made, raw)


@pytest.fixture
def restoring_trigger(workflow, production):
    made, raw = services.alert_trigger_create(
        actor=SYSTEM,
        flag=workflow,
        environment=production,
        name="alertmanager-restore",
        can_restore=True,
    )
    return made, trigger_url(made, raw)


@pytest.fixture
def evaluate(production):
    from controlplane.apikeys.cache import key_cache
    from controlplane.apikeys.services import apikey_create

    store().clear()
    key_cache.clear()
    _, raw = apikey_create(
        actor=SYSTEM, name="checkout", scope="server", environment=production
    )
    client = HotPathClient()

    def answer(flag: str = "sequential_workflow") -> dict:
        store().check_versions()
        response = client.post(
            EVALUATE,
            data=json.dumps({"context": {"merchant": "m-1"}, "flags": [flag]}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 200, response.content
        assert response["X-Served-By"] == "hotpath"
        return response.json()["flags"][0]

    yield answer
    store().clear()
    key_cache.clear()


def _state(flag, environment) -> FlagState:
    return FlagState.objects.get(flag=flag, environment=environment)


# -- Alertmanager ------------------------------------------------------------------


def test_trigger__alertmanager_firing__flag_killed_and_evaluation_answers_off(
    client, trigger, workflow, production, evaluate
):
    # Given
    made, url = trigger
    assert evaluate()["value"] is True
    # When
    response = call(client, url, alertmanager("firing"))
    # Then
    assert response.status_code == 200, response.content
    assert response.json() == {
        "trigger": made.pk,
        "flag": "sequential_workflow",
        "environment": "production",
        "action": "kill",
        "result": "killed",
        "enabled": False,
        "killed": True,
        "state_version": _state(workflow, production).version,
    }
    state = _state(workflow, production)
    assert state.killed_at is not None
    assert "HighErrorRate" in state.kill_reason
    assert "'alertmanager'" in state.kill_reason
    answer = evaluate()
    assert (answer["value"], answer["reason"]) == (False, "DISABLED")


def test_trigger__firing__audit_names_trigger_and_carries_labels(
    client, trigger, workflow, production
):
    # Given
    made, url = trigger
    # When
    call(client, url, alertmanager("firing"))
    # Then
    killed = AuditEvent.objects.get(action="flag_state.killed")
    assert (killed.actor_type, killed.actor_id, killed.actor_name) == (
        "alert_trigger",
        str(made.pk),
        "alertmanager",
    )
    fired = AuditEvent.objects.get(action="alert_trigger.fired")
    assert fired.target_id == str(made.pk)
    assert fired.environment == "production"
    assert fired.details["alertname"] == "HighErrorRate"
    assert fired.details["status"] == "firing"
    assert fired.details["result"] == "killed"
    assert fired.details["alerts"] == [
        {
            "status": "firing",
            "labels": {
                "alertname": "HighErrorRate",
                "service": "checkout",
                "severity": "page",
                "instance": "web-1",
            },
        }
    ]
    assert fired.details["common_labels"]["service"] == "checkout"


def test_trigger__firing_twice__second_is_noop_200_and_one_kill_event(
    client, trigger, workflow, production
):
    # Given
    _, url = trigger
    call(client, url, alertmanager("firing"))
    version = _state(workflow, production).version
    # When
    again = call(client, url, alertmanager("firing"))
    # Then
    assert again.status_code == 200
    assert again.json()["result"] == "already_killed"
    assert _state(workflow, production).version == version
    assert AuditEvent.objects.filter(action="flag_state.killed").count() == 1
    assert AuditEvent.objects.filter(action="alert_trigger.fired").count() == 1


def test_trigger__resolved_without_restore__unchanged(
    client, trigger, workflow, production, evaluate
):
    # Given
    _, url = trigger
    call(client, url, alertmanager("firing"))
    version = _state(workflow, production).version
    # When
    response = call(client, url, alertmanager("resolved"))
    # Then
    assert response.status_code == 200
    assert response.json()["result"] == "ignored"
    assert _state(workflow, production).version == version
    assert evaluate()["reason"] == "DISABLED"
    assert not AuditEvent.objects.filter(action="flag_state.restored").exists()


def test_trigger__resolved_with_restore__its_own_kill_restored(
    client, restoring_trigger, workflow, production, evaluate
):
    # Given
    _, url = restoring_trigger
    call(client, url, alertmanager("firing"))
    # When
    response = call(client, url, alertmanager("resolved"))
    # Then
    assert response.json()["result"] == "restored"
    assert _state(workflow, production).killed_at is None
    assert evaluate()["value"] is True
    restored = AuditEvent.objects.get(action="flag_state.restored")
    assert restored.actor_type == "alert_trigger"
    assert "resolved" in restored.details["reason"]


def test_trigger__resolved_with_restore__someone_elses_kill_kept(
    client, restoring_trigger, workflow, production, actor
):
    # Given: an operator killed the flag, not the trigger
    _, url = restoring_trigger
    services.flag_state_kill(
        actor=actor, flag=workflow, environment=production, reason="by hand"
    )
    # When
    response = call(client, url, alertmanager("resolved"))
    # Then
    assert response.json()["result"] == "not_killed"
    state = _state(workflow, production)
    assert (state.killed_at is not None, state.kill_reason) == (True, "by hand")


# -- plain POST ----------------------------------------------------------------


def test_trigger__plain_empty_post__kills(client, trigger, workflow, production):
    # Given
    _, url = trigger
    # When: what `curl -X POST URL` and `curl -d '' URL` send
    response = client.generic("POST", url)
    again = client.generic(
        "POST", url, b"", content_type="application/x-www-form-urlencoded"
    )
    # Then
    assert response.status_code == 200, response.content
    assert response.json()["result"] == "killed"
    assert again.status_code == 200, again.content
    assert again.json()["result"] == "already_killed"
    assert _state(workflow, production).enabled is False


def test_trigger__plain_kill_then_restore__restored_when_allowed(
    client, restoring_trigger, trigger, workflow, production
):
    # Given
    _, url = restoring_trigger
    call(client, url, {"action": "kill", "reason": "synthetic check failed"})
    assert "synthetic check failed" in _state(workflow, production).kill_reason
    # When: the trigger that may not restore asks first
    refused = call(client, trigger[1], {"action": "restore"})
    restored = call(client, url, {"action": "restore"})
    # Then
    assert refused.json()["result"] == "ignored"
    assert restored.json()["result"] == "restored"
    assert _state(workflow, production).enabled is True


# -- refusals --------------------------------------------------------------------


def test_trigger__wrong_secret_or_unknown_id__404_same_answer(
    client, trigger, workflow, production
):
    # Given
    made, url = trigger
    version = _state(workflow, production).version
    # When
    wrong = call(client, f"/api/v1/triggers/{made.pk}/cp_trg_wrong/", {})
    unknown = call(client, url.replace(f"/{made.pk}/", "/999999/"), {})
    huge_id = call(client, url.replace(f"/{made.pk}/", f"/{'9' * 40}/"), {})
    # Then
    assert wrong.status_code == unknown.status_code == huge_id.status_code == 404
    assert wrong.json() == unknown.json() == huge_id.json()
    assert _state(workflow, production).version == version


def test_trigger__secret_stored_hashed__never_raw(trigger):
    # Given
    made, url = trigger
    raw = url.rstrip("/").rsplit("/", 1)[1]
    # Then
    stored = AlertTrigger.objects.get(pk=made.pk)
    assert stored.secret_hash == secret_hash(raw) != raw
    assert raw.startswith(stored.prefix)
    created = AuditEvent.objects.get(action="alert_trigger.created")
    assert raw not in json.dumps([created.before, created.after, created.details])


def test_trigger__revoked__410_and_nothing_changes(
    client, trigger, workflow, production, actor
):
    # Given
    made, url = trigger
    services.alert_trigger_revoke(actor=actor, trigger=made)
    # When
    response = call(client, url, alertmanager("firing"))
    # Then
    assert response.status_code == 410
    assert response.json()["code"] == "revoked"
    assert _state(workflow, production).enabled is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (alertmanager(status="pending"), "status"),
        (alertmanager(version="3"), "version"),
        (alertmanager(alerts={"a": 1}), "alerts"),
        (
            alertmanager(alerts=[{"labels": {"x": {"nested": True}}}]),
            "alerts[0].labels.x",
        ),
        (alertmanager(alerts=[{"labels": ["x"]}]), "alerts[0].labels"),
        (alertmanager(alerts=[{"labels": {}}] * 1001), "alerts"),
        (alertmanager(commonLabels={f"l{i}": "v" for i in range(65)}), "commonLabels"),
        (
            alertmanager(alerts=[{"labels": {"big": "x" * 5000}}]),
            "alerts[0].labels.big",
        ),
        ({"action": "explode"}, "action"),
        ({"action": "kill", "extra": 1}, "extra"),
        ({"reason": 5}, "reason"),
    ],
)
def test_trigger__bad_payload__400_with_field_and_nothing_changes(
    client, trigger, workflow, production, body, field
):
    # Given
    _, url = trigger
    # When
    response = call(client, url, body)
    # Then
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    assert _state(workflow, production).enabled is True


def test_trigger__untrusted_bytes__4xx_and_nothing_changes(
    client, trigger, workflow, production
):
    # Given
    _, url = trigger
    nul = json.dumps(alertmanager()).replace("checkout", "check\\u0000out")
    deep = "[" * 500 + "]" * 500
    # When
    answers = {
        "nul": call(client, url, nul),
        "undecodable": call(client, url, b'{"action": "\xff"}'),
        "deep": call(client, url, f'{{"alerts": {deep}}}'),
        "not json": call(client, url, "action=kill", content_type="text/plain"),
        "array": call(client, url, "[1, 2]"),
        "huge": call(client, url, json.dumps({"reason": "x" * 300_000})),
    }
    # Then
    codes = {name: response.status_code for name, response in answers.items()}
    assert codes == {
        "nul": 400,
        "undecodable": 400,
        "deep": 400,
        "not json": 415,
        "array": 400,
        "huge": 413,
    }
    assert _state(workflow, production).enabled is True
    assert not AuditEvent.objects.filter(action="alert_trigger.fired").exists()


def test_trigger__archived_flag__kill_still_works(
    client, trigger, workflow, production, actor
):
    # Given: a kill must never lose to a flag's bookkeeping
    _, url = trigger
    services.flag_archive(actor=actor, flag=workflow)
    # When
    response = call(client, url, alertmanager("firing"))
    # Then
    assert response.status_code == 200
    assert _state(workflow, production).killed_at is not None


# -- management API ------------------------------------------------------------


def _user_with(*codenames: str, username: str = "ops") -> User:
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def api(db) -> Client:
    client = Client()
    client.force_login(
        _user_with("view_alerttrigger", "add_alerttrigger", "change_alerttrigger")
    )
    return client


def test_trigger_api__create_list_revoke__secret_once_then_410(
    api, client, workflow, production
):
    # Given
    body = {"flag": "sequential_workflow", "environment": "production", "name": "am"}
    # When
    created = call(api, "/api/v1/triggers", body)
    listed = api.get("/api/v1/triggers")
    detail = api.get(f"/api/v1/triggers/{created.json()['id']}")
    # Then
    assert created.status_code == 201, created.content
    data = created.json()
    assert (
        data["url"]
        == f"http://testserver/api/v1/triggers/{data['id']}/{data['secret']}/"
    )
    assert data["can_restore"] is False
    assert [item["id"] for item in listed.json()["results"]] == [data["id"]]
    assert "secret" not in listed.json()["results"][0]
    assert "secret" not in detail.json() and detail.json()["name"] == "am"
    fired = call(client, data["url"].removeprefix("http://testserver"), {})
    assert fired.json()["result"] == "killed"
    # When: revoked
    revoked = api.post(f"/api/v1/triggers/{data['id']}/revoke")
    again = api.post(f"/api/v1/triggers/{data['id']}/revoke")
    # Then
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert again.status_code == 409
    assert api.get("/api/v1/triggers").json()["results"] == []
    assert call(client, data["url"], {}).status_code == 410
    assert AuditEvent.objects.filter(action="alert_trigger.revoked").count() == 1


def test_trigger_api__bad_input_and_permissions__4xx(api, workflow, production):
    # Given
    viewer = Client()
    viewer.force_login(_user_with("view_alerttrigger", username="viewer"))
    # When
    unknown_flag = call(
        api,
        "/api/v1/triggers",
        {"flag": "nope", "environment": "production", "name": "x"},
    )
    no_name = call(
        api,
        "/api/v1/triggers",
        {"flag": "sequential_workflow", "environment": "production"},
    )
    forbidden = call(
        viewer,
        "/api/v1/triggers",
        {"flag": "sequential_workflow", "environment": "production", "name": "x"},
    )
    anonymous = Client().get("/api/v1/triggers")
    # Then
    assert unknown_flag.status_code == 404 and "flag" in unknown_flag.json()["errors"]
    assert no_name.status_code == 400 and "name" in no_name.json()["errors"]
    assert forbidden.status_code == 403
    assert anonymous.status_code == 401
    assert not AlertTrigger.objects.exists()


# -- admin -------------------------------------------------------------------------


def test_trigger_admin__add__url_shown_once_and_revoke_action(
    admin_client, admin_user, client, workflow, production
):
    # Given
    add_url = "/admin/flags/alerttrigger/add/"
    # When
    response = admin_client.post(
        add_url,
        {
            "name": "grafana",
            "flag": workflow.pk,
            "environment": production.pk,
            "can_restore": "on",
        },
        follow=True,
    )
    # Then
    made = AlertTrigger.objects.get(name="grafana")
    page = response.content.decode()
    start = page.index(f"/api/v1/triggers/{made.pk}/")
    path = page[
        start : page.index("/", start + len(f"/api/v1/triggers/{made.pk}/")) + 1
    ]
    assert made.can_restore is True
    assert made.secret_hash == secret_hash(path.rstrip("/").rsplit("/", 1)[1])
    assert AuditEvent.objects.get(action="alert_trigger.created").actor_name == "admin"
    change = admin_client.get(f"/admin/flags/alerttrigger/{made.pk}/change/")
    assert path not in change.content.decode()
    assert call(client, path, {}).json()["result"] == "killed"
    # When: revoked from the list
    admin_client.post(
        "/admin/flags/alerttrigger/",
        {"action": "revoke_triggers", "_selected_action": [made.pk]},
    )
    # Then
    assert AlertTrigger.objects.get(pk=made.pk).revoked_at is not None
    assert call(client, path, {}).status_code == 410


# -- command ------------------------------------------------------------------------


def _run(*args: str) -> str:
    import io

    out = io.StringIO()
    call_command("flag", *args, stdout=out)
    return out.getvalue()


def test_trigger_command__create_list_revoke(client, workflow, production):
    # When
    created = _run(
        "trigger",
        "create",
        "sequential_workflow",
        "--env",
        "production",
        "--name",
        "pagerduty",
        "--can-restore",
        "--actor",
        "ops",
    )
    # Then
    url = created.split("URL (shown once, keep it secret): ", 1)[1].strip()
    made = AlertTrigger.objects.get(name="pagerduty")
    assert url.startswith(f"http://127.0.0.1:8000/api/v1/triggers/{made.pk}/cp_trg_")
    assert made.can_restore is True
    assert AuditEvent.objects.get(action="alert_trigger.created").actor_name == "ops"
    listed = _run("trigger", "list")
    assert "pagerduty" in listed and url.rsplit("/", 2)[1] not in listed
    path = url.removeprefix("http://127.0.0.1:8000")
    assert call(client, path, {}).json()["result"] == "killed"
    # When
    revoked = _run("trigger", "revoke", str(made.pk))
    # Then
    assert "revoked" in revoked
    assert "pagerduty" not in _run("trigger", "list")
    assert "pagerduty" in _run("trigger", "list", "--all")
    with pytest.raises(CommandError, match="already revoked"):
        _run("trigger", "revoke", str(made.pk))
    with pytest.raises(CommandError, match="unknown trigger"):
        _run("trigger", "revoke", "abc")
    with pytest.raises(CommandError, match="unknown flag"):
        _run("trigger", "create", "nope", "--env", "production", "--name", "x")
