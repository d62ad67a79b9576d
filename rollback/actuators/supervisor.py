"""Run one backend command so that it dies with the worker that started it.

Started by ``rollback.actuators.processes.run_argv`` as the leader of a new
process group, by path and with ``python -I``: it imports only the standard
library, so it needs neither Django nor the project on ``sys.path``.

    python -I supervisor.py WATCH_FD TAG -- ARGV...

It runs ARGV in its own process group (with ``CONTROLPLANE_ROLLBACK_STEP=TAG``
in its environment, so a reaper can tell the group's processes from a reused
pid) and exits with ARGV's exit status. WATCH_FD is the read end of a pipe
whose only write end the worker holds: reading it returns end-of-file when
the worker closes it or dies, however it dies (SIGKILL included), and then
the whole group is killed at once, so the command cannot finish a side
effect that nobody will record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

TAG_VARIABLE = "CONTROLPLANE_ROLLBACK_STEP"


def _kill_group() -> None:
    # SIGKILL to the whole group, this process included: nothing of the
    # step may survive its worker.
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _watch(fd: int, child: subprocess.Popen) -> None:
    while True:
        try:
            data = os.read(fd, 1)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            if child.poll() is None:
                _kill_group()
            return


def main(argv: list[str]) -> int:
    """Run the command; return its exit status (128+N when killed by signal N)."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: supervisor.py WATCH_FD TAG -- ARGV...", file=sys.stderr)
        return 2
    fd, tag, command = int(argv[0]), argv[1], argv[3:]
    if os.getpgid(0) != os.getpid():
        # Not a group leader: killing "the group" would hit the worker.
        print("supervisor must lead its own process group", file=sys.stderr)
        return 2
    # A worker's SIGTERM (or a timeout) ends the command too, not just this.
    signal.signal(signal.SIGTERM, lambda *_: _kill_group())
    try:
        child = subprocess.Popen(
            command, env={**os.environ, TAG_VARIABLE: tag}, close_fds=True
        )
    except OSError as exc:
        print(f"cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    threading.Thread(target=_watch, args=(fd, child), daemon=True).start()
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
