"""Fixtures of the change-management tests: a flag, people, a policy."""

from __future__ import annotations

import pytest

from controlplane.audit.actors import Actor
from flags.changes import services


@pytest.fixture
def flag(production, flag_factory):
    return flag_factory("checkout_theme")


@pytest.fixture
def alice() -> Actor:
    return Actor(type="user", id="1", name="alice")


@pytest.fixture
def bob() -> Actor:
    return Actor(type="user", id="2", name="bob")


@pytest.fixture
def carol() -> Actor:
    return Actor(type="user", id="3", name="carol")


@pytest.fixture
def two_eyes(production, alice):
    """production: flag state changes and overrides need 2 approvals."""
    return services.approval_policy_set(
        actor=alice, environment=production, flag_state=2, override=2
    )
