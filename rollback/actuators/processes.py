"""Backend commands as process groups that cannot outlive their step.

Every command runs under ``supervisor.py`` as the leader of a new process
group (its pgid is the supervisor's pid). The group dies:

* with the worker: the supervisor watches a pipe only the worker holds and
  kills the group when it reads end-of-file (the worker exited or was
  SIGKILLed);
* on timeout, or when the step's lease is lost: the lease holder kills it;
* when a later worker takes the step over on the same host: it kills what is
  left of the group recorded in the step before verifying and retrying.

While a command runs on behalf of a step, ``step_process_hooks`` (set by the
executor around verify and execute) records the group in the step and
renews the step's lease every ``ROLLBACK_STEP_HEARTBEAT_SECONDS``: a live
long command keeps its lease, a dead worker's lease runs out within the
heartbeat plus ``ROLLBACK_STEP_LEASE_GRACE_SECONDS``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rollback.actuators.base import ActuatorError
from rollback.actuators.supervisor import TAG_VARIABLE

logger = logging.getLogger(__name__)
T = TypeVar("T")
OUTPUT_LIMIT = 20_000
_SUPERVISOR = str(Path(__file__).with_name("supervisor.py"))
_PROC = Path("/proc")


@dataclass(frozen=True)
class StepProcessHooks:
    """What a command run for a step reports back (to the step's row).

    ``tag`` marks the command's processes (an environment variable);
    ``on_spawn(pgid, host)`` records the group; ``heartbeat()`` renews the
    lease and returns False once the step belongs to another worker.
    """

    tag: str
    on_spawn: Callable[[int, str], None]
    heartbeat: Callable[[], bool]
    every: float


_hooks: contextvars.ContextVar[StepProcessHooks | None] = contextvars.ContextVar(
    "rollback_step_process_hooks", default=None
)


@contextmanager
def step_process_hooks(hooks: StepProcessHooks) -> Iterator[None]:
    """Make every command started in this block report to ``hooks``."""
    token = _hooks.set(hooks)
    try:
        yield
    finally:
        _hooks.reset(token)


def step_tag(step_id: int) -> str:
    """Return the marker put in the environment of a step's processes."""
    return f"rollback-step-{step_id}"


def host_name() -> str:
    """Return this host's name, recorded with a process group."""
    return socket.gethostname()


def call_with_heartbeat(fn: Callable[[], T]) -> T:
    """Return ``fn()``, renewing the step's lease while it runs (e.g. an HTTP call).

    ``fn`` runs in a helper thread and must not touch the ORM. A lost lease
    is logged, not acted on: an HTTP request in flight cannot be recalled
    (the receiver de-duplicates by its Idempotency-Key).
    """
    hooks = _hooks.get()
    if hooks is None:
        return fn()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(fn)
        while True:
            try:
                return future.result(timeout=hooks.every)
            except FutureTimeout:
                if not hooks.heartbeat():
                    logger.warning(
                        "%s lost its lease while a call was running", hooks.tag
                    )


def _kill(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_argv(
    argv: list[str], *, timeout: float, env: dict | None = None
) -> tuple[int, str]:
    """Run argv without a shell in its own process group; return (status, output).

    The group is killed (SIGKILL) and ActuatorError raised on timeout or
    when the step's lease was taken over; it is killed by its supervisor
    if this process dies.
    """
    hooks = _hooks.get()
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                _SUPERVISOR,
                str(read_end),
                hooks.tag if hooks else "rollback-command",
                "--",
                *argv,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            pass_fds=(read_end,),
            env={**os.environ, **(env or {})},
        )
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        raise ActuatorError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    os.close(read_end)
    try:
        return _wait(proc, argv, timeout=timeout, hooks=hooks)
    finally:
        # Closing the write end tells the supervisor nobody is waiting any
        # more: it kills whatever of the group is still running.
        os.close(write_end)


def _wait(
    proc: subprocess.Popen,
    argv: list[str],
    *,
    timeout: float,
    hooks: StepProcessHooks | None,
) -> tuple[int, str]:
    if hooks:
        hooks.on_spawn(proc.pid, host_name())
    deadline = time.monotonic() + timeout
    chunks: list[str] = []
    while True:
        left = deadline - time.monotonic()
        wait = min(left, hooks.every) if hooks else left
        try:
            out, _ = proc.communicate(timeout=max(wait, 0.0))
            chunks.append(out or "")
            break
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            _kill(proc.pid)
            out, _ = proc.communicate()
            raise ActuatorError(
                f"{argv[0]} timed out after {timeout:g}s and was killed",
                output=(out or "")[-OUTPUT_LIMIT:],
            ) from None
        if hooks and not hooks.heartbeat():
            _kill(proc.pid)
            out, _ = proc.communicate()
            raise ActuatorError(
                f"{argv[0]} was killed: the step's lease was lost to another worker",
                output=(out or "")[-OUTPUT_LIMIT:],
            )
    return proc.returncode, "".join(chunks)[-OUTPUT_LIMIT:]


def _group_members(pgid: int) -> list[int] | None:
    """Return the pids in process group ``pgid``, or None without /proc."""
    if not (_PROC / "self" / "stat").exists():
        return None
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may
        # hold spaces: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _is_tagged(pid: int, tag: str) -> bool:
    marker = f"{TAG_VARIABLE}={tag}".encode()
    try:
        if marker in (_PROC / str(pid) / "environ").read_bytes().split(b"\0"):
            return True
        # The supervisor itself carries the tag in its argv.
        return tag.encode() in (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def process_group_kill(pgid: int, *, tag: str) -> list[int]:
    """Kill what is left of a step's process group on this host; return the pids.

    Only processes carrying the step's ``tag`` are killed, so a pid reused
    by an unrelated process since is left alone. Without /proc (not Linux)
    the whole group is signalled and [pgid] returned if it existed.
    """
    members = _group_members(pgid)
    if members is None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    killed = []
    for pid in members:
        if _is_tagged(pid, tag):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    return killed
