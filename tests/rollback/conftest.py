"""Fixtures of the rollback tests: settings, deployments, real scripts."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from controlplane.audit.actors import SYSTEM


@pytest.fixture
def rollback_settings(settings):
    """Return a function that sets CONTROLPLANE values for this test."""

    def apply(**values):
        settings.CONTROLPLANE = {**(settings.CONTROLPLANE or {}), **values}

    return apply


@pytest.fixture
def deployment_pair(production):
    """v1 then v2 of service "shop" in production (v2 live, v1 its previous)."""
    from rollback.services import deployment_record

    v1 = deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v1",
        artifact="img:v1",
        migration_state={},
    )
    v2 = deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v2",
        artifact="img:v2",
        migration_state={},
    )
    return v1, v2


@pytest.fixture
def releases(tmp_path) -> Path:
    """releases/v1 and releases/v2 on disk with current -> releases/v2."""
    root = tmp_path / "shop"
    for version in ("v1", "v2"):
        (root / "releases" / version).mkdir(parents=True)
        (root / "releases" / version / "VERSION").write_text(version)
    os.symlink("releases/v2", root / "current")
    return root


@pytest.fixture
def deploy_script(tmp_path) -> Path:
    """A real deploy script: logs its argv, sleeps $DEPLOY_SLEEP, records the version.

    ``calls.log`` gets one line per invocation (at start) and ``pids.log``
    its pid; after the sleep, ``effects.log`` gets one line per completed
    deploy (the side effect) and ``current`` the version;
    ``deploy.sh status`` prints the current version.
    """
    script = tmp_path / "deploy.sh"
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "status" ]; then cat "{tmp_path}/current" 2>/dev/null; exit 0; fi
        echo "$$" >> "{tmp_path}/pids.log"
        echo "$@" >> "{tmp_path}/calls.log"
        sleep "${{DEPLOY_SLEEP:-0}}"
        echo "$@" >> "{tmp_path}/effects.log"
        echo "$2" > "{tmp_path}/current"
        echo "deployed $1 $2"
        exit "${{DEPLOY_EXIT:-0}}"
        """)
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def calls(tmp_path: Path, log: str = "calls.log") -> list[str]:
    """Return the lines of one of the deploy script's logs (calls, effects, pids)."""
    path = tmp_path / log
    return path.read_text().splitlines() if path.exists() else []


def is_alive(pid: int) -> bool:
    """Return whether ``pid`` runs (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def run_now(django_capture_on_commit_callbacks):
    """Start a run through the service and execute the task it queues on commit."""
    from rollback.services import rollback_run_start

    def start(**kwargs):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            run = rollback_run_start(**kwargs)
        assert callbacks, "the executor task was not queued on commit"
        run.refresh_from_db()
        return run

    return start
