"""Deployment-revert backends against real files, scripts and an HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify
from rollback.models import DeploymentStatus, RollbackRun, RunStatus, StepStatus
from rollback.services import rollback_run_start
from tests.rollback.conftest import calls


def _step(run, level):
    return run.steps.get(level=level)


def test_symlink_backend__current_on_v2__points_at_v1_atomically(
    deployment_pair, releases, rollback_settings, actor, run_now
):
    # Given
    v1, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"shop": {"type": "symlink", "root": str(releases)}}
    )
    # When
    run = run_now(actor=actor, level=2, reason="errors up", deployment=v2)
    # Then
    assert run.status == RunStatus.SUCCEEDED
    assert os.readlink(releases / "current") == os.path.join("releases", "v1")
    assert (releases / "current" / "VERSION").read_text() == "v1"
    assert [p.name for p in releases.iterdir() if p.name.startswith(".current")] == []
    v1.refresh_from_db(), v2.refresh_from_db()
    assert (v1.status, v2.status) == (DeploymentStatus.LIVE, DeploymentStatus.REVERTED)
    assert (
        AuditEvent.objects.filter(
            action="deployment.reverted", target_id=str(v2.pk)
        ).count()
        == 1
    )


def test_symlink_backend__already_on_target__changes_nothing(
    releases, rollback_settings
):
    # Given
    from controlplane.audit.actors import SYSTEM
    from rollback.actuators import ACTUATORS, StepContext

    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"shop": {"type": "symlink", "root": str(releases)}}
    )
    params = {
        "service": "shop",
        "version": "v1",
        "previous_version": "v2",
        "backend": "shop",
    }
    actuator = ACTUATORS["deployment_revert"]
    ctx = StepContext(step_id=1, run_id=1, attempt=1, actor=SYSTEM)
    actuator.execute(params, ctx)
    inode = os.lstat(releases / "current").st_ino
    # When
    output = actuator.execute(params, ctx)
    # Then
    assert "already points" in output
    assert os.lstat(releases / "current").st_ino == inode
    assert actuator.verify(params) is True


def test_command_backend__real_script__records_arguments_once(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor, run_now
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {
                "type": "command",
                "idempotent": True,
                "argv": [
                    str(deploy_script),
                    "{service}",
                    "{version}",
                    "--from={previous_version}",
                    "--artifact={artifact}",
                ],
                "timeout": 10,
            }
        }
    )
    # When
    run = run_now(actor=actor, level=2, reason="bad release", deployment=v2)
    # Then
    step = _step(run, 2)
    assert run.status == RunStatus.SUCCEEDED
    assert calls(tmp_path) == ["shop v1 --from=v2 --artifact=img:v1"]
    assert "deployed shop v1" in step.output
    assert step.attempts == 1
    assert audit_chain_verify().ok


def test_command_backend__timeout__kills_script_and_fails_step(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor, run_now
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_STEP_MAX_ATTEMPTS=1,
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {
                "type": "command",
                "idempotent": True,
                "argv": [str(deploy_script), "{service}", "{version}"],
                "timeout": 0.5,
                "env": {"DEPLOY_SLEEP": "5"},
            }
        },
    )
    # When
    run = run_now(actor=actor, level=2, reason="bad release", deployment=v2)
    # Then
    step = _step(run, 2)
    assert (run.status, step.status) == (RunStatus.FAILED, StepStatus.FAILED)
    assert "timed out after 0.5s" in step.error
    assert "stopped at step 2 (deployment_revert)" in run.error
    assert not (tmp_path / "current").exists()  # killed before it wrote the version
    v2.refresh_from_db()
    assert v2.status == DeploymentStatus.LIVE
    assert (
        AuditEvent.objects.filter(
            action="rollback.run_failed", target_id=str(run.pk)
        ).count()
        == 1
    )


def test_command_backend__nonzero_exit__retried_then_failed(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor, run_now
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_STEP_MAX_ATTEMPTS=2,
        ROLLBACK_RETRY_BACKOFF_SECONDS=0,
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {
                "type": "command",
                "idempotent": True,
                "argv": [str(deploy_script), "{service}", "{version}"],
                "env": {"DEPLOY_EXIT": "3"},
            }
        },
    )
    # When
    run = run_now(actor=actor, level=2, reason="bad release", deployment=v2)
    # Then
    step = _step(run, 2)
    assert (run.status, step.status, step.attempts) == (
        RunStatus.FAILED,
        StepStatus.FAILED,
        2,
    )
    assert len(calls(tmp_path)) == 2
    failed = AuditEvent.objects.filter(
        action="rollback.step_failed", target_id=str(step.pk)
    )
    assert [e.details["will_retry"] for e in failed.order_by("id")] == [True, False]


class _Hook(BaseHTTPRequestHandler):
    secret = b""
    hits: list = []
    delay = 0.0

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(
            self.headers.get("X-Controlplane-Signature", ""), expected
        )
        self.hits.append(
            {
                "ok": ok,
                "body": json.loads(body),
                "key": self.headers.get("Idempotency-Key"),
            }
        )
        time.sleep(self.delay)  # a slow receiver (after the hit is visible)
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"reverted" if ok else b"bad signature")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_server():
    _Hook.secret, _Hook.hits, _Hook.delay = b"s3cret", [], 0.0
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/deploy", _Hook.hits
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_webhook_backend__signed_post__2xx_succeeds(
    deployment_pair, webhook_server, rollback_settings, actor, run_now
):
    # Given
    _, v2 = deployment_pair
    url, hits = webhook_server
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "shop": {
                "type": "webhook",
                "url": url,
                "secret": "s3cret",
                "idempotent": True,
            }
        }
    )
    # When
    run = run_now(actor=actor, level=2, reason="errors", deployment=v2)
    # Then
    step = _step(run, 2)
    assert run.status == RunStatus.SUCCEEDED
    assert len(hits) == 1 and hits[0]["ok"] is True
    assert (
        hits[0]["body"]["version"] == "v1"
        and hits[0]["body"]["previous_version"] == "v2"
    )
    assert hits[0]["key"] == f"rollback-step-{step.pk}"


@pytest.mark.slow
def test_webhook_backend__wrong_secret__rejected_and_step_failed(
    deployment_pair, webhook_server, rollback_settings, actor, run_now
):
    # Given
    _, v2 = deployment_pair
    url, hits = webhook_server
    rollback_settings(
        ROLLBACK_STEP_MAX_ATTEMPTS=1,
        ROLLBACK_DEPLOY_BACKENDS={
            "shop": {
                "type": "webhook",
                "url": url,
                "secret": "wrong",
                "idempotent": True,
            }
        },
    )
    # When
    run = run_now(actor=actor, level=2, reason="errors", deployment=v2)
    # Then
    assert run.status == RunStatus.FAILED
    assert hits[0]["ok"] is False
    assert "HTTP 401" in _step(run, 2).error


def test_backend__not_configured__conflict_and_nothing_written(
    deployment_pair, rollback_settings, actor
):
    # Given
    from controlplane.exceptions import Conflict

    _, v2 = deployment_pair
    rollback_settings(ROLLBACK_DEPLOY_BACKENDS={})
    events = AuditEvent.objects.count()
    # When
    with pytest.raises(Conflict) as info:
        rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    # Then
    assert "no deploy backend for service 'shop'" in info.value.message
    assert RollbackRun.objects.count() == 0
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize(
    "kind,config,missing",
    [
        (
            "command",
            {"type": "command", "argv": ["/opt/deploy", "{version}"]},
            "verify_argv",
        ),
        (
            "webhook",
            {
                "type": "webhook",
                "url": "https://deployer.internal/revert",
                "secret": "s",
            },
            "status_url",
        ),
    ],
)
def test_backend_check__cannot_verify_not_idempotent__system_check_error(
    rollback_settings, kind, config, missing
):
    # Given
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    rollback_settings(ROLLBACK_DEPLOY_BACKENDS={"shop": config})
    # When
    with pytest.raises(SystemCheckError) as info:
        call_command("check")
    # Then
    text = str(info.value)
    assert "rollback.E001" in text
    assert (
        f"ROLLBACK_DEPLOY_BACKENDS['shop']: {kind} backend has no '{missing}'" in text
    )
    assert 'mark it "idempotent": true' in text


@pytest.mark.parametrize(
    "config",
    [
        {"type": "command", "argv": ["/opt/deploy"], "idempotent": True},
        {"type": "command", "argv": ["/opt/deploy"], "verify_argv": ["/opt/status"]},
        {"type": "symlink", "root": "/srv/{service}"},
    ],
    ids=["idempotent", "verifies", "symlink"],
)
def test_backend_check__verifies_or_idempotent__no_error(rollback_settings, config):
    # Given
    from rollback.checks import deploy_backends_check

    rollback_settings(ROLLBACK_DEPLOY_BACKENDS={"shop": config})
    # When
    errors = deploy_backends_check()
    # Then
    assert errors == []


@pytest.mark.parametrize(
    "config,message",
    [
        ({"type": "symlink", "root": "/r", "services": "shop"}, "'services' must be"),
        ({"type": "symlink", "root": "/r", "idempotent": "yes"}, "'idempotent' must"),
        (
            {
                "type": "command",
                "argv": ["/d"],
                "verify_argv": "/s",
                "idempotent": True,
            },
            "'verify_argv' must",
        ),
    ],
)
def test_backend_check__malformed_binding_or_flags__error(
    rollback_settings, config, message
):
    # Given
    from rollback.checks import deploy_backends_check

    rollback_settings(ROLLBACK_DEPLOY_BACKENDS={"shop": config})
    # When
    errors = deploy_backends_check()
    # Then
    assert len(errors) == 1 and message in errors[0].msg


def test_run_start__backend_cannot_verify_not_idempotent__conflict_nothing_written(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor
):
    # Given
    from controlplane.exceptions import Conflict

    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {"type": "command", "argv": [str(deploy_script), "{version}"]}
        }
    )
    events = AuditEvent.objects.count()
    # When
    with pytest.raises(Conflict) as info:
        rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    # Then
    assert "command backend has no 'verify_argv'" in info.value.message
    assert RollbackRun.objects.count() == 0
    assert AuditEvent.objects.count() == events
    assert calls(tmp_path) == []


@pytest.mark.postgres
@pytest.mark.slow
def test_webhook_backend__call_outlives_lease__heartbeats_keep_the_claim(
    transactional_db,
    deployment_pair,
    webhook_server,
    rollback_settings,
    actor,
    monkeypatch,
):
    # Given: a 0.5 s lease renewed every 0.2 s, and a receiver taking 2 s
    from django.db import connection

    from rollback.executor import rollback_run_execute
    from rollback.services import rollback_step_claim

    _, v2 = deployment_pair
    url, hits = webhook_server
    _Hook.delay = 2.0
    rollback_settings(
        ROLLBACK_STEP_HEARTBEAT_SECONDS=0.2,
        ROLLBACK_STEP_LEASE_GRACE_SECONDS=0.3,
        ROLLBACK_DEPLOY_BACKENDS={
            "shop": {
                "type": "webhook",
                "url": url,
                "secret": "s3cret",
                "idempotent": True,
            }
        },
    )
    monkeypatch.setattr(
        "rollback.services.runs._queue", lambda run_id, countdown=None: None
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)

    def worker() -> None:
        try:
            rollback_run_execute(run_id=run.pk, worker="live")
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    # When: another worker tries to take the step well past the first lease
    try:
        deadline = time.monotonic() + 10
        while not hits and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        other = rollback_step_claim(run_id=run.pk, worker="other")
    finally:
        thread.join(timeout=30)
    # Then
    assert other is None
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert len(hits) == 1 and _step(run, 2).attempts == 1
