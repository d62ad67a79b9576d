"""The in-memory ruleset store: cold load, version checks, propagation to a
second store instance by LISTEN/NOTIFY, Redis pub/sub or polling."""

from __future__ import annotations

import time

import pytest

from controlplane.audit.actors import SYSTEM
from controlplane.exceptions import NotFound
from flags import engine, services
from flags.snapshot import RulesetStore
from tests.apikeys.fixtures import serving_reset  # noqa: F401


def wait_for(predicate, timeout: float = 5.0, step: float = 0.01) -> float:
    """Return the seconds until ``predicate()`` held; fail after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s")


def test_store__cold_then_warm__same_compiled_ruleset(production, flag_factory):
    # Given
    flag_factory("sequential_workflow")
    store = RulesetStore()
    # When
    first, first_stale = store.get_ruleset("production")
    second, _ = store.get_ruleset("production")
    # Then
    assert first is second
    assert first_stale is False
    assert "sequential_workflow" in first.flags


def test_store__unknown_environment__not_found_then_cached_absent(
    production, django_assert_num_queries
):
    # Given
    store = RulesetStore()
    store.get_ruleset("production")
    with pytest.raises(NotFound):
        store.get_ruleset("nowhere")
    # When / Then: the absent answer comes from the last version check
    with django_assert_num_queries(0):
        with pytest.raises(NotFound):
            store.get_ruleset("nowhere")


def test_store__version_moved__check_reloads_only_that_environment(
    environments, flag_factory
):
    # Given
    flag = flag_factory("sequential_workflow")
    store = RulesetStore()
    old_production, _ = store.get_ruleset("production")
    old_staging, _ = store.get_ruleset("staging")
    # When
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=environments["production"], enabled=True
    )
    reloaded = store.check_versions()
    # Then
    assert reloaded == ["production"]
    assert store.get_ruleset("production")[0].version == old_production.version + 1
    assert store.get_ruleset("staging")[0] is old_staging


def _background(settings, **overrides):
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "RULESET_BACKGROUND": True,
        **overrides,
    }


def _propagation(settings, environment_factory, flag_factory) -> float:
    environment = environment_factory("prop")
    flag = flag_factory("prop_flag")
    store = RulesetStore()
    store.start()
    try:
        before, _ = store.get_ruleset("prop")
        wait_for(lambda: store._background_alive() and store._last_ok > 0)
        time.sleep(0.2)  # the listener is subscribed
        services.flag_state_set_enabled(
            actor=SYSTEM, flag=flag, environment=environment, enabled=True
        )
        elapsed = wait_for(
            lambda: store.get_ruleset("prop")[0].version > before.version
        )
        answer = engine.evaluate(
            store.get_ruleset("prop")[0], "prop_flag", {"merchant": "m"}
        )
        assert answer.reason == "STATIC"  # enabled: fallthrough, not DISABLED
        return elapsed
    finally:
        store.stop()


@pytest.mark.slow
def test_store_background__change_through_service__second_store_sees_it(
    transactional_db, settings, environment_factory, flag_factory, serving_reset
):
    # Given: polling (SQLite) or LISTEN/NOTIFY (PostgreSQL) at the defaults
    _background(settings, RULESET_POLL_INTERVAL=0.1)
    # When
    elapsed = _propagation(settings, environment_factory, flag_factory)
    # Then
    assert elapsed < 1.0


@pytest.mark.postgres
@pytest.mark.slow
def test_store_listen__poll_far_away__notify_alone_propagates(
    transactional_db, settings, environment_factory, flag_factory, serving_reset
):
    # Given: the poll would take 30 s; only the notification can be this fast
    _background(settings, RULESET_POLL_INTERVAL=30, RULESET_STALE_AFTER=120)
    # When
    elapsed = _propagation(settings, environment_factory, flag_factory)
    # Then
    assert elapsed < 1.0


@pytest.mark.slow
def test_store_redis__poll_far_away__pubsub_alone_propagates(
    transactional_db, settings, environment_factory, flag_factory, serving_reset
):
    # Given
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/5"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except Exception:
        pytest.skip("no Redis on 127.0.0.1:6379")
    _background(
        settings,
        RULESET_POLL_INTERVAL=30,
        RULESET_STALE_AFTER=120,
        RULESET_REDIS_URL=url,
    )
    # When
    elapsed = _propagation(settings, environment_factory, flag_factory)
    # Then
    assert elapsed < 1.0
