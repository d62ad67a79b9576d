"""API keys: services (audited), the key cache, DRF authentication, the command."""

from __future__ import annotations

import hashlib
import os

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from rest_framework import exceptions

from controlplane.apikeys.authentication import (
    ManagementKeyAuthentication,
    ServerKeyAuthentication,
)
from controlplane.apikeys.cache import key_cache, resolve_key
from controlplane.apikeys.models import ApiKey
from controlplane.apikeys.services import apikey_create, apikey_revoke
from controlplane.audit.actors import SYSTEM as SYSTEM_ACTOR
from controlplane.audit.models import AuditEvent
from controlplane.exceptions import Conflict, InvalidInput
from tests.apikeys.fixtures import serving_reset  # noqa: F401


@pytest.fixture
def service_user(django_user_model):
    return django_user_model.objects.create_user("svc-deployer")


def test_apikey_create__server_key__stored_hashed_and_audited(
    actor, production, serving_reset
):
    # When
    api_key, raw = apikey_create(
        actor=actor, name="checkout-service", scope="server", environment=production
    )
    # Then
    assert raw.startswith("cp_srv_") and len(raw) >= 40
    assert api_key.secret_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert api_key.prefix == raw[:12]
    event = AuditEvent.objects.get(action="apikey.created", target_id=str(api_key.pk))
    assert event.actor_name == "alice"
    assert event.environment == "production"
    assert raw not in str(event.after) and raw[12:] not in str(event.after)


@pytest.mark.parametrize(
    "scope,with_env,with_user,field",
    [
        ("server", False, False, "environment"),
        ("management", True, True, "environment"),
        ("management", False, False, "user"),
        ("root", False, False, "scope"),
    ],
)
def test_apikey_create__bad_scope_combination__invalid_input(
    actor, production, service_user, scope, with_env, with_user, field
):
    # When / Then
    with pytest.raises(InvalidInput) as info:
        apikey_create(
            actor=actor,
            name="k",
            scope=scope,
            environment=production if with_env else None,
            user=service_user if with_user else None,
        )
    assert info.value.field == field
    assert not ApiKey.objects.exists()


def test_apikey_revoke__active_key__revoked_and_audited_once(
    actor, production, serving_reset
):
    # Given
    api_key, raw = apikey_create(
        actor=actor, name="k", scope="server", environment=production
    )
    assert resolve_key(raw) is not None
    # When
    apikey_revoke(actor=actor, api_key=api_key)
    key_cache.revalidate()
    # Then
    assert resolve_key(raw) is None
    assert AuditEvent.objects.filter(action="apikey.revoked").count() == 1
    with pytest.raises(Conflict):
        apikey_revoke(actor=actor, api_key=api_key)


def test_resolve_key__warm__zero_queries(production, settings, serving_reset):
    # Given
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "APIKEY_CACHE_TTL": 3600}
    _, raw = apikey_create(
        actor=SYSTEM_ACTOR, name="k", scope="server", environment=production
    )
    resolve_key(raw)
    # When
    with CaptureQueriesContext(connection) as queries:
        info = resolve_key(raw)
    # Then
    assert info.environment_key == "production"
    assert len(queries) == 0


def test_resolve_key__unknown_key__absent_cached(db, settings, serving_reset):
    # Given
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "APIKEY_NEGATIVE_TTL": 3600}
    assert resolve_key("cp_srv_nope") is None
    # When
    with CaptureQueriesContext(connection) as queries:
        info = resolve_key("cp_srv_nope")
    # Then
    assert info is None
    assert len(queries) == 0


def test_resolve_key__expired_entry_without_background__rechecked(
    production, settings, serving_reset
):
    # Given: a revocation another process made, and a cache entry past its TTL
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "APIKEY_CACHE_TTL": 0}
    api_key, raw = apikey_create(
        actor=SYSTEM_ACTOR, name="k", scope="server", environment=production
    )
    assert resolve_key(raw) is not None
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    # When
    info = resolve_key(raw)
    # Then
    assert info is None


def test_last_used__many_requests__one_write_per_interval(production, serving_reset):
    # Given
    api_key, raw = apikey_create(
        actor=SYSTEM_ACTOR, name="k", scope="server", environment=production
    )
    for _ in range(50):
        resolve_key(raw)
    # When
    first = key_cache.flush_last_used()
    for _ in range(50):
        resolve_key(raw)
    second = key_cache.flush_last_used()
    # Then
    api_key.refresh_from_db()
    assert (first, second) == (1, 0)
    assert api_key.last_used_at is not None


def _request(raw: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"} if raw else {}
    return RequestFactory().get("/api/v1/flags", **headers)


def test_management_auth__management_key__service_user(service_user, serving_reset):
    # Given
    _, raw = apikey_create(
        actor=SYSTEM_ACTOR, name="ops", scope="management", user=service_user
    )
    # When
    user, info = ManagementKeyAuthentication().authenticate(_request(raw))
    # Then
    assert user == service_user
    assert info.as_actor().type == "api_key"


def test_management_auth__server_key__permission_denied(production, serving_reset):
    # Given
    _, raw = apikey_create(
        actor=SYSTEM_ACTOR, name="k", scope="server", environment=production
    )
    # When / Then
    with pytest.raises(exceptions.PermissionDenied):
        ManagementKeyAuthentication().authenticate(_request(raw))


def test_management_auth__unknown_key__authentication_failed(db, serving_reset):
    # When / Then
    with pytest.raises(exceptions.AuthenticationFailed):
        ManagementKeyAuthentication().authenticate(_request("cp_mgt_wrong"))
    assert ManagementKeyAuthentication().authenticate(_request(None)) is None


def test_server_auth__server_key__auth_is_key_info(production, serving_reset):
    # Given
    _, raw = apikey_create(
        actor=SYSTEM_ACTOR, name="k", scope="server", environment=production
    )
    # When
    user, info = ServerKeyAuthentication().authenticate(_request(raw))
    # Then
    assert user.is_authenticated and not user.has_perm("flags.change_flag")
    assert info.environment_key == "production"


def test_apikey_command__create_list_revoke__prints_key_once(
    production, capsys, serving_reset
):
    # When
    call_command(
        "apikey", "create", "--env", "production", "--name", "checkout-service"
    )
    raw = capsys.readouterr().out.strip()
    call_command("apikey", "list")
    listing = capsys.readouterr().out
    call_command("apikey", "revoke", raw[:12])
    # Then
    assert resolve_key(raw) is None or ApiKey.objects.get().revoked_at is not None
    assert raw[:12] in listing and raw not in listing
    assert ApiKey.objects.get().revoked_at is not None


@pytest.mark.parametrize(
    "args,message",
    [
        (["create", "--env", "nowhere", "--name", "x"], "unknown environment"),
        (["create", "--name", "x"], "environment"),
        (["revoke", "999"], "no API key"),
    ],
)
def test_apikey_command__bad_input__command_error(db, args, message):
    # When / Then
    with pytest.raises(CommandError, match=message):
        call_command("apikey", *args)


def test_admin_add__server_key__created_and_shown_once(
    admin_client, production, serving_reset
):
    # When
    response = admin_client.post(
        "/admin/apikeys/apikey/add/",
        {
            "name": "checkout",
            "scope": "server",
            "environment": production.pk,
            "user": "",
        },
        follow=True,
    )
    # Then
    api_key = ApiKey.objects.get()
    shown = [str(m) for m in response.context["messages"]]
    assert any(api_key.prefix in text and "not shown again" in text for text in shown)
    assert AuditEvent.objects.filter(action="apikey.created").count() == 1


def test_admin_add__management_key_without_user__form_error(admin_client, db):
    # When
    response = admin_client.post(
        "/admin/apikeys/apikey/add/",
        {
            "name": "ops",
            "scope": "management",
            "environment": "",
            "user": "",
        },
    )
    # Then
    assert response.status_code == 200
    assert "service user" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_admin_revoke_action__selected_key__revoked(
    admin_client, production, serving_reset
):
    # Given
    api_key, _ = apikey_create(
        actor=SYSTEM_ACTOR, name="k", scope="server", environment=production
    )
    # When
    admin_client.post(
        "/admin/apikeys/apikey/",
        {
            "action": "revoke_keys",
            "_selected_action": [api_key.pk],
        },
    )
    # Then
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


@pytest.fixture
def background_keys(settings, serving_reset):
    """The key cache with its revalidation thread running in this process."""
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "RULESET_BACKGROUND": True,
        "APIKEY_REVALIDATE_INTERVAL": 3600,  # the test revalidates by hand
    }
    key_cache._ensure_started()
    yield key_cache
    key_cache.stop()


def test_resolve_key__warm_with_background__no_hash_and_revocation_honoured(
    production, background_keys, monkeypatch
):
    # Given: a key resolved once while the background thread runs
    api_key, raw = apikey_create(
        actor=SYSTEM_ACTOR, name="k", scope="server", environment=production
    )
    assert resolve_key(raw).pk == api_key.pk
    # When: the warm path runs, hashing is not needed
    import controlplane.apikeys.cache as cache_module

    monkeypatch.setattr(cache_module.hashlib, "sha256", None)
    assert resolve_key(raw).pk == api_key.pk
    monkeypatch.undo()
    # Then: a revocation is honoured after the next revalidation
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    background_keys.revalidate()
    assert resolve_key(raw) is None


def test_resolve_key__forked_child__background_not_alive(production, background_keys):
    # Given: the parent's thread runs and the key is warm
    _api_key, raw = apikey_create(
        actor=SYSTEM_ACTOR, name="k", scope="server", environment=production
    )
    resolve_key(raw)
    assert background_keys._background_alive()
    # When: the process forks
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the parent's thread does not run
        os.write(write_end, b"1" if background_keys._background_alive() else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    # Then
    assert os.read(read_end, 1) == b"0"
