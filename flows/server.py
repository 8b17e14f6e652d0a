"""Prefect servers: the configured one, `prefect server start` on 127.0.0.1 for schedules, and
the embedded API of a one-shot `run`.

Schedules need a real server (the embedded API has no scheduler). A local server runs as a child
process in its own session and is stopped by its process id, never by name. Both kinds of server
also end when the process that started them dies without stopping them (`dedupe.lifetime`).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dedupe import lifetime

STARTUP_SECONDS = 180.0
"""A first start on a fresh PREFECT_HOME migrates its database; 20-40 s on this machine when shared."""
STARTS = 3  # the embedded server's starts (each on a new port) before `EmbeddedServer.wait` gives up
SCHEMAS = Path(__file__).parent / "prefect_schemas"
"""The SQL of an empty database as Prefect's migrations leave it, one file per Prefect version
(`python -m flows.server write-schema` writes the installed version's; a test checks it)."""


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
    with local_server_process(log, port, env) as (api, _):
        yield api


@contextmanager
def local_server_process(
    log: Path, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`local_server` with its process too (to stop it early: benchmarks/faults.py loses the API
    mid-run), in its own process group, stopped by its id when done."""
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = (os.environ if env is None else env) | {lifetime.PARENT_ENV: str(os.getpid())}
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", PREFECT_WATCHING_PARENT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        wait_healthy(api, process)
        yield api, process
    finally:
        stop(process)


PREFECT_WATCHING_PARENT = (
    "import sys; from dedupe import lifetime; lifetime.watch_parent_from_env(group=True); "
    "sys.argv[0] = 'prefect'; from prefect.cli import app; app()"
)
"""`python -m prefect`, stopping its process group (the server's workers with it) once the
process that started it is gone (`lifetime.watch_parent`)."""


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
        time.sleep(0.1)
    raise TimeoutError(f"prefect server at {api} not healthy after {timeout:.0f} s")


class EmbeddedServer:
    """The API server Prefect starts for a run with no server configured (its own uvicorn app and
    settings, as `prefect.server.api.server.SubprocessASGIServer` starts it), started by us for
    two measured savings (`python benchmarks/speed.py seeds`):

    - at the start of `run`, before the client imports Prefect, so that the server's imports
      (3-5 s) run on the other core beside the client's instead of after them;
    - on a copy of an empty database migrated once per PREFECT_HOME and Prefect version (a
      template under PREFECT_HOME/dedupe/), not on a new one: Prefect runs all its Alembic
      migrations into a new database at every start, 6-7 s of the old 15 s run. The copy is the
      run's own, thrown away with the server, so two runs at once share nothing but the
      template, which is written whole under a unique name and renamed into place;
    - on a fresh PREFECT_HOME, the template is made from the SQL of the migrated schema that
      ships in `SCHEMAS` for the installed Prefect version (milliseconds), so even a first run
      does not migrate; a version with no shipped schema migrates on its first run, as before;
    - and a copy of the template skips Prefect's migration check at start (Alembic at head still
      loads every migration script).

    Stopped at exit (after Prefect's event worker has drained, as Prefect orders it) or by `stop`."""

    def __init__(self, home: Path) -> None:
        self.template = home / "dedupe" / f"embedded-server-prefect-{version('prefect')}.db"
        self.folder = Path(tempfile.mkdtemp(prefix="dedupe-prefect-api-"))
        self.database = self.folder / "prefect.db"
        self.fresh = True
        if not self.template.exists():
            _template_from_schema(self.template, SCHEMAS / f"prefect-{version('prefect')}.sql")
        if self.template.exists():
            try:
                _copy_database(self.template, self.database)
                self.fresh = False
            except (OSError, sqlite3.Error):  # unreadable: this run migrates a new one, as Prefect would
                self.database.unlink(missing_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.api = ""
        self._spawn()
        atexit.register(self.stop)

    def _spawn(self) -> None:
        port = free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        env = os.environ | {
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.database}",
            "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", lifetime.PARENT_ENV: str(os.getpid()),
            SERVER_FOLDER_ENV: str(self.folder),
        }
        if not self.fresh:  # a copy of the template is at head: no need for Alembic to load its scripts to see so
            env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] = "false"
        command = [
            sys.executable, "-m", "uvicorn", "--factory", "flows.server:embedded_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "error", "--lifespan", "on",
        ]
        # in the CLI's process group, as Prefect starts it: a Ctrl-C or hang-up of the terminal stops both
        self.process = subprocess.Popen(command, env=env)

    def wait(self, timeout: float = STARTUP_SECONDS) -> str:
        """The API URL once the server answers; on the first start, the migrated database
        becomes the template of later runs."""
        assert self.process is not None
        for attempt in range(1, STARTS + 1):
            try:
                wait_healthy(self.api, self.process, timeout)
                break
            except RuntimeError as error:
                if self.process.returncode != 3:
                    raise
                if attempt == STARTS:  # uvicorn's status 3 is also an app that failed to start
                    raise RuntimeError(f"the embedded Prefect server exited with status 3 at each of {STARTS} starts: "
                                       "its port was taken each time, or its app (flows.server:embedded_app) "
                                       "failed to start (its error is printed above)") from error
                self._spawn()  # uvicorn's status for a port taken meanwhile: another port
        if self.fresh:
            self.fresh = False
            partial = self.template.with_name(f"{self.template.name}.{os.getpid()}.partial")
            try:
                self.template.parent.mkdir(parents=True, exist_ok=True)
                _copy_database(self.database, partial)
                partial.replace(self.template)
            except (OSError, sqlite3.Error):  # a read-only PREFECT_HOME: every run migrates, as Prefect does
                partial.unlink(missing_ok=True)
        return self.api

    def stop(self) -> None:
        """Stop the server by its process id (not its group: that is the CLI's); then its database goes.
        SIGKILL at once: uvicorn's graceful shutdown (its services, Docket) took 0.27 s at the end
        of every run, for a server that keeps nothing (its database is this run's copy)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def collector_off() -> Iterator[None]:
    """Python's cyclic garbage collector off while a process imports and builds what it keeps
    (Prefect, polars, the stages; Prefect's API app): they allocate millions of objects and no
    garbage, and the collections they set off cost ~0.4 s of the CLI's CPU and ~0.7 s of the
    server's in a seeds run (`python benchmarks/speed.py seeds`). Then what they built is frozen
    (left out of all later collections: the first one after the imports took 0.2-0.5 s to find
    nothing in it, measured with `gc.callbacks`), and the collector is on again, unless it was
    off before."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.freeze()
            gc.enable()


SERVER_FOLDER_ENV = "DEDUPE_EMBEDDED_SERVER_FOLDER"
"""The embedded server's own folder (its database), which it removes if its run dies without
stopping it."""


def embedded_app() -> Any:
    """Prefect's API app (`create_app`, as `EmbeddedServer` runs it), built with Python's cyclic
    garbage collector off: the import of Prefect's whole API and its routes allocates ~2 million
    objects and no garbage worth collecting, and the collections it sets off cost ~0.7 s of the
    server's ~5.5 s of CPU before it answers (`python benchmarks/speed.py seeds`). What it built
    is then frozen (left out of later collections) and the collector is on again for serving.
    Not "final" (PREFECT__SERVER_FINAL, which Prefect's own start sets): with FastAPI 0.137 or
    newer all that does is one full collection of everything built (~0.4 s); before 0.137 it
    also dropped the routers' copied routes (~50 MB), which a server of one run can keep.
    It ends, and removes its folder, once its run is gone (`lifetime.watch_parent`)."""
    folder = os.environ.get(SERVER_FOLDER_ENV)
    lifetime.watch_parent_from_env(before_exit=lambda: shutil.rmtree(folder, ignore_errors=True) if folder else None)
    with collector_off():
        from prefect.server.api.server import create_app

        return create_app()


def _template_from_schema(template: Path, schema: Path) -> None:
    """Write `template` from the shipped SQL of a migrated empty database, if there is one for
    this Prefect version: whole under a unique name, then renamed into place (as `wait` does)."""
    if not schema.is_file():
        return
    partial = template.with_name(f"{template.name}.{os.getpid()}.partial")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        with closing(sqlite3.connect(partial)) as database:
            database.executescript(schema.read_text())
        partial.replace(template)
    except (OSError, sqlite3.Error):  # a read-only PREFECT_HOME: this run migrates, as Prefect does
        partial.unlink(missing_ok=True)


def migrate(database: Path) -> None:
    """A new database migrated by Prefect's own command (`prefect server database upgrade`):
    what a shipped schema must be equivalent to (a test compares them)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(database.parent), "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    subprocess.run(
        [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
        env=env, check=True, capture_output=True, timeout=STARTUP_SECONDS,
    )


def _copy_database(source: Path, target: Path) -> None:
    """SQLite's backup API: a consistent copy even while the server has the source open (WAL)."""
    with closing(sqlite3.connect(source)) as reading, closing(sqlite3.connect(target)) as writing:
        reading.backup(writing)


def stop(process: subprocess.Popen[bytes], group: bool = True) -> None:
    """SIGTERM to the server's own process group (its pid), or to the process alone, SIGKILL if
    it does not stop."""
    if process.poll() is not None:
        return
    kill = os.killpg if group else os.kill
    kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill(process.pid, signal.SIGKILL)
        process.wait()


RETRYABLE_STATUS = (429, 502, 503)
"""What Prefect's own client retries: its server answers 503 to errors a client may retry, such
as SQLite's "database is locked" while two served flows write at once (seen in CI)."""


def request(api: str, method: str, path: str, body: object = None, attempts: int = 5) -> Any:
    """One call to the Prefect REST API, JSON in and out; a retryable status is tried again
    after 0.5, 1, 2, 4 s."""
    for attempt in range(attempts - 1):
        try:
            return _request_once(api, method, path, body)
        except urllib.error.HTTPError as error:
            if error.code not in RETRYABLE_STATUS:
                raise
        time.sleep(0.5 * 2**attempt)
    return _request_once(api, method, path, body)


def _request_once(api: str, method: str, path: str, body: object) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    call = urllib.request.Request(f"{api}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(call, timeout=10) as response:
        return json.loads(response.read() or b"null")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    if sys.argv[1:] != ["write-schema"]:
        sys.exit("usage: python -m flows.server write-schema   (the installed Prefect version's migrated schema)")
    target = SCHEMAS / f"prefect-{version('prefect')}.sql"
    target.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        migrate(Path(work) / "prefect.db")
        with closing(sqlite3.connect(Path(work) / "prefect.db")) as migrated:
            target.write_text("\n".join(migrated.iterdump()) + "\n")
    print(f"wrote {target}")
