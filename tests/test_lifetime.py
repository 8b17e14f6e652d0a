"""Helpers end with the process that started them, also when it is killed (dedupe/lifetime.py):
real processes, killed with SIGKILL, which runs no clean-up of theirs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

GONE_WITHIN = 20.0


def gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie not yet reaped by its new parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_gone(pids: list[int]) -> list[int]:
    """The `pids` still running after `GONE_WITHIN` seconds (none once all have ended)."""
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if not gone(pid)]


def start(script: str, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`script` in a Python process of its own; the words of the first line it prints."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().split()


def kill_and_reap(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


# A parent that starts a child in a session of its own, which watches it with `group`; the
# child starts a grandchild in its group, as `prefect server start` starts its API server.
GROUP_PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())], start_new_session=True, stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
time.sleep(120)
"""
GROUP_CHILD = """
import subprocess, sys, time
from dedupe import lifetime
lifetime.watch_parent(int(sys.argv[1]), group=True)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(grandchild.pid, flush=True)
time.sleep(120)
"""


def test_a_watching_process_ends_with_its_group_when_its_parent_is_killed() -> None:
    parent, pids = start(GROUP_PARENT, GROUP_CHILD)
    helpers = [int(pid) for pid in pids]
    try:
        assert len(helpers) == 2 and not any(gone(pid) for pid in helpers)
        time.sleep(1.0)  # a few polls: a living parent is not mistaken for a dead one
        assert not any(gone(pid) for pid in helpers)
        kill_and_reap(parent)
        assert wait_gone(helpers) == []
    finally:
        for pid in helpers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


WORKERS_PARENT = """
import time
from dedupe import shards
shards.ProcessMap(2)("probe", abs, [(-1,), (-2,), (-3,)])
print(*shards._pool(2)._processes, flush=True)
time.sleep(120)
"""


def test_a_runs_worker_processes_end_when_the_run_is_killed() -> None:
    parent, pids = start(WORKERS_PARENT)
    workers = [int(pid) for pid in pids]
    try:
        assert len(workers) == 2 and not any(gone(pid) for pid in workers)
        kill_and_reap(parent)
        assert wait_gone(workers) == []  # they waited for work forever before
    finally:
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


EMBEDDED_PARENT = """
import sys, time
from pathlib import Path
from flows import server
embedded = server.EmbeddedServer(Path(sys.argv[1]))
embedded.wait()
print(embedded.process.pid, embedded.folder, flush=True)
time.sleep(120)
"""


def test_a_runs_embedded_api_server_ends_and_removes_its_database_when_the_run_is_killed(tmp_path: Path) -> None:
    parent, (pid, folder) = start(EMBEDDED_PARENT, str(tmp_path / "home"))
    try:
        assert not gone(int(pid)) and Path(folder).is_dir()
        kill_and_reap(parent)
        assert wait_gone([int(pid)]) == []
        assert not Path(folder).exists()
    finally:
        if not gone(int(pid)):
            os.kill(int(pid), signal.SIGKILL)
