"""Backend commands as process groups: they die with their worker, on timeout,
and when a later worker finds them left over; real processes throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rollback.actuators.base import ActuatorError
from rollback.actuators.processes import process_group_kill, run_argv
from rollback.actuators.supervisor import TAG_VARIABLE
from tests.rollback.conftest import is_alive

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="needs Linux /proc"
)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def forking_script(tmp_path) -> Path:
    """A command that starts a background grandchild, records both pids, sleeps."""
    script = tmp_path / "forks.sh"
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        sleep 60 &
        echo "$$ $!" > "{tmp_path}/pids"
        sleep 60
        echo done >> "{tmp_path}/effects.log"
        """)
    )
    script.chmod(0o755)
    return script


def _pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    text = path.read_text().split() if path.exists() else []
    return [int(p) for p in text] if len(text) == 2 else []


def test_run_argv__runner_sigkilled__command_and_grandchild_killed(
    tmp_path, forking_script
):
    # Given: a separate process (the worker) running the command via run_argv
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import django; django.setup();"
            "from rollback.actuators.processes import run_argv;"
            f"run_argv([{str(forking_script)!r}], timeout=120)",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": "",
            "PYTHONPATH": str(ROOT),
        },
    )
    try:
        pids = _wait_for(lambda: _pids(tmp_path), 30, "the command to start")
        assert all(is_alive(pid) for pid in pids)
        # When
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        # Then
        _wait_for(lambda: not any(is_alive(pid) for pid in pids), 5, "the group to die")
        assert not (tmp_path / "effects.log").exists()
    finally:
        if runner.poll() is None:
            runner.kill()
        for pid in _pids(tmp_path):
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_run_argv__timeout__command_and_grandchild_killed(tmp_path, forking_script):
    # Given / When
    with pytest.raises(ActuatorError) as info:
        run_argv([str(forking_script)], timeout=1.0)
    # Then
    assert "timed out after 1s and was killed" in info.value.message
    pids = _pids(tmp_path)
    assert len(pids) == 2
    _wait_for(lambda: not any(is_alive(pid) for pid in pids), 5, "the group to die")


def test_run_argv__command_finishes__status_and_output_returned(tmp_path):
    # Given / When
    code, out = run_argv(["sh", "-c", "echo hello; exit 3"], timeout=10)
    # Then
    assert (code, out) == (3, "hello\n")


def test_run_argv__missing_program__exit_127_with_readable_line(tmp_path):
    # Given / When
    code, out = run_argv([str(tmp_path / "nope")], timeout=10)
    # Then
    assert code == 127
    assert "cannot run" in out and "No such file or directory" in out


def _group(tag: str | None) -> subprocess.Popen:
    env = {**os.environ, **({TAG_VARIABLE: tag} if tag else {})}
    return subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)


def test_process_group_kill__tagged_group__killed():
    # Given: a leftover group of step 7
    proc = _group("rollback-step-7")
    try:
        # When
        killed = process_group_kill(proc.pid, tag="rollback-step-7")
        # Then
        assert killed == [proc.pid]
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()


def test_process_group_kill__pid_reused_by_untagged_group__left_alone():
    # Given: the recorded pgid now belongs to an unrelated process group
    proc = _group(None)
    other = _group("rollback-step-8")
    try:
        # When
        killed = process_group_kill(proc.pid, tag="rollback-step-7")
        killed_other = process_group_kill(other.pid, tag="rollback-step-7")
        # Then
        assert killed == [] and killed_other == []
        assert proc.poll() is None and other.poll() is None
    finally:
        proc.kill()
        other.kill()
        proc.wait()
        other.wait()
