"""``manage.py release`` through call_command, real database."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from canary.models import Release, ReleaseStatus
from controlplane.audit.models import AuditEvent
from tests.release_fixtures import (  # noqa: F401 (fixtures)
    CHECK,
    COMPARE_CHECK,
    KEYS,
    PHASES,
    release_complete,
    release_factory,
    release_flags,
    release_partly_rolled_back,
)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("release", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_release_create__template_two_flags__draft_with_members_table(
    release_flags,
):
    # Given / When
    out = run(
        "create",
        "--env",
        "production",
        "--flag",
        KEYS[0],
        "--flag",
        f"{KEYS[1]}=on",
        "--template",
        "pilot-10-50-100",
        "--pilot",
        "m-1001",
        "--duration-scale",
        "0.01",
        "--name",
        "bundle",
    )
    # Then
    release = Release.objects.get()
    assert f"release {release.pk} created (draft): bundle" in out
    assert "rollout" in out and "treatment" in out  # the table's header
    assert KEYS[0] in out and "1 of 4 (pilot)" in out
    assert f"manage.py release start {release.pk}" in out
    assert "\x1b[" not in out  # no colour off a terminal
    assert AuditEvent.objects.filter(action="release.created").count() == 1


def test_release_create__phases_json__members_follow_them(release_flags):
    # Given / When
    run(
        "create",
        "--flag",
        KEYS[0],
        "--flag",
        KEYS[1],
        "--phases",
        json.dumps(PHASES),
        "--name",
        "json plan",
    )
    # Then
    release = Release.objects.get()
    assert [m.phases.count() for m in release.members.all()] == [3, 3]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([KEYS[0]], "at least two flags"),
        ([KEYS[0], "no_such_flag"], "unknown flag 'no_such_flag'"),
    ],
)
def test_release_create__bad_flags__one_line_command_error(
    release_flags, flags, message
):
    # Given
    args = ["create", "--template", "pilot-10-50-100", "--pilot", "m-1001"]
    for key in flags:
        args += ["--flag", key]
    # When
    with pytest.raises(CommandError) as caught:
        run(*args)
    # Then
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert Release.objects.count() == 0


def test_release_list__two_releases__header_and_rows(release_factory):
    # Given
    first = release_factory(name="first")
    second = release_factory(name="second", started=True)
    # When
    out = run("list")
    running = run("list", "--status", "running")
    # Then
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["id", "status", "environment"]
    assert out.index("second") < out.index("first")
    assert str(second.pk) in running and "first" not in running
    assert str(first.pk) in out


def test_release_list__none__says_so(db):
    # Given / When / Then
    assert run("list").strip() == "no releases"


def test_release_show__draft__header_and_members(release_factory):
    # Given
    release = release_factory()
    # When
    out = run("show", str(release.pk))
    # Then
    assert out.startswith(f"release {release.pk} draft: checkout bundle")
    assert "members 2, deployed 0, rolled back 0" in out
    assert all(key in out for key in KEYS)


def test_release_show__unknown__command_error(db):
    # Given / When
    with pytest.raises(CommandError) as caught:
        run("show", "424242")
    # Then
    assert str(caught.value) == "unknown release 424242"


def test_release_start_pause_resume_approve__members_follow(release_factory):
    # Given
    release = release_factory()
    # When
    started = run("start", str(release.pk))
    paused = run("pause", str(release.pk), "--reason", "look first")
    resumed = run("resume", str(release.pk))
    approved = run("approve", str(release.pk))
    # Then
    assert started.startswith(f"release {release.pk} started: running;")
    assert f"{KEYS[0]} paused" in paused
    assert f"{KEYS[1]} running" in resumed
    assert "approved" in approved
    actions = list(
        AuditEvent.objects.filter(
            target_type="canary.release", target_id=str(release.pk)
        )
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions[1:] == [
        "release.started",
        "release.paused",
        "release.resumed",
        "release.approved",
    ]


def test_release_pause__no_reason__usage_error(release_factory):
    # Given
    release = release_factory(started=True)
    # When / Then
    with pytest.raises(CommandError):
        run("pause", str(release.pk))


def test_release_abort__then_start__aborted_and_start_refused(release_factory):
    # Given
    release = release_factory()
    # When
    out = run("abort", str(release.pk), "--reason", "not today")
    with pytest.raises(CommandError) as caught:
        run("start", str(release.pk))
    # Then
    assert f"release {release.pk} abort requested: aborted" in out
    assert str(caught.value) == f"release {release.pk} is aborted"
    release.refresh_from_db()
    assert release.status == ReleaseStatus.ABORTED


def test_release_report__completed__deployed_and_sections(release_factory):
    # Given
    release = release_complete(release_factory(started=True))
    # When
    out = run("report", str(release.pk))
    # Then
    assert f"release {release.pk} completed" in out
    assert f"deployed: {KEYS[0]}, {KEYS[1]}" in out
    assert "rolled back: none" in out
    assert "3 of 3 (100%)" in out
    assert "estimates: none" in out


def test_release_report__one_feature_rolled_back__reasons_and_estimates(
    release_factory,
):
    # Given
    release = release_partly_rolled_back(
        release_factory(started=True, checks=[CHECK, COMPARE_CHECK])
    )
    # When
    out = run("report", str(release.pk))
    # Then
    assert f"release {release.pk} completed" in out
    assert f"deployed: {KEYS[0]}" in out
    assert "Rolled back" in out and "worse (+0.09)" in out and "partial" in out
    estimates = out[out.index("Estimates") :]
    assert "error_rate_vs_control" in estimates
    assert "+5.00 pp .. +13.00 pp" in estimates and "not worse" in estimates


def test_release_watch__completed__one_line_then_report(release_factory):
    # Given
    release = release_complete(release_factory(started=True))
    # When
    out = run("watch", str(release.pk))
    # Then
    assert out.startswith(f"release {release.pk} is: completed;")
    assert f"deployed: {KEYS[0]}, {KEYS[1]}" in out


def test_release_watch__running_past_timeout__command_error(release_factory):
    # Given
    release = release_factory(started=True)
    # When
    with pytest.raises(CommandError) as caught:
        run("watch", str(release.pk), "--timeout", "0.05", "--interval", "0.02")
    # Then
    assert str(caught.value) == (
        f"watch timed out after 0.05s: release {release.pk} is running"
    )
