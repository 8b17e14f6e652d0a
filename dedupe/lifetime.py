"""Helper processes that end with the process that started them.

A run's worker processes (`shards.ProcessMap`) and servers (flows/server.py) are stopped by the
run when it ends. A run killed by SIGTERM or SIGKILL (a scheduler cancelling it, the kernel out of
memory) runs no clean-up, and its workers waited forever for work. They held their memory, and the
servers held their ports and CPU. Each helper therefore watches its parent from a daemon thread and
exits once the parent is gone (it is then a child of init or of a subreaper). Polling `getppid`
works on Linux and macOS alike; Linux's parent-death signal follows the thread that started the
child, not the process, and a pool may be started from any thread. Kept free of heavy imports:
the embedded API server imports it before Prefect.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

PARENT_ENV = "DEDUPE_PARENT_PID"
"""The process id a server started by a run watches (set by the run, read by `watch_parent_from_env`)."""
POLL_SECONDS = 0.5


def watch_parent(parent: int, group: bool = False, before_exit: Callable[[], object] | None = None) -> None:
    """Exit this process once `parent` is no longer its parent: after `before_exit`, at once with
    status 1, or, with `group`, by SIGTERM to its whole process group (a server's own children
    with it), then SIGKILL after 10 s. Returns at once; the watching is a daemon thread."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        if before_exit is not None:
            before_exit()
        if group:
            os.killpg(0, signal.SIGTERM)
            time.sleep(10)
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="dedupe-watch-parent", daemon=True).start()


def watch_parent_from_env(group: bool = False, before_exit: Callable[[], object] | None = None) -> None:
    """`watch_parent` of the process id in `PARENT_ENV`, if the starting run set it."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        watch_parent(int(parent), group, before_exit)
