"""Factories that build rows through the services (so audit and versions hold)."""

from __future__ import annotations

import itertools

import pytest

from controlplane.audit.actors import SYSTEM

_counter = itertools.count(1)


@pytest.fixture
def environment_factory(db):
    from flags import services

    def make(key: str | None = None, **kwargs):
        key = key or f"env-{next(_counter)}"
        return services.environment_create(
            actor=SYSTEM, key=key, name=kwargs.pop("name", key), **kwargs
        )

    return make


@pytest.fixture
def flag_factory(db):
    from flags import services

    def make(key: str | None = None, **kwargs):
        key = key or f"flag-{next(_counter)}"
        return services.flag_create(
            actor=SYSTEM, key=key, name=kwargs.pop("name", key), **kwargs
        )

    return make


@pytest.fixture
def merchant_factory(db):
    from flags import services

    def make(key: str | None = None, **kwargs):
        key = key or f"m-{next(_counter)}"
        return services.merchant_create(actor=SYSTEM, key=key, **kwargs)

    return make
