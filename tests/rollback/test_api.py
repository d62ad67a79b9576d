"""Management API of the rollback engine over real HTTP (Django test client)."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Permission, User

from controlplane.audit.models import AuditEvent
from rollback.models import Deployment, RollbackRun


@pytest.fixture
def operator(db):
    user = User.objects.create_user("ops", password="pw")
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="rollback")
    )
    return user


@pytest.fixture
def api(client, operator):
    client.force_login(operator)
    return client


def test_deployment_create__ci_post__captures_migration_state_and_audits(
    api, production
):
    # Given / When
    response = api.post(
        "/api/v1/deployments",
        {
            "service": "shop",
            "environment": "production",
            "version": "v7",
            "artifact": "sha:abc",
        },
        content_type="application/json",
    )
    # Then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["version"] == "v7" and body["previous"] is None
    assert (
        body["migration_state"]["default"]["rollback"]
        == "0002_rollbackstep_process_group"
    )
    assert (
        AuditEvent.objects.filter(
            action="deployment.recorded", actor_name="ops"
        ).count()
        == 1
    )


def test_deployment_create__missing_version__400_field_error(api, production):
    response = api.post(
        "/api/v1/deployments",
        {"service": "shop", "environment": "production"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "version" in response.json()["errors"]
    assert Deployment.objects.count() == 0


def test_deployment_create__unknown_environment__404(api, db):
    response = api.post(
        "/api/v1/deployments",
        {"service": "s", "environment": "mars", "version": "1"},
        content_type="application/json",
    )
    assert response.status_code == 404
    assert response.json()["message"] == "environment 'mars' does not exist"


def test_deployment_list_and_detail__two_recorded__newest_first(api, deployment_pair):
    v1, v2 = deployment_pair
    listing = api.get("/api/v1/deployments").json()["results"]
    assert [d["version"] for d in listing] == ["v2", "v1"]
    detail = api.get(f"/api/v1/deployments/{v2.pk}").json()
    assert (detail["previous"], detail["previous_version"], detail["status"]) == (
        v1.pk,
        "v1",
        "live",
    )
    assert api.get("/api/v1/deployments/9999").status_code == 404


def test_deployment_preflight__no_backend__level_2_not_possible(api, deployment_pair):
    _, v2 = deployment_pair
    response = api.get(f"/api/v1/deployments/{v2.pk}/preflight")
    assert response.status_code == 200
    levels = response.json()["levels"]
    assert levels["2"]["possible"] is False
    assert "no deploy backend" in levels["2"]["reasons"][0]
    assert levels["3"]["possible"] is True


def test_rollback_run_create__level_2__201_and_run_executed(
    api,
    deployment_pair,
    releases,
    rollback_settings,
    django_capture_on_commit_callbacks,
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/rollback-runs",
            {"level": 2, "deployment": v2.pk, "reason": "5xx"},
            content_type="application/json",
        )
    # Then
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    detail = api.get(f"/api/v1/rollback-runs/{run_id}").json()
    assert detail["status"] == "succeeded"
    assert [(s["actuator"], s["status"]) for s in detail["steps"]] == [
        ("flag_toggle", "skipped"),
        ("deployment_revert", "succeeded"),
    ]
    assert api.post(f"/api/v1/rollback-runs/{run_id}/retry").status_code == 409


@pytest.mark.parametrize(
    "payload,status,field",
    [
        ({"level": 4, "deployment": 1}, 400, "level"),
        ({"level": "two", "deployment": 1}, 400, "level"),
        ({"level": 2, "deployment": 9999}, 404, None),
        ({"level": 2}, 400, "deployment"),
    ],
)
def test_rollback_run_create__bad_input__error_and_nothing_created(
    api, deployment_pair, payload, status, field
):
    response = api.post(
        "/api/v1/rollback-runs", payload, content_type="application/json"
    )
    assert response.status_code == status, response.content
    if field:
        assert field in response.json()["errors"]
    assert RollbackRun.objects.count() == 0


def test_rollback_run_create__no_backend__409(api, deployment_pair):
    _, v2 = deployment_pair
    response = api.post(
        "/api/v1/rollback-runs",
        {"level": 2, "deployment": v2.pk},
        content_type="application/json",
    )
    assert response.status_code == 409
    assert "no deploy backend for service 'shop'" in response.json()["message"]


def test_rollback_api__unauthenticated__refused(client, deployment_pair):
    assert client.get("/api/v1/deployments").status_code in (401, 403)
    assert client.post(
        "/api/v1/rollback-runs", {"level": 1}, content_type="application/json"
    ).status_code in (401, 403)


def test_rollback_api__no_permission__403(client, deployment_pair):
    client.force_login(User.objects.create_user("viewer", password="pw"))
    assert client.get("/api/v1/deployments").status_code == 403


def test_rollback_run_detail__unknown__404(api):
    assert api.get("/api/v1/rollback-runs/12345").status_code == 404


@pytest.fixture
def two_services(tmp_path, releases, rollback_settings):
    """Backends "shop" (bound by name) and "payments" (bound by its list)."""
    other = tmp_path / "payments"
    (other / "releases" / "v1").mkdir(parents=True)
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "shop": {"type": "symlink", "root": str(releases)},
            "payments": {
                "type": "symlink",
                "root": str(other),
                "services": ["payments", "payments-eu"],
            },
        }
    )
    return releases, other


def _post_run(api, payload):
    return api.post("/api/v1/rollback-runs", payload, content_type="application/json")


def test_rollback_run_create__backend_of_another_service__403_on_backend_nothing_run(
    api, deployment_pair, two_services, django_capture_on_commit_callbacks
):
    # Given: shop's live deployment; "payments" may revert payments only
    _, v2 = deployment_pair
    shop_root, payments_root = two_services
    events = AuditEvent.objects.count()
    # When
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _post_run(
            api, {"level": 2, "deployment": v2.pk, "backend": "payments"}
        )
    # Then
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["code"] == "forbidden"
    assert body["errors"]["backend"] == [
        "deploy backend 'payments' may not revert service 'shop'"
        " (service 'shop' may use: shop)"
    ]
    assert RollbackRun.objects.count() == 0 and callbacks == []
    assert AuditEvent.objects.count() == events
    assert not (payments_root / "current").exists()
    assert os.readlink(shop_root / "current") == "releases/v2"


def test_rollback_run_create__unknown_backend__400_on_backend(
    api, deployment_pair, two_services
):
    # Given
    _, v2 = deployment_pair
    # When
    response = _post_run(api, {"level": 2, "deployment": v2.pk, "backend": "k8s"})
    # Then
    assert response.status_code == 400, response.content
    assert response.json()["errors"]["backend"] == [
        "deploy backend 'k8s' is not configured (service 'shop' may use: shop)"
    ]
    assert RollbackRun.objects.count() == 0


def test_rollback_run_create__own_backend_named__201_and_reverted(
    api, deployment_pair, two_services, django_capture_on_commit_callbacks
):
    # Given
    _, v2 = deployment_pair
    shop_root, _ = two_services
    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = _post_run(api, {"level": 2, "deployment": v2.pk, "backend": "shop"})
    # Then
    assert response.status_code == 201, response.content
    run = api.get(f"/api/v1/rollback-runs/{response.json()['id']}").json()
    assert run["status"] == "succeeded"
    assert run["steps"][1]["params"]["backend"] == "shop"
    assert os.readlink(shop_root / "current") == "releases/v1"


def test_rollback_run_create__default_when_service_has_own_backend__403(
    api, deployment_pair, releases, tmp_path, rollback_settings
):
    # Given: an unbound "default" serves only services without a backend
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "shop": {"type": "symlink", "root": str(releases)},
            "default": {"type": "symlink", "root": str(tmp_path / "{service}")},
        }
    )
    # When
    response = _post_run(api, {"level": 2, "deployment": v2.pk, "backend": "default"})
    # Then
    assert response.status_code == 403, response.content
    assert "may not revert service 'shop'" in response.json()["errors"]["backend"][0]
    assert RollbackRun.objects.count() == 0


def test_rollback_run_create__no_backend_named__service_bound_backend_chosen(
    api,
    deployment_pair,
    releases,
    rollback_settings,
    django_capture_on_commit_callbacks,
):
    # Given: the only backend bound to shop is "k8s" (by its services list)
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "k8s": {"type": "symlink", "root": str(releases), "services": ["shop"]},
        }
    )
    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = _post_run(api, {"level": 2, "deployment": v2.pk})
    # Then
    assert response.status_code == 201, response.content
    run = api.get(f"/api/v1/rollback-runs/{response.json()['id']}").json()
    assert run["status"] == "succeeded"
    assert run["steps"][1]["params"]["backend"] == "k8s"


def test_rollback_run_create__backend_cannot_verify_not_idempotent__409_says_why(
    api, deployment_pair, deploy_script, tmp_path, rollback_settings
):
    # Given: a command backend without verify_argv, not marked idempotent
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "shop": {"type": "command", "argv": [str(deploy_script), "{version}"]}
        }
    )
    # When
    response = _post_run(api, {"level": 2, "deployment": v2.pk})
    # Then
    assert response.status_code == 409, response.content
    message = response.json()["message"]
    assert "deploy backend 'shop': command backend has no 'verify_argv'" in message
    assert 'mark it "idempotent": true' in message
    assert RollbackRun.objects.count() == 0
    assert not (tmp_path / "calls.log").exists()


def test_deployment_preflight__backend_of_another_service__level_2_not_possible(
    api, deployment_pair, two_services
):
    # Given
    _, v2 = deployment_pair
    # When
    response = api.get(f"/api/v1/deployments/{v2.pk}/preflight?backend=payments")
    # Then
    assert response.status_code == 200
    level_2 = response.json()["levels"]["2"]
    assert level_2["possible"] is False
    assert "may not revert service 'shop'" in level_2["reasons"][0]
