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
