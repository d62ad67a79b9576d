"""This process's id, kept current across fork without a system call.

``os.getpid()`` is a system call each time (glibc no longer caches it);
the hot path asks "is my background thread running in this process?" on
every request, so the answer is one comparison against ``procid.current``,
which a fork handler updates in the child.
"""

from __future__ import annotations

import os

current = os.getpid()


def _after_fork_in_child() -> None:
    global current
    current = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)
