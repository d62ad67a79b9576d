"""Cutting the chain leaves a trace: TRUNCATE is refused, and checkpoints
(the head anchored outside the database) expose deleted tails and rewrites."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from controlplane.audit.checkpoints import Checkpoint
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import _chain_hash, canonical_text
from controlplane.audit.tasks import audit_checkpoint_task
from controlplane.celery import app as celery_app
from flags import services
from tests.audit.test_chain import raw_delete, triggers_off

CHECKPOINT_KEYS = {"kind", "id", "hash", "created_at", "checkpointed_at"}


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("audit", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


@pytest.fixture
def sink(tmp_path, settings) -> Path:
    """The configured checkpoint file, in a fresh directory."""
    path = tmp_path / "anchors" / "audit-checkpoints.jsonl"
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "AUDIT_CHECKPOINT_PATH": path}
    return path


@pytest.fixture
def events(environments, actor) -> list[AuditEvent]:
    """Twelve or more real events written by the services, oldest first."""
    for number in range(10):
        services.merchant_create(
            actor=actor, key=f"m-{number}", attributes={"n": number}
        )
    return list(AuditEvent.objects.order_by("id"))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite_chain(first_after: dict) -> None:
    """Edit the first event and recompute every hash after it, as an attacker
    with the code and SQL rights would: the chain alone still verifies."""
    prev_hash = "0" * 64
    for index, event in enumerate(AuditEvent.objects.order_by("id")):
        if index == 0:
            event.after = first_after
        event.prev_hash = prev_hash
        event.canonical = canonical_text(event)
        event.hash = _chain_hash(prev_hash, event.canonical)
        cast = "::jsonb" if connection.vendor == "postgresql" else ""
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE audit_auditevent SET after = %s{cast}, prev_hash = %s, "
                "hash = %s, canonical = %s WHERE id = %s",
                [
                    json.dumps(event.after),
                    event.prev_hash,
                    event.hash,
                    event.canonical,
                    event.pk,
                ],
            )
        prev_hash = event.hash


@pytest.mark.postgres
def test_audit_table__truncate__refused_by_trigger(events):
    # Given: the test database runs with the trigger off so that transactional
    # tests can be flushed (tests/conftest.py); on here, as migrated
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_no_truncate"
        )
    # When
    with pytest.raises(DatabaseError) as error:
        with transaction.atomic():  # a savepoint keeps the test transaction usable
            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE audit_auditevent")
    # Then
    assert "append-only: TRUNCATE refused" in str(error.value)
    assert AuditEvent.objects.count() == len(events)


@pytest.mark.parametrize("cut", [1, 10])
def test_audit_verify_against__tail_deleted__fails_naming_anchor(events, sink, cut):
    # Given
    run("checkpoint")
    head = events[-1]
    with triggers_off():  # SET session_replication_role = replica, as a superuser
        for event in events[-cut:]:
            raw_delete(event.pk)
    survivor = events[-cut - 1]
    # When
    plain = run("verify")
    with pytest.raises(CommandError) as raised:
        run("verify", "--against", str(sink))
    # Then
    message = str(raised.value)
    assert plain == f"OK: {len(events) - cut} events verified"  # the chain alone
    assert message.startswith(f"BROKEN: event {head.pk}: missing")
    assert f"the chain ends at event {survivor.pk}" in message
    assert "removed from the end" in message
    assert "\n" not in message


def test_audit_verify_against__rewritten_with_recomputed_hashes__fails(events, sink):
    # Given
    run("checkpoint")
    with triggers_off():
        rewrite_chain({"key": "production", "name": "Rewritten"})
    # When
    plain = run("verify")
    with pytest.raises(CommandError) as raised:
        run("verify", "--against", str(sink))
    # Then
    message = str(raised.value)
    assert plain == f"OK: {len(events)} events verified"  # the chain alone
    assert message.startswith(f"BROKEN: event {events[-1].pk}: hash differs")
    assert "rewritten" in message
    assert "\n" not in message


def test_audit_verify_against__intact_chain_grown_since__ok(events, sink, actor):
    # Given
    run("checkpoint")
    services.merchant_create(actor=actor, key="m-later")
    run("checkpoint")
    services.merchant_create(actor=actor, key="m-latest")
    # When
    every = run("verify", "--against", str(sink))
    latest = run("verify", "--against", str(sink), "--latest")
    # Then
    total = len(events) + 2
    assert every == f"OK: {total} events verified; 2 checkpoints matched"
    assert latest == f"OK: {total} events verified; 1 checkpoint matched"


def test_audit_verify_against__older_anchor_wrong__found_without_latest(events, sink):
    # Given: an older anchor the chain no longer matches, then a good one
    stale = Checkpoint(events[0].pk, "f" * 64, "", "2026-01-01T00:00:00.000000Z")
    run("checkpoint")
    sink.write_text(stale.as_line() + sink.read_text())
    # When
    latest = run("verify", "--against", str(sink), "--latest")
    with pytest.raises(CommandError) as raised:
        run("verify", "--against", str(sink))
    # Then
    assert latest.startswith("OK:")
    message = str(raised.value)
    assert message.startswith(f"BROKEN: event {events[0].pk}: hash differs")
    assert "2026-01-01T00:00:00.000000Z" in message


@pytest.mark.parametrize("damage", ["tail_cut", "rewrite"])
def test_audit_checkpoint__chain_damaged_since_last__refused_and_logged(
    events, sink, caplog, damage
):
    # Given
    run("checkpoint")
    before = sink.read_bytes()
    with triggers_off():
        if damage == "tail_cut":
            raw_delete(events[-1].pk)
        else:
            rewrite_chain({"key": "production", "name": "Rewritten"})
    caplog.clear()
    # When
    with caplog.at_level(logging.INFO, logger="controlplane.audit.checkpoint"):
        with pytest.raises(CommandError) as raised:
            run("checkpoint")
    # Then
    state = "missing" if damage == "tail_cut" else "changed"
    message = str(raised.value)
    assert message.startswith(f"BROKEN: event {events[-1].pk}, anchored by")
    assert f"is {state}: the chain was cut or rewritten since" in message
    assert "\n" not in message
    assert sink.read_bytes() == before  # nothing anchored
    records = [r for r in caplog.records if r.name == "controlplane.audit.checkpoint"]
    assert [r.levelname for r in records] == ["ERROR"]


def test_audit_checkpoint__twice__appends_json_lines_keeping_earlier(
    events, sink, actor, caplog
):
    # Given
    sink.parent.mkdir(parents=True)
    earlier = Checkpoint(events[0].pk, events[0].hash, "", "2026-01-01T00:00:00Z")
    sink.write_text(earlier.as_line())
    # When
    with caplog.at_level(logging.INFO, logger="controlplane.audit.checkpoint"):
        first_out = run("checkpoint")
        first_bytes = sink.read_bytes()
        services.merchant_create(actor=actor, key="m-later")
        run("checkpoint")
    # Then
    head = AuditEvent.objects.order_by("-id").first()
    written = lines(sink)
    assert sink.read_bytes().startswith(first_bytes)
    assert [set(line) for line in written] == [CHECKPOINT_KEYS] * 3
    assert written[0]["hash"] == events[0].hash
    assert [(line["id"], line["hash"]) for line in written[1:]] == [
        (events[-1].pk, events[-1].hash),
        (head.pk, head.hash),
    ]
    assert written[1]["created_at"].endswith("Z")
    assert f"checkpoints appended to {sink}:" in first_out
    assert [
        line.split()[1:3] for line in first_out.splitlines() if events[-1].hash in line
    ] == [[str(events[-1].pk), events[-1].hash]]
    records = [r for r in caplog.records if r.name == "controlplane.audit.checkpoint"]
    assert [r.levelname for r in records] == ["INFO", "INFO"]
    assert f"id={head.pk} hash={head.hash}" in records[-1].getMessage()


def test_audit_checkpoint__empty_chain__writes_nothing(db, sink):
    # When
    out = run("checkpoint")
    # Then
    assert out == "no event yet: nothing to checkpoint"
    assert not sink.exists()


def test_audit_checkpoint__unwritable_file__one_line_error(events, tmp_path):
    # Given
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # When
    with pytest.raises(CommandError) as raised:
        run("checkpoint", "--file", str(blocker / "sub" / "anchors.jsonl"))
    # Then
    assert str(raised.value).startswith("cannot append to")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read checkpoint file"),
        ("", "holds no checkpoint"),
        ("not json\n", "line 1 is not JSON"),
        ('{"id": 1, "hash": "00"}\n', "line 1 is not an audit checkpoint"),
        ('{"kind":"audit.checkpoint","id":"1","hash":"' + "a" * 64 + '"}', "id must"),
        ('{"kind":"audit.checkpoint","id":1,"hash":"XYZ"}', "hash must"),
    ],
)
def test_audit_verify_against__bad_checkpoint_file__one_line_error(
    events, tmp_path, content, expected
):
    # Given
    path = tmp_path / "anchors.jsonl"
    if content is not None:
        path.write_text(content)
    # When
    with pytest.raises(CommandError) as raised:
        run("verify", "--against", str(path))
    # Then
    message = str(raised.value)
    assert message.startswith("--against: ")
    assert expected in message
    assert "\n" not in message


def test_audit_verify__latest_without_against__one_line_error(events):
    # When / Then
    with pytest.raises(CommandError, match="--latest needs --against"):
        run("verify", "--latest")


def test_beat_schedule__audit_checkpoint__registered_task_every_interval():
    # Given
    entry = celery_app.conf.beat_schedule["audit-checkpoint"]  # what beat reads
    # When
    task = celery_app.tasks.get(entry["task"])
    # Then
    assert task is not None
    assert task.name == audit_checkpoint_task.name
    assert entry["schedule"] == 15 * 60.0


def test_beat_schedule__minutes_from_environment__used():
    # Given
    env = {**os.environ, "CONTROLPLANE_AUDIT_CHECKPOINT_MINUTES": "2.5"}
    env["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CELERY_BEAT_SCHEDULE['audit-checkpoint']['schedule'])"
    )
    # When
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=django_settings.BASE_DIR,
    )
    # Then
    assert result.stdout.strip() == "150.0"


def test_audit_checkpoint_task__beat_entry_run_eagerly__appends_the_head(events, sink):
    # Given
    name = celery_app.conf.beat_schedule["audit-checkpoint"]["task"]
    # When
    result = celery_app.tasks[name].delay()
    # Then
    assert result.get() == [
        {"chain": "global", "id": events[-1].pk, "hash": events[-1].hash}
    ]
    assert [(line["id"], line["hash"]) for line in lines(sink)] == [
        (events[-1].pk, events[-1].hash)
    ]
