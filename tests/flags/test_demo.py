"""Demo data (``flags.demo.demo_ensure``) and ``manage.py demo``."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.audit.models import AuditEvent
from flags import engine, mappers
from flags.demo import MERCHANTS, demo_ensure
from flags.models import Environment, Flag, FlagState, Merchant, Segment


@pytest.fixture
def demo(db):
    return demo_ensure()


def answer(env_key: str, flag_key: str, merchant: str) -> engine.Evaluation:
    ruleset = mappers.ruleset_compile(Environment.objects.get(key=env_key))
    return engine.evaluate(ruleset, flag_key, {"merchant": merchant})


def test_demo_ensure__empty_database__creates_listed_rows(demo):
    # Then
    assert set(Environment.objects.values_list("key", flat=True)) == {
        "production",
        "staging",
    }
    assert set(Flag.objects.values_list("key", flat=True)) == {
        "sequential_workflow",
        "enable_supplier_policy",
        "policy_resolution_timeout_ms",
        "checkout_theme",
    }
    assert Merchant.objects.count() == len(MERCHANTS) >= 20
    assert list(
        Merchant.objects.filter(is_active=False).values_list("key", flat=True)
    ) == ["m-1024"]
    attributes = Merchant.objects.get(key="m-1001").attributes
    assert set(attributes) == {"tier", "country", "plan", "monthly_volume"}
    assert {m.attributes["country"] for m in Merchant.objects.all()} == {
        "KR",
        "US",
        "DE",
        "JP",
    }
    assert set(Segment.objects.values_list("key", flat=True)) == {"gold-tier", "korea"}
    assert FlagState.objects.count() == 8
    assert demo.created_anything


def test_demo_ensure__run_twice__second_run_writes_nothing(demo):
    # Given
    events_before = AuditEvent.objects.count()
    versions_before = list(Environment.objects.values_list("key", "ruleset_version"))
    # When
    second = demo_ensure()
    # Then
    assert AuditEvent.objects.count() == events_before > 0
    assert (
        list(Environment.objects.values_list("key", "ruleset_version"))
        == versions_before
    )
    assert not second.created_anything


def test_demo_ensure__flag_changed_by_operator__left_as_is(demo, system_actor):
    # Given
    from flags import services

    flag = Flag.objects.get(key="sequential_workflow")
    production = Environment.objects.get(key="production")
    services.flag_state_kill(actor=system_actor, flag=flag, environment=production)
    # When
    demo_ensure()
    # Then
    assert (
        FlagState.objects.get(flag=flag, environment=production).killed_at is not None
    )


# (environment, flag, merchant) -> (value, variation, reason, level)
DESIGNED_ANSWERS = [
    # Global off in production, ready for a pilot override.
    (
        ("production", "sequential_workflow", "m-1001"),
        (False, "off", "STATIC", "default"),
    ),
    (("staging", "sequential_workflow", "m-1001"), (True, "on", "STATIC", "default")),
    # 0% split in production, 100% in staging.
    (
        ("production", "enable_supplier_policy", "m-1002"),
        (False, "off", "SPLIT", "default"),
    ),
    (("staging", "enable_supplier_policy", "m-1002"), (True, "on", "SPLIT", "default")),
    (
        ("production", "policy_resolution_timeout_ms", "m-1003"),
        (100, "100ms", "STATIC", "default"),
    ),
    # Gold tier gets modern through the segment rule.
    (
        ("production", "checkout_theme", "m-1001"),
        ("modern", "modern", "TARGETING_MATCH", "rule:1"),
    ),
]


def test_demo_ensure__flags__serve_as_designed(demo):
    # When (one demo build for the whole table: building it is the slow part)
    results = {case: answer(*case) for case, _ in DESIGNED_ANSWERS}
    # Then
    for case, expected in DESIGNED_ANSWERS:
        got = results[case]
        assert (got.value, got.variation, got.reason, got.level) == expected, case


def test_demo_ensure__checkout_theme__weighted_split_for_others(demo):
    # When
    variations = {
        answer("production", "checkout_theme", key).variation
        for key, _, tier, *_ in MERCHANTS
        if tier != "gold"
    }
    state = FlagState.objects.get(
        flag__key="checkout_theme", environment__key="production"
    )
    # Then
    assert [arm["weight"] for arm in state.fallthrough["split"]] == [
        50_000,
        30_000,
        20_000,
    ]
    assert variations <= {"classic", "modern", "compact"} and len(variations) >= 2


def test_demo_ensure__admin_user__superuser_with_configured_password(demo, settings):
    # Then
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff
    assert user.check_password("admin")


def test_demo_ensure__custom_admin_setting__that_user_created(db, settings):
    # Given
    settings.CONTROLPLANE = {
        "DEMO_ADMIN_USERNAME": "ops",
        "DEMO_ADMIN_PASSWORD": "s3cret-pw",
    }
    # When
    demo_ensure()
    # Then
    assert get_user_model().objects.get(username="ops").check_password("s3cret-pw")


def test_demo_command__fresh__prints_admin_url_login_and_next_commands(db):
    # Given
    out = io.StringIO()
    # When
    call_command("demo", "--no-input", "--addr", "127.0.0.1:8123", stdout=out)
    # Then
    text = out.getvalue()
    assert "http://127.0.0.1:8123/admin/" in text
    assert "admin / admin" in text
    assert "flag override add sequential_workflow m-1001 --env production" in text
    assert Flag.objects.count() == 4


@pytest.mark.parametrize("addr", ["8000", "localhost:", "127.0.0.1:99999"])
def test_demo_command__bad_addr__one_line_error_nothing_written(db, addr):
    # When
    with pytest.raises(CommandError) as raised:
        call_command("demo", "--addr", addr, stdout=io.StringIO())
    # Then
    assert "--addr" in str(raised.value)
    assert AuditEvent.objects.count() == 0
