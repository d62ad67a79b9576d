"""Shared fixtures: environments, an actor, factories; the postgres marker."""

from __future__ import annotations

import pytest
from django.db import connection

from controlplane.audit.actors import SYSTEM, Actor
from tests.factories import environment_factory, flag_factory, merchant_factory  # noqa: F401


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    is_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords and not is_postgres:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Let the test database be flushed: disable the audit TRUNCATE trigger.

    Transactional tests (``transactional_db``, ``live_server``) empty the
    database with TRUNCATE after each test, which the trigger of
    audit/0004 refuses on PostgreSQL. It is disabled in the test database
    only; ``tests/audit/test_checkpoints.py`` enables it inside a test's
    transaction to prove it refuses.
    """
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "ALTER TABLE audit_auditevent "
                    "DISABLE TRIGGER audit_event_no_truncate"
                )


@pytest.fixture
def actor() -> Actor:
    return Actor(type="user", id="test:alice", name="alice")


@pytest.fixture
def system_actor() -> Actor:
    return SYSTEM


@pytest.fixture
def environments(db):
    """production and staging, created through the service."""
    from flags import services

    production = services.environment_create(
        actor=SYSTEM, key="production", name="Production"
    )
    staging = services.environment_create(
        actor=SYSTEM, key="staging", name="Staging", sort_order=1
    )
    return {"production": production, "staging": staging}


@pytest.fixture
def production(environments):
    return environments["production"]


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"
