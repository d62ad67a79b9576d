"""``manage.py flag ...``: happy paths, the pilot override, and bad input."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.audit.models import AuditEvent
from flags import engine, mappers, services
from flags.models import Flag, FlagState, MerchantOverride

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[str, str]:
    """Run ``manage.py flag *args`` in process; return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("flag", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def world(environments, flag_factory, merchant_factory, system_actor):
    """sequential_workflow enabled (default off) in production; three merchants."""
    flag = flag_factory("sequential_workflow")
    services.flag_state_set_enabled(
        actor=system_actor,
        flag=flag,
        environment=environments["production"],
        enabled=True,
    )
    theme = flag_factory(
        "checkout_theme",
        value_type="string",
        variations=[
            {"key": "classic", "value": "classic"},
            {"key": "modern", "value": "modern"},
        ],
    )
    merchants = {
        "pilot": merchant_factory("m-pilot", attributes={"tier": "gold"}),
        "other": merchant_factory("m-other"),
        "gone": merchant_factory("m-gone", is_active=False),
    }
    return {"flag": flag, "theme": theme, "merchants": merchants, **environments}


def state(flag_key: str, env_key: str) -> FlagState:
    return FlagState.objects.get(flag__key=flag_key, environment__key=env_key)


# -- the done criterion -----------------------------------------------------------


def test_flag_override_add__pilot_merchant__only_pilot_gets_on_and_printout_shows_it(
    world,
):
    # Given
    production = world["production"]
    # When
    out, err = run(
        "override",
        "add",
        "sequential_workflow",
        "m-pilot",
        "--env",
        "production",
        "--note",
        "pilot",
        "--actor",
        "carol",
    )
    # Then
    ruleset = mappers.ruleset_compile(production)
    hit = engine.evaluate(ruleset, "sequential_workflow", {"merchant": "m-pilot"})
    miss = engine.evaluate(ruleset, "sequential_workflow", {"merchant": "m-other"})
    assert (hit.value, hit.variation, hit.reason, hit.level) == (
        True,
        "on",
        "TARGETING_MATCH",
        "override",
    )
    assert (miss.value, miss.variation, miss.reason, miss.level) == (
        False,
        "off",
        "STATIC",
        "default",
    )
    assert (
        "In force for m-pilot: sequential_workflow = true (variation on, reason "
        f"TARGETING_MATCH, level override, ruleset version {ruleset.version})"
    ) in out
    event = AuditEvent.objects.get(action="override.created")
    assert (event.actor_name, event.environment) == ("carol", "production")
    assert "Recent history of m-pilot for sequential_workflow" in out
    history_row = next(
        line for line in out.splitlines() if line.strip().startswith(str(event.pk))
    )
    assert "override.created" in history_row and "user:carol" in history_row
    assert err == ""


def test_flag_override_add__more_events_than_limit__newest_first_up_to_limit(
    world, settings
):
    # Given
    settings.CONTROLPLANE = {"AUDIT_HISTORY_LIMIT": 2}
    for variation in ("on", "off"):
        run(
            "override",
            "add",
            "sequential_workflow",
            "m-pilot",
            "--env",
            "production",
            "--variation",
            variation,
        )
    # When
    out, _ = run(
        "override", "add", "sequential_workflow", "m-pilot", "--env", "staging"
    )
    # Then
    ids = list(
        AuditEvent.objects.filter(details__merchant="m-pilot")
        .order_by("-id")
        .values_list("id", flat=True)
    )
    assert len(ids) == 3
    history = out.split("Recent history", 1)[1]
    rows = [
        line.split()[0]
        for line in history.splitlines()
        if line.strip() and line.split()[0].isdigit()
    ]
    assert rows == [str(ids[0]), str(ids[1])]


def test_flag_override_add__flag_disabled__warns_and_still_saves(world):
    # Given: sequential_workflow is disabled in staging
    # When
    out, err = run(
        "override", "add", "sequential_workflow", "m-pilot", "--env", "staging"
    )
    # Then
    assert "warning: sequential_workflow is disabled in staging" in err
    assert "reason DISABLED, level off" in out
    assert MerchantOverride.objects.filter(environment__key="staging").count() == 1


def test_flag_override_add__relative_expiry__saved_with_expiry(world):
    # When
    out, _ = run(
        "override",
        "add",
        "sequential_workflow",
        "m-pilot",
        "--env",
        "production",
        "--expires",
        "12h",
    )
    # Then
    override = MerchantOverride.objects.get()
    assert override.expires_at is not None
    assert "expires " in out


def test_flag_override_remove__existing__gone_and_default_in_force(world):
    # Given
    run("override", "add", "sequential_workflow", "m-pilot", "--env", "production")
    # When
    out, _ = run(
        "override", "remove", "sequential_workflow", "m-pilot", "--env", "production"
    )
    # Then
    assert MerchantOverride.objects.count() == 0
    assert AuditEvent.objects.filter(action="override.removed").count() == 1
    assert "reason STATIC, level default" in out


def test_flag_override_list__two_overrides__both_listed(world):
    # Given
    for merchant in ("m-pilot", "m-other"):
        run("override", "add", "sequential_workflow", merchant, "--env", "production")
    # When
    out, _ = run("override", "list", "sequential_workflow", "--env", "production")
    # Then
    assert "m-pilot" in out and "m-other" in out


# -- the other subcommands ----------------------------------------------------------


def test_flag_list__two_flags__one_row_each_with_state(world):
    # When
    out, _ = run("list")
    # Then
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "on: off" in rows["sequential_workflow"]
    assert "off -> modern" in rows["checkout_theme"]  # last variation


def test_flag_list__archived_flag__hidden_unless_asked(world, system_actor):
    # Given
    services.flag_archive(actor=system_actor, flag=world["theme"])
    # When
    plain, _ = run("list", "--env", "production")
    everything, _ = run("list", "--env", "production", "--archived")
    # Then
    assert "checkout_theme" not in plain
    assert "checkout_theme" in everything


def test_flag_show__flag_with_override__prints_variations_states_overrides(world):
    # Given
    run(
        "override",
        "add",
        "checkout_theme",
        "m-pilot",
        "--env",
        "staging",
        "--variation",
        "modern",
    )
    # When
    out, _ = run("show", "checkout_theme")
    # Then
    assert '"modern"' in out
    assert "production" in out and "staging" in out
    assert "m-pilot" in out


def test_flag_create__json_variations_and_tags__flag_and_states_created(world):
    # When
    out, _ = run(
        "create",
        "timeout_ms",
        "--type",
        "number",
        "--name",
        "Timeout",
        "--variations",
        '[{"key": "fast", "value": 100}, {"key": "slow", "value": 500}]',
        "--owner",
        "team-a",
        "--tag",
        "b",
        "--tag",
        "a",
        "--actor",
        "dave",
    )
    # Then
    flag = Flag.objects.get(key="timeout_ms")
    assert (flag.value_type, flag.variation_keys, flag.tags) == (
        "number",
        ["fast", "slow"],
        ["a", "b"],
    )
    assert flag.states.count() == 2
    assert (
        AuditEvent.objects.get(action="flag.created", target_id=str(flag.pk)).actor_name
        == "dave"
    )
    assert "Created flag timeout_ms" in out


@pytest.mark.parametrize(
    "subcommand, enabled, action",
    [("enable", True, "flag_state.enabled"), ("disable", False, "flag_state.disabled")],
)
def test_flag_enable_disable__staging__state_and_audit(
    world, subcommand, enabled, action
):
    # Given
    if not enabled:
        run("enable", "sequential_workflow", "--env", "staging")
    # When
    run(subcommand, "sequential_workflow", "--env", "staging")
    # Then
    assert state("sequential_workflow", "staging").enabled is enabled
    assert AuditEvent.objects.filter(action=action, environment="staging").count() == 1


def test_flag_kill_then_restore__production__killed_then_back_on(world):
    # When
    kill_out, _ = run(
        "kill", "sequential_workflow", "--env", "production", "--reason", "errors"
    )
    killed = state("sequential_workflow", "production")
    restore_out, _ = run("restore", "sequential_workflow", "--env", "production")
    # Then
    assert (killed.enabled, killed.kill_reason) == (False, "errors")
    assert "KILLED" in kill_out
    restored = state("sequential_workflow", "production")
    assert (restored.enabled, restored.killed_at) == (True, None)
    actions = (
        AuditEvent.objects.filter(
            environment="production",
            action__in=["flag_state.killed", "flag_state.restored"],
        )
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert list(actions) == ["flag_state.killed", "flag_state.restored"]
    assert "on: off" in restore_out


def test_flag_percentage__ten_and_a_half__split_saved(world):
    # When
    out, _ = run("percentage", "sequential_workflow", "10.5", "--env", "production")
    # Then
    fallthrough = state("sequential_workflow", "production").fallthrough
    assert fallthrough == {
        "split": [
            {"variation": "on", "weight": 10_500},
            {"variation": "off", "weight": 89_500},
        ]
    }
    assert AuditEvent.objects.filter(action="flag_state.percentage_set").count() == 1
    assert "on 10.5%" in out


def test_flag_percentage__string_flag_with_arms__split_saved(world):
    # When
    run(
        "percentage",
        "checkout_theme",
        "25",
        "--env",
        "staging",
        "--treatment",
        "modern",
        "--control",
        "classic",
    )
    # Then
    split = state("checkout_theme", "staging").fallthrough["split"]
    assert [(arm["variation"], arm["weight"]) for arm in split] == [
        ("modern", 25_000),
        ("classic", 75_000),
    ]


# -- bad input: one line, non-zero, nothing written ------------------------------------

BAD_INPUT = [
    (["kill", "nope", "--env", "production"], "unknown flag 'nope'"),
    (["enable", "sequential_workflow", "--env", "prod"], "unknown environment 'prod'"),
    (
        ["override", "add", "sequential_workflow", "m-nobody", "--env", "production"],
        "unknown merchant 'm-nobody'",
    ),
    (
        ["override", "add", "sequential_workflow", "m-gone", "--env", "production"],
        "merchant 'm-gone' is inactive",
    ),
    (
        [
            "override",
            "add",
            "sequential_workflow",
            "m-pilot",
            "--env",
            "production",
            "--variation",
            "maybe",
        ],
        "'maybe' is not a variation",
    ),
    (
        [
            "override",
            "add",
            "sequential_workflow",
            "m-pilot",
            "--env",
            "production",
            "--expires",
            "2020-01-01T00:00Z",
        ],
        "is in the past",
    ),
    (
        [
            "override",
            "add",
            "sequential_workflow",
            "m-pilot",
            "--env",
            "production",
            "--expires",
            "next tuesday",
        ],
        "is not a time",
    ),
    (
        ["override", "remove", "sequential_workflow", "m-pilot", "--env", "production"],
        "has no override",
    ),
    (
        ["percentage", "sequential_workflow", "ten", "--env", "production"],
        "is not a number",
    ),
    (
        ["percentage", "sequential_workflow", "100.5", "--env", "production"],
        "outside 0..100",
    ),
    (
        ["percentage", "sequential_workflow", "-1", "--env", "production"],
        "outside 0..100",
    ),
    (
        ["percentage", "sequential_workflow", "12.3456", "--env", "production"],
        "more than three decimals",
    ),
    (
        [
            "percentage",
            "checkout_theme",
            "10",
            "--env",
            "production",
            "--treatment",
            "neon",
            "--control",
            "classic",
        ],
        "unknown variation 'neon'",
    ),
    (["create", "broken", "--type", "json", "--variations", "[{"], "not valid JSON"),
    (["create", "sequential_workflow"], "already exists"),
    (["create", "Bad Key!"], "key:"),
    (["restore", "sequential_workflow", "--env", "production"], "is not killed"),
    (["kill", "sequential_workflow"], "--env"),
]


@pytest.mark.parametrize(
    "args, expected", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT]
)
def test_flag_command__bad_input__one_line_error_and_nothing_written(
    world, args, expected
):
    # Given
    events_before = AuditEvent.objects.count()
    versions_before = sorted(FlagState.objects.values_list("pk", "version"))
    # When
    with pytest.raises(CommandError) as raised:
        run(*args)
    # Then
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message.strip()
    assert AuditEvent.objects.count() == events_before
    assert sorted(FlagState.objects.values_list("pk", "version")) == versions_before
    assert MerchantOverride.objects.count() == 0


@pytest.mark.slow
def test_flag_command__real_process_unknown_flag__exit_1_one_line_no_traceback(
    tmp_path,
):
    # Given: a fresh, migrated SQLite database in a temporary folder
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "CONTROLPLANE_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
    }
    python = (
        str(REPO / ".venv" / "bin" / "python")
        if (REPO / ".venv").exists()
        else sys.executable
    )
    subprocess.run(
        [python, "manage.py", "migrate", "-v", "0"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    # When
    result = subprocess.run(
        [python, "manage.py", "flag", "kill", "nope", "--env", "production"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then
    assert result.returncode != 0
    assert result.stderr.strip() == "CommandError: unknown flag 'nope'"
    assert "Traceback" not in result.stderr + result.stdout
