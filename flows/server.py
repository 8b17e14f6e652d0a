"""A Prefect server for schedules: the configured one, or `prefect server start` on 127.0.0.1.

Schedules need a real server (the embedded API has no scheduler). A local server runs as a child
process in its own session and is stopped by its process id, never by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STARTUP_SECONDS = 180.0
"""A first start on a fresh PREFECT_HOME migrates its database; 20-40 s on this machine when shared."""


def configured_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


@contextmanager
def configured_or_local(notify: Callable[[str], None] = print) -> Iterator[str]:
    """The API URL of the configured server, else of a local one started for the duration."""
    configured = configured_api_url()
    if configured:
        yield configured
        return
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"dedupe-prefect-server-{os.getpid()}.log"
    with local_server(log=log) as api:
        notify(f"started a Prefect server: UI at {api.removesuffix('/api')} (its log: {log})")
        yield api


@contextmanager
def local_server(log: Path, port: int | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 (a free port unless given); yields its API URL once
    /api/health answers, and stops it when done."""
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        wait_healthy(api, process)
        yield api
    finally:
        stop(process)


def wait_healthy(api: str, process: subprocess.Popen[bytes], timeout: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with status {process.returncode} before it was healthy")
        try:
            if request(api, "GET", "/health") is True:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server at {api} not healthy after {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group (its pid), SIGKILL if it does not stop."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def request(api: str, method: str, path: str, body: object = None) -> Any:
    """One call to the Prefect REST API, JSON in and out."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    call = urllib.request.Request(f"{api}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(call, timeout=10) as response:
        return json.loads(response.read() or b"null")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
