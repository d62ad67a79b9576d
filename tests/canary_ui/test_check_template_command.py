"""manage.py checktemplate, rollout create --check-template, rollout baseline
and dry-run checks in the rollout command's output (call_command, real DB)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from canary import services
from canary.models import CheckTemplate, Rollout
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from tests.canary_ui.conftest import ERROR_RATE_CHECK, record


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _file(tmp_path: Path, data: object, name: str = "checks.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def _row(out: str, first: str) -> list[str]:
    """Return the words of the table row of ``out`` that starts with ``first``."""
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, out
    return rows[0]


def test_checktemplate__create_update_show_list_archive__versions_and_audit(
    db, tmp_path
):
    # Given
    v1 = _file(tmp_path, [ERROR_RATE_CHECK])
    v2 = _file(
        tmp_path,
        {
            "description": "stricter",
            "checks": [{**ERROR_RATE_CHECK, "threshold": 0.01, "dry_run": True}],
        },
        "v2.json",
    )
    # When
    created = run("checktemplate", "create", "payments", "--file", v1)
    updated = run("checktemplate", "update", "payments", "--file", v2)
    unchanged = run("checktemplate", "update", "payments", "--file", v2)
    shown = run("checktemplate", "show", "payments")
    shown_v1 = run("checktemplate", "show", "payments", "--version", "1")
    as_json = json.loads(
        run("checktemplate", "show", "payments", "--version", "2", "--format", "json")
    )
    archived = run("checktemplate", "archive", "payments", "--version", "2")
    listed = run("checktemplate", "list")
    # Then
    assert "created payments@1: 1 check" in created
    assert "new version payments@2" in updated
    assert _row(updated, "error_rate")[-1] == "yes"  # the dry run column
    assert "unchanged: payments@2" in unchanged
    assert "payments@2: 1 check - stricter" in shown
    assert _row(shown, "check")[:3] == ["check", "provider", "mode"]
    assert _row(shown, "error_rate")[1:3] == ["outcomes", "absolute"]
    assert "< 0.01" in shown and "other versions: 1" in shown
    assert _row(shown_v1, "error_rate")[-1] == "-" and "< 0.05" in shown_v1
    assert as_json["checks"][0]["dry_run"] is True
    assert "archived payments@2" in archived
    assert _row(listed, "template") == ["template", "checks", "state", "description"]
    assert _row(listed, "payments@1")[:3] == ["payments@1", "1", "active"]
    assert _row(listed, "default@0")[:4] == ["default@0", "2", "built", "in"]
    assert list(
        AuditEvent.objects.filter(target_type="canary.checktemplate")
        .order_by("id")
        .values_list("action", flat=True)
    ) == [
        "check_template.created",
        "check_template.version_created",
        "check_template.archived",
    ]


@pytest.mark.parametrize(
    "args, content, message",
    [
        (["create", "x"], "not json", "--file: not valid JSON"),
        (["create", "x"], [], "checks: a template needs a non-empty list"),
        (
            ["create", "x"],
            [{**ERROR_RATE_CHECK, "interval": -1}],
            "checks[0].interval: must be at least 1",
        ),
        (["create", "x"], {"checks": [], "colour": 1}, "unknown field 'colour'"),
        (["create", "bad name"], [ERROR_RATE_CHECK], "name: 1 to 100 letters"),
        (["create", "payments"], [ERROR_RATE_CHECK], "exists"),
        (["update", "nope"], [ERROR_RATE_CHECK], "unknown check template 'nope'"),
    ],
)
def test_checktemplate__bad_input__one_line_command_error(
    db, tmp_path, args, content, message
):
    # Given
    services.check_template_create(
        actor=SYSTEM, name="payments", checks=[ERROR_RATE_CHECK]
    )
    path = _file(tmp_path, content)
    # When
    with pytest.raises(CommandError) as raised:
        run("checktemplate", *args, "--file", path)
    # Then
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert CheckTemplate.objects.count() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "nope"], "unknown check template 'nope'"),
        (["show", "payments", "--version", "5"], "has no version 5"),
        (["archive", "nope"], "unknown check template 'nope'"),
        (["archive", "default", "--version", "0"], "built in"),
        (["create", "x", "--file", "/nonexistent/f.json"], "cannot read"),
    ],
)
def test_checktemplate__unknown__one_line_command_error(db, args, message):
    # Given
    services.check_template_create(
        actor=SYSTEM, name="payments", checks=[ERROR_RATE_CHECK]
    )
    # When
    with pytest.raises(CommandError) as raised:
        run("checktemplate", *args)
    # Then
    assert message in str(raised.value)


def test_rollout_create__check_template__template_checks_shown(flag, merchants):
    # Given
    services.check_template_create(
        actor=SYSTEM,
        name="payments",
        checks=[{**ERROR_RATE_CHECK, "dry_run": True}],
    )
    extra = json.dumps({**ERROR_RATE_CHECK, "name": "errors_strict"})
    # When
    out = run(
        "rollout",
        "create",
        "--flag",
        flag.key,
        "--template",
        "pilot-10-50-100",
        "--pilot",
        "m-1001",
        "--check-template",
        "payments",
        "--check",
        extra,
    )
    # Then
    rollout = Rollout.objects.get()
    assert rollout.check_template == "payments@1"
    assert "checks from template payments@1" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line}
    assert rows["check"] == ["check", "provider", "mode", "rule", "on", "failure"] + [
        "dry",
        "run",
    ]
    assert rows["error_rate"][1:3] == ["outcomes", "absolute"]
    assert rows["error_rate"][-2:] == ["rollback_1", "yes"]
    assert rows["errors_strict"][-2:] == ["rollback_1", "-"]


@pytest.mark.parametrize(
    "reference, message",
    [
        ("nope", "unknown check template 'nope'"),
        ("payments@", "is not NAME or NAME@VERSION"),
    ],
)
def test_rollout_create__bad_check_template__command_error(
    flag, merchants, reference, message
):
    # Given
    services.check_template_create(
        actor=SYSTEM, name="payments", checks=[ERROR_RATE_CHECK]
    )
    # When
    with pytest.raises(CommandError, match=message):
        run(
            "rollout",
            "create",
            "--flag",
            flag.key,
            "--template",
            "pilot-10-50-100",
            "--pilot",
            "m-1001",
            "--check-template",
            reference,
        )
    # Then
    assert not Rollout.objects.exists()


def test_rollout_status_and_report__dry_run_check__marked_dry_run(rollout_factory):
    # Given
    rollout = rollout_factory(
        started=True,
        checks=[
            ERROR_RATE_CHECK,
            {**ERROR_RATE_CHECK, "name": "shadow", "dry_run": True},
        ],
    )
    record(rollout, "fail", 0.5, check="shadow")
    # When
    status = run("rollout", "status", str(rollout.pk))
    report = run("rollout", "report", str(rollout.pk))
    # Then
    assert "check shadow (dry run) (outcomes)" in status
    assert "check error_rate (outcomes)" in status
    assert "### shadow (outcomes, absolute): failed (dry run)" in report
    assert "### error_rate (outcomes, absolute): pending\n" in report
    assert "check shadow failed" not in report  # never in the verdict
    assert "check shadow (dry run, not deciding): failed" in report


def test_rollout_baseline__command__recorded_and_audited(rollout_factory):
    # Given
    rollout = rollout_factory()
    # When
    out = run("rollout", "baseline", str(rollout.pk), "error_rate", "0.02")
    # Then
    assert f"rollout {rollout.pk}: baseline of check error_rate is 0.02" in out
    rollout.refresh_from_db()
    assert rollout.baseline == {"error_rate": 0.02}
    event = AuditEvent.objects.get(action="rollout.baseline_set")
    assert event.actor_id.startswith("cli:")


@pytest.mark.parametrize(
    "check, value, message",
    [
        ("error_rate", "high", "value: 'high' is not a number"),
        ("error_rate", "nan", "baseline.error_rate: must be a number"),
        ("nope", "1", "baseline.nope: no check of that name"),
    ],
)
def test_rollout_baseline__bad_input__one_line_error_unchanged(
    rollout_factory, check, value, message
):
    # Given
    rollout = rollout_factory()
    # When
    with pytest.raises(CommandError) as raised:
        run("rollout", "baseline", str(rollout.pk), check, value)
    # Then
    assert message in str(raised.value)
    rollout.refresh_from_db()
    assert rollout.baseline == {}


def test_rollout_baseline__started__command_error(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When / Then
    with pytest.raises(CommandError, match="the baseline is fixed once it starts"):
        run("rollout", "baseline", str(rollout.pk), "error_rate", "0.01")


def test_rollout_start__dry_run_check_does_not_answer__started_with_warning(
    rollout_factory,
):
    # Given: a dry-run http check against a port nobody listens on
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rollout = rollout_factory(
        checks=[
            ERROR_RATE_CHECK,
            {
                "name": "health",
                "provider": "http",
                "timeout": 2,
                "spec": {"url": f"http://127.0.0.1:{port}/health", "measure": "status"},
                "threshold": 500,
                "dry_run": True,
            },
        ]
    )
    # When
    out = run("rollout", "start", str(rollout.pk))
    # Then
    assert "preflight warning: dry-run check health did not answer" in out
    rollout.refresh_from_db()
    assert rollout.status == "running"
