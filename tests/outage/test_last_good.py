"""The last known good serving state on disk: atomic, versioned, hashes only."""

from __future__ import annotations

import json

import pytest

from controlplane import lastgood
from controlplane.apikeys.cache import KEYS_RECORD, key_cache
from controlplane.apikeys.services import apikey_create, apikey_revoke, key_hash
from controlplane.audit.actors import SYSTEM
from tests.apikeys.fixtures import serving_reset  # noqa: F401


@pytest.fixture
def state_dir(settings, tmp_path):
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "SERVING_STATE_DIR": str(tmp_path),
    }
    return tmp_path


def test_lastgood_write__then_read__same_payload_version_no_temp_left(state_dir):
    # Given
    payload = {"environment": "production", "version": 4, "flags": [{"key": "é"}]}
    # When
    written = lastgood.write("ruleset-production", payload, version=4)
    record = lastgood.read("ruleset-production")
    # Then
    assert written is True
    assert (record.version, record.payload) == (4, payload)
    assert record.saved_at
    files = [p.name for p in lastgood.state_dir().iterdir()]
    assert sorted(files) == [".lock", "ruleset-production.json"]


def test_lastgood_write__older_version_newer_only__newer_kept(state_dir):
    # Given: another process already wrote version 7
    lastgood.write("ruleset-production", {"version": 7}, version=7, newer_only=True)
    # When: a process that loaded earlier writes version 6
    written = lastgood.write(
        "ruleset-production", {"version": 6}, version=6, newer_only=True
    )
    # Then
    assert written is False
    assert lastgood.read("ruleset-production").version == 7


def test_lastgood_read__tampered_or_torn_file__ignored(state_dir):
    # Given
    lastgood.write("apikeys", {"keys": {"a" * 64: [1]}}, version="v1")
    path = lastgood.state_dir() / "apikeys.json"
    raw = json.loads(path.read_text())
    raw["payload"]["keys"]["b" * 64] = [2]  # a key added by hand
    path.write_text(json.dumps(raw))
    # When / Then
    assert lastgood.read("apikeys") is None
    # When: a torn write
    path.write_text('{"format": 1, "vers')
    # Then
    assert lastgood.read("apikeys") is None


def test_lastgood_state_dir__other_database__other_directory(state_dir):
    # Given
    from django.db import connections

    here = lastgood.state_dir()
    settings_dict = connections["default"].settings_dict
    name = settings_dict["NAME"]
    # When: the same disk, another database
    settings_dict["NAME"] = f"{name}-other"
    try:
        there = lastgood.state_dir()
    finally:
        settings_dict["NAME"] = name
    # Then
    assert here != there
    assert here.parent == there.parent == state_dir


def test_key_cache_revalidate__keys__server_key_hashes_only_on_disk(
    production, state_dir, serving_reset
):
    # Given: a server key, a revoked server key, a management key
    _, raw = apikey_create(
        actor=SYSTEM, name="live", scope="server", environment=production
    )
    gone, raw_gone = apikey_create(
        actor=SYSTEM, name="gone", scope="server", environment=production
    )
    apikey_revoke(actor=SYSTEM, api_key=gone)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("svc")
    _, raw_mgmt = apikey_create(actor=SYSTEM, name="ops", scope="management", user=user)
    # When
    key_cache.revalidate()
    # Then: only the live server key, and only its hash
    record = lastgood.read(KEYS_RECORD)
    assert list(record.payload["keys"]) == [key_hash(raw)]
    text = (lastgood.state_dir() / f"{KEYS_RECORD}.json").read_text()
    for secret in (raw, raw_gone, raw_mgmt):
        assert secret not in text
    assert key_hash(raw_mgmt) not in text and key_hash(raw_gone) not in text


def test_key_cache_revalidate__key_revoked__dropped_from_disk(
    production, state_dir, serving_reset
):
    # Given
    api_key, raw = apikey_create(
        actor=SYSTEM, name="live", scope="server", environment=production
    )
    key_cache.revalidate()
    assert key_hash(raw) in lastgood.read(KEYS_RECORD).payload["keys"]
    # When
    apikey_revoke(actor=SYSTEM, api_key=api_key)
    key_cache.revalidate()
    # Then: a process started later in an outage does not accept it
    assert lastgood.read(KEYS_RECORD).payload["keys"] == {}


def test_store_load__ruleset__written_with_its_version(
    production, flag_factory, state_dir, serving_reset
):
    # Given
    from flags.snapshot import store

    flag_factory(key="sequential_workflow")
    # When
    ruleset, stale = store().get_ruleset("production")
    # Then
    record = lastgood.read("ruleset-production")
    assert record.version == ruleset.version
    assert record.payload == json.loads(json.dumps(ruleset.data))


def test_lastgood_read__written_with_other_secret_key__ignored(state_dir, settings):
    # Given: a record signed with another SECRET_KEY (or forged without one)
    settings.SECRET_KEY = "another-installation"
    lastgood.write("apikeys", {"keys": {"c" * 64: [3]}}, version="v1")
    # When
    settings.SECRET_KEY = "this-installation"
    # Then
    assert lastgood.read("apikeys") is None
