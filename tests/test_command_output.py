"""What the project's commands print: the merchant's outcome history on
``flag override add``, a header on every list, colour only on a terminal,
and no log lines in standard output (logs on standard error, WARNING and up
unless ``-v 2``), in process and in a real process."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from canary.merchant_history import merchant_outcome_history
from canary.services.outcomes import outcome_events_ingest
from controlplane.apikeys.services import apikey_create
from flags import services
from rollback.services.deployments import deployment_record

REPO = Path(__file__).resolve().parents[1]
# The LOGGING format of controlplane.settings: "2026-12-01 18:32:09,962 INFO ..."
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ", re.MULTILINE)
ANSI = "\x1b["


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run(*args: str, stdout: io.StringIO | None = None, **options) -> str:
    out = stdout if stdout is not None else io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def words(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


@pytest.fixture
def world(environments, flag_factory, merchant_factory, system_actor):
    """sequential_workflow on in production; merchants m-pilot and m-other."""
    flag = flag_factory("sequential_workflow")
    services.flag_state_set_enabled(
        actor=system_actor,
        flag=flag,
        environment=environments["production"],
        enabled=True,
    )
    flag_factory("checkout_theme")
    return {
        "flag": flag,
        "pilot": merchant_factory("m-pilot"),
        "other": merchant_factory("m-other"),
        **environments,
    }


def _events(env: str, *rows: tuple) -> None:
    """Store outcome events: (flag, merchant, outcome, age, name) each."""
    now = timezone.now()
    outcome_events_ingest(
        environment=env,
        events=[
            {
                "flag": flag,
                "merchant": merchant,
                "variation": "off",
                "outcome": outcome,
                "name": name,
                "duration_ms": 120.0,
                "occurred_at": (now - age).isoformat(),
            }
            for flag, merchant, outcome, age, name in rows
        ],
    )


HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


@pytest.fixture
def history(world):
    """m-pilot, last 7 days: 10 events of the flag in production, 3 failed;
    plus events that must not count (older, other merchant, flag, env)."""
    flag = "sequential_workflow"
    _events(
        "production",
        *[(flag, "m-pilot", "success", n * 6 * HOUR, "checkout") for n in range(7)],
        (flag, "m-pilot", "failure", 2 * HOUR, "checkout"),
        (flag, "m-pilot", "failure", 3 * DAY, "refund"),
        (flag, "m-pilot", "failure", 5 * DAY, "checkout"),
        (flag, "m-pilot", "failure", 8 * DAY, "too old"),
        (flag, "m-other", "failure", HOUR, "other merchant"),
        ("checkout_theme", "m-pilot", "failure", HOUR, "other flag"),
    )
    _events("staging", (flag, "m-pilot", "failure", HOUR, "other environment"))
    return world


# -- flag override add: the merchant's outcome history -------------------------


def test_flag_override_add__outcome_events__prints_counts_and_last_failures(history):
    # When
    out = run(
        "flag",
        "override",
        "add",
        "sequential_workflow",
        "m-pilot",
        "--env",
        "production",
    )
    # Then
    lines = out.splitlines()
    summary = next(line for line in lines if line.startswith("Outcomes of m-pilot"))
    assert summary.startswith(
        "Outcomes of m-pilot for sequential_workflow in production, last 7 days: "
        "10 events, 70.0% success (7 succeeded, 3 failed); last event "
    )
    assert summary.endswith("(0s ago)") or summary.endswith("m ago)")
    title = lines.index("Last failures of m-pilot (newest first, 3 of 3)")
    assert lines[title + 1].split() == [
        "time",
        "ago",
        "variation",
        "name",
        "duration",
        "ms",
    ]
    failures = [line.split() for line in lines[title + 3 : title + 6]]
    assert [row[2:] for row in failures] == [
        ["2h", "ago", "off", "checkout", "120"],
        ["3d", "ago", "off", "refund", "120"],
        ["5d", "ago", "off", "checkout", "120"],
    ]
    assert "too old" not in out and "other" not in out


def test_flag_override_add__no_outcome_events__says_so(world):
    # When
    out = run(
        "flag", "override", "add", "sequential_workflow", "m-other", "--env", "staging"
    )
    # Then
    assert (
        "Outcomes of m-other for sequential_workflow in staging, last 7 days: "
        "no events." in out.splitlines()
    )
    assert "Last failures" not in out


def test_merchant_outcome_history__many_failures__two_queries_latest_first(
    world, django_assert_max_num_queries
):
    # Given: 7 failures and 2 successes
    flag = "sequential_workflow"
    _events(
        "production",
        *[(flag, "m-pilot", "failure", (n + 1) * HOUR, f"f{n}") for n in range(7)],
        *[(flag, "m-pilot", "success", (n + 1) * DAY, "ok") for n in range(2)],
    )
    # When
    with django_assert_max_num_queries(2):
        found = merchant_outcome_history(
            flag_key=flag, environment=world["production"], merchant_key="m-pilot"
        )
    # Then
    assert (found.events, found.failures, found.successes) == (9, 7, 2)
    assert found.success_rate == pytest.approx(2 / 9)
    assert [f.name for f in found.last_failures] == ["f0", "f1", "f2", "f3", "f4"]


# -- a header on every list -------------------------------------------------------


@pytest.fixture
def listed(history, system_actor):
    apikey_create(
        actor=system_actor,
        name="my-app",
        scope="server",
        environment=history["production"],
    )
    deployment_record(
        actor=system_actor, service="shop", environment="production", version="v1"
    )
    services.override_set(
        actor=system_actor,
        flag=history["flag"],
        environment=history["production"],
        merchant=history["pilot"],
        variation="on",
    )
    return history


@pytest.mark.parametrize(
    "args, header",
    [
        (("flag", "list"), ["flag", "type", "production", "staging", "archived"]),
        (
            ("flag", "override", "list", "sequential_workflow", "--env", "production"),
            ["environment", "merchant", "variation", "expires", "note", "by", "live"],
        ),
        (
            ("apikey", "list"),
            [
                "id",
                "prefix",
                "scope",
                "environment/user",
                "name",
                "state",
                "last",
                "used",
            ],
        ),
        (
            ("deployment", "list"),
            ["id", "deployed", "at", "environment", "service", "version", "status"]
            + ["previous"],
        ),
        (("checktemplate", "list"), ["template", "checks", "state", "description"]),
        (
            ("audit", "verify", "--chains"),
            ["chain", "events", "verified", "head", "event", "state"],
        ),
        (("rollout", "templates"), ["plan", "description"]),
    ],
)
def test_list_commands__rows__header_first_then_rows(listed, args, header):
    # When
    rows = words(run(*args))
    # Then: the header (after a title, if any), a rule, then at least one row
    at = next(n for n, row in enumerate(rows) if row == header)
    assert set("".join(rows[at + 1])) == {"-"}
    assert len(rows) > at + 2


# -- colour only on a terminal ----------------------------------------------------


def test_flag_list__terminal__coloured_header(listed, monkeypatch):
    # Given
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")  # not "dumb"
    # When
    out = run("flag", "list", stdout=Terminal())
    # Then
    assert ANSI in out


@pytest.mark.parametrize(
    "stdout, env, options",
    [
        (io.StringIO, {}, {}),  # piped: never
        (Terminal, {"NO_COLOR": "1"}, {}),  # no-color.org
        (Terminal, {}, {"no_color": True}),  # --no-color
    ],
    ids=["not-a-terminal", "NO_COLOR", "--no-color"],
)
def test_commands__no_terminal_or_no_color__no_escape_codes(
    listed, monkeypatch, stdout, env, options
):
    # Given
    monkeypatch.delenv("NO_COLOR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    outputs = []
    # When
    for args in (
        ("flag", "list"),
        ("flag", "show", "sequential_workflow"),
        (
            "flag",
            "override",
            "add",
            "sequential_workflow",
            "m-pilot",
            "--env",
            "staging",
        ),
        ("rollout", "templates"),
        ("audit", "verify", "--chains"),
    ):
        outputs.append(run(*args, stdout=stdout(), **options))
    # Then
    for out in outputs:
        assert out.strip()
        assert ANSI not in out


def test_flag_list__not_a_terminal_but_force_color__coloured(listed, monkeypatch):
    # Given
    monkeypatch.setenv("TERM", "xterm-256color")  # not "dumb"
    # When
    out = run("flag", "list", force_color=True)
    # Then
    assert ANSI in out


# -- logs: standard error, WARNING and up unless -v 2 ------------------------------


@pytest.fixture
def log_stream(monkeypatch):
    """What the root logger's handlers would print, as a string buffer."""
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_command__default_verbosity__info_logs_dropped_warnings_kept(log_stream):
    # Given: a command whose work logs at INFO and WARNING
    logger = logging.getLogger("controlplane.test_command_output")
    before = logging.getLogger().level

    class Probe(io.StringIO):
        def write(self, text: str) -> int:
            logger.info("info while writing")
            logger.warning("warning while writing")
            return super().write(text)

    out = Probe()
    # When
    call_command("rollout", "templates", stdout=out, stderr=io.StringIO())
    # Then
    logged = log_stream.getvalue()
    assert "WARNING controlplane.test_command_output warning while writing" in logged
    assert "info while writing" not in logged
    assert "warning while writing" not in out.getvalue()
    assert logging.getLogger().level == before  # restored afterwards


@pytest.mark.parametrize(
    "args, options",
    [
        (("rollout", "templates"), {"verbosity": 2}),
        (("rollout", "-v", "2", "templates"), {}),
        (("rollout", "templates", "-v", "2"), {}),  # after the subcommand too
    ],
    ids=["option", "before-subcommand", "after-subcommand"],
)
def test_command__verbosity_2__info_logs_on_the_log_stream_only(
    log_stream, args, options
):
    # Given
    logger = logging.getLogger("controlplane.test_command_output")

    class Probe(io.StringIO):
        def write(self, text: str) -> int:
            logger.info("info while writing")
            return super().write(text)

    out = Probe()
    # When
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    # Then
    assert "INFO controlplane.test_command_output info while writing" in (
        log_stream.getvalue()
    )
    assert "info while writing" not in out.getvalue()


def _python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_python(), "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_rollout_commands__real_process_eager_tasks__no_log_lines_in_stdout(tmp_path):
    # Given: a fresh demo database; tasks run in process (no broker)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LOG_LEVEL", "CELERY_BROKER_URL", "NO_COLOR", "FORCE_COLOR")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        CONTROLPLANE_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="controlplane.settings",
    )
    assert _manage(env, "demo", "--no-input").returncode == 0
    # When: start (its commit runs a tick task in process), pause, resume
    # (a tick again)
    started = _manage(env, "rollout", "start", "1")
    _manage(env, "rollout", "pause", "1")
    resumed = _manage(env, "rollout", "-v", "2", "resume", "1")
    # Then: output only on stdout; INFO task logs only with -v 2, on stderr
    for result in (started, resumed):
        assert result.returncode == 0, result.stderr
        assert not LOG_LINE.search(result.stdout), result.stdout
        assert ANSI not in result.stdout
    assert "rollout 1 running: phase 1 (pilot) is live" in started.stdout
    assert started.stderr == ""
    assert resumed.stdout == "rollout 1 running\n"
    assert "INFO celery.app.trace Task canary.tasks.rollout_tick_task" in resumed.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("listing", ["change", "schedule"])
def test_change_lists__rows__header_first(listing, environments, flag_factory):
    # Given: one change request or one scheduled change of flag "headed"
    flag_factory(key="headed")
    if listing == "change":
        call_command("change", "policy", "--env", "production", "--flag-state", "1")
        call_command(
            "flag",
            "enable",
            "headed",
            "--env",
            "production",
            "--actor",
            "alice",
            stdout=io.StringIO(),
        )
    else:
        call_command(
            "schedule",
            "add",
            "flag_state.enable",
            "flag=headed",
            "environment=production",
            "--at",
            "10m",
            stdout=io.StringIO(),
        )
    # When
    out = io.StringIO()
    call_command(listing, "list", stdout=out)
    # Then: a header, then the row
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["id", "status", "environment"]
    assert "headed" in lines[1]
