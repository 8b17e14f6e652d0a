"""The command line: `python -m dedupe run PATH... [--out DIR]`, `serve`, `eval`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from dedupe.config import Config
from flows.server import collector_off

# The stages' modules (polars, datasketch, scipy: ~1 s) are imported where used, after `run` has
# started the embedded Prefect server, so that its start-up overlaps them.
if TYPE_CHECKING:
    from dedupe.write import Summary
    from flows.server import EmbeddedServer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn a day's scrape of news into one clean story per event.")
console = Console(stderr=False)

# Prefect settings we default (the user's own environment always wins): no telemetry; room for
# the embedded server's first start on a fresh machine, which takes ~18 s against a 20 s limit;
# and quiet server loggers: when the temporary server is stopped while its task-run recorder is
# still flushing, that recorder logs a traceback (seen once in CI) though the run is complete.
# A server the user started runs in its own process and keeps its own logging. Two API client
# retries, not five: each failed request backs off 2, 4, 8, 16, 32 s, so a server stopped mid-run
# held the seeds run 151 s before it could finish without Prefect (see `_run_flow`).
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_CLIENT_MAX_RETRIES": "2",
}
# The embedded server of a one-shot `run` (no PREFECT_API_URL) is thrown away with it, so it
# registers no block types and runs none of the services that only record or react to events;
# its database is a copy of a migrated template (`flows.server.EmbeddedServer`). Not memoizing
# the block registration it skips anyway spares its start the import of every Prefect collection
# (prefect-dask: Dask and distributed, ~0.8 s of CPU) only to hash their block types. `python
# benchmarks/speed.py seeds` measures the cuts. Never for `serve`: the server it starts must
# keep its runs.
EMBEDDED_SERVER_DEFAULTS = {
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
    **{
        f"PREFECT_SERVER_SERVICES_{service}_ENABLED": "false"
        for service in ("EVENT_PERSISTER", "EVENT_LOGGER", "TRIGGERS", "TASK_RUN_RECORDER", "DB_VACUUM")
    },
}


@app.callback()
def main() -> None:
    """dedupe: cleanup, near-duplicates and stories for scraped news."""


IndexOption = Annotated[
    str | None, typer.Option("--index", help="Keep the LSH buckets in a shared Redis index: redis://HOST:PORT/DB.")
]

@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively) of articles.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the outputs.")] = Path("out"),
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field, e.g. --set num_perm=256 (repeatable).")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state", help="Folder of the history runs build on (default OUT/state).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for another run on the same state, or stop at once.")
    ] = True,
    task_runner: Annotated[
        str | None,
        typer.Option("--task-runner", help="Run the per-record stages in shards on workers: dask, dask:ADDRESS, ray, ray:ADDRESS."),
    ] = None,
    index: IndexOption = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, help="Processes for the per-record stages (default 0: one per core for stages of 25,000 records or more; 1: this process)."),
    ] = None,
) -> None:
    """Match the new records in PATHS against earlier runs' state; write the outputs over all of
    it to --out. Records seen before (same id and content) are skipped."""
    config = _config(settings or [])
    if workers is not None:
        config = config.with_overrides(workers=workers)
    _check_scale_options(task_runner, index)
    missing = [str(path) for path in paths if not path.exists() and not path.is_symlink()]
    if missing:
        raise typer.BadParameter(f"no such file or folder: {', '.join(missing)}", param_hint="PATHS")
    _prefect_defaults(embedded=True)
    with collector_off():
        embedded = _start_embedded_server()
        from dedupe.index import RedisIndexError
        from dedupe.state import StateError

    try:
        summary, lost_api = _run_flow(paths, out, config, state_dir, wait, embedded, task_runner, index)
    except (StateError, RedisIndexError) as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(code=1) from None
    _print_summary(summary, out)
    code = 0
    if summary.records == summary.status["rejected"]:
        console.print(f"[bold red]error:[/] nothing could be read from {', '.join(map(str, paths))}: "
                      f"{summary.records} records, all rejected (reasons in {out / 'report.md'})")
        code = 1
    if lost_api:
        # Prefect's event worker would retry each undelivered event ~7 s at exit (2.5 min measured
        # after a mid-run server stop); the outputs are written, so leave without it.
        console.file.flush()
        if embedded:
            embedded.stop()  # os._exit runs no exit handlers
        os._exit(code)
    if code:
        raise typer.Exit(code=code)


def _start_embedded_server() -> EmbeddedServer | None:
    """Our start of the embedded Prefect API when no server or database is set in the
    environment (see `flows.server.EmbeddedServer`), before anything imports Prefect."""
    if {"PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"} & os.environ.keys():
        return None
    from flows.server import EmbeddedServer

    return EmbeddedServer(Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser())


def _run_flow(
    paths: list[Path], out: Path, config: Config, state_dir: Path | None, wait: bool, embedded: EmbeddedServer | None,
    task_runner: str | None = None, index: str | None = None,
) -> tuple[Summary, bool]:
    """(summary, whether the Prefect API was lost). A run whose Prefect API goes away finishes
    without Prefect: the same state update under the same lock, so what the flow had committed
    stands and the rest is done once."""
    with collector_off():
        from flows import scale
        from flows.pipeline import dedupe_flow  # Prefect reads its settings on import

        if embedded is not None:
            _import_ahead(paths)

    folder = state_dir or out / "state"
    flow = dedupe_flow.with_options(task_runner=scale.task_runner(task_runner)) if task_runner else dedupe_flow
    try:
        with _embedded_api(embedded):
            summary = flow(
                paths=[str(path) for path in paths], out=str(out), config=config, state_dir=str(folder), wait=wait,
                index=index,
            )
        return summary, False
    except Exception as error:
        lost = _transport_error(error)
        if lost is None:
            raise
    from dedupe import pipeline

    api = os.environ.get("PREFECT_API_URL", "the embedded Prefect API")
    console.print(f"[bold yellow]warning:[/] lost {api} during the run ({type(lost).__name__}: {lost}); "
                  "finishing it without Prefect, so it will not show in the Prefect UI")
    from dedupe import shards

    plan = scale.plan(index)  # outside the flow: in this process, with the index if one is given
    call = shards.sharded_call(pipeline.direct, plan) if plan else pipeline.direct
    result, _ = pipeline.run_on_state(paths, out, folder, config, wait, call, warn=console.print)
    return result.summary, True


def _import_ahead(paths: list[Path]) -> None:
    """Import now what the flow run imports as it goes, while the embedded server is still
    starting (the CLI waits for it, ~1 s on a free core): Prefect's encoder of the flow's
    parameters (FastAPI), numba for the stages' compiled loops and, for HTML input, trafilatura;
    0.2, 0.3 and 0.5 s of CPU that came after the flow run began (`python -X importtime -m dedupe
    run seeds/`)."""
    import fastapi.encoders  # noqa: F401

    import dedupe.compiled  # noqa: F401
    from dedupe import read

    with contextlib.suppress(read.InputError):
        if any(read.file_type(path) in read.HTML_SUFFIXES for path, _ in read.discover(paths)):
            import trafilatura  # noqa: F401


@contextlib.contextmanager
def _embedded_api(embedded: EmbeddedServer | None) -> Iterator[None]:
    """Prefect pointed at our embedded server, unless a Prefect profile names a server (then
    ours is stopped unused, and Prefect uses that one)."""
    from flows.server import configured_api_url

    if embedded is None or configured_api_url():
        if embedded:
            embedded.stop()
        yield
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    # No UI URL: the embedded server serves no UI, and Prefect would log a link to one. Nothing
    # that only a server outliving the run would read: no flow run heartbeats (they tell it
    # whether the run crashed; their thread sleeps in 1 s steps, and the flow's end waited for
    # it, 0-1 s), no log lines sent to it (the console has them; its database is thrown away).
    unread = {"flows.heartbeat_frequency": None, "logging.to_api.enabled": False}
    with temporary_settings(updates={PREFECT_API_URL: embedded.wait(), PREFECT_UI_URL: "", **unread}):
        yield


def _transport_error(error: BaseException) -> BaseException | None:
    """The connection error (httpx) behind `error`, if the API could not be reached."""
    import httpx

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (httpx.TransportError, ConnectionError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@app.command()
def serve(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders where new batches arrive.", exists=True)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the outputs.")] = Path("out"),
    state_dir: Annotated[Path | None, typer.Option("--state", help="History folder (default OUT/state).")] = None,
    every: Annotated[str | None, typer.Option("--every", help="Interval between runs: 90s, 15m, 1h.")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help='Cron schedule instead, e.g. "*/15 * * * *".')] = None,
    name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "dedupe-schedule",
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field for every run (repeatable).")
    ] = None,
    index: IndexOption = None,
) -> None:
    """Run the flow on a schedule as a Prefect deployment, each run picking up what is new in
    PATHS. Uses the configured Prefect server (PREFECT_API_URL), else starts one on 127.0.0.1."""
    if (every is None) == (cron is None):
        raise typer.BadParameter("give one of --every or --cron", param_hint="--every")
    _config(settings or [])  # refused here, not in every scheduled run
    _check_scale_options(None, index)
    schedule = ["--cron", cron] if cron else ["--every-seconds", str(_seconds(every or ""))]
    _prefect_defaults()
    from flows import server

    with server.configured_or_local(console.print) as api_url:
        command = [sys.executable, "-m", "flows.serve", *map(str, paths), "--out", str(out), "--name", name, *schedule]
        if state_dir:
            command += ["--state", str(state_dir)]
        command += [argument for setting in settings or [] for argument in ("--set", setting)]
        command += ["--index", index] if index else []
        console.print(f"serving deployment dedupe/{name} on {api_url}; stop with Ctrl-C")
        # its own session, so that a Ctrl-C reaches us alone and we stop it (then the server) in order
        serving = subprocess.Popen(command, env=os.environ | {"PREFECT_API_URL": api_url}, start_new_session=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SIGTERM, too, stops the child and the server
        try:
            with contextlib.suppress(KeyboardInterrupt):
                serving.wait()
        finally:
            server.stop(serving)  # type: ignore[arg-type]


@app.command("eval")
def evaluate_run(
    out: Annotated[Path, typer.Argument(help="A run's output folder (or its articles.parquet).", exists=True)],
    labels: Annotated[Path, typer.Option("--labels", help="CSV or Parquet with columns id, cluster.", exists=True)],
    level: Annotated[str, typer.Option("--level", help="duplicates or stories.")] = "stories",
) -> None:
    """Score a run's duplicate groups or stories against labels: pairwise, B-cubed, ARI."""
    from dedupe.evaluate import LEVEL_COLUMNS, evaluate, predicted_clusters, read_labels

    if level not in LEVEL_COLUMNS:
        raise typer.BadParameter(f"{level!r}: expected one of {', '.join(LEVEL_COLUMNS)}", param_hint="--level")
    try:
        truth = read_labels(labels)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--labels") from None
    scores = evaluate(predicted_clusters(out, level), truth)
    table = Table(title=f"{level} of {out} against {labels} ({scores.n} labelled records)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in scores.rows():
        table.add_row(name.replace("_", " "), f"{value:.4f}")
    console.print(table)


def _seconds(interval: str) -> float:
    """'90s', '15m', '1h', '2d' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (interval[:-1], interval[-1]) if interval[-1:] in units else (interval, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise typer.BadParameter(f"{interval!r}: expected e.g. 90s, 15m, 1h", param_hint="--every") from None
    if seconds <= 0:
        raise typer.BadParameter(f"{interval!r}: the interval must be positive", param_hint="--every")
    return seconds


def _prefect_defaults(embedded: bool = False) -> None:
    """Our Prefect defaults (the user's own settings win); `embedded` adds those of a throw-away
    embedded server, when no server is configured."""
    chosen = PREFECT_DEFAULTS | (EMBEDDED_SERVER_DEFAULTS if embedded and "PREFECT_API_URL" not in os.environ else {})
    for name, value in chosen.items():
        os.environ.setdefault(name, value)


def _check_scale_options(task_runner: str | None, index: str | None) -> None:
    """Refuse a malformed --task-runner or --index before any server starts."""
    from urllib.parse import urlsplit

    if task_runner is not None and task_runner.partition(":")[0] not in ("dask", "ray"):
        raise typer.BadParameter(f"{task_runner!r}: expected dask, dask:ADDRESS, ray or ray:ADDRESS", param_hint="--task-runner")
    if index is None:
        return
    if urlsplit(index).scheme not in ("redis", "rediss", "unix"):
        raise typer.BadParameter(f"{index!r}: expected redis://HOST:PORT/DB", param_hint="--index")
    import redis

    try:
        redis.Redis.from_url(index, socket_connect_timeout=5).ping()
    except (redis.RedisError, ValueError) as error:
        raise typer.BadParameter(f"cannot reach Redis at {index}: {error}", param_hint="--index") from None


def _config(settings: list[str]) -> Config:
    try:
        config = Config().with_settings(settings)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--set") from None
    if config.story_model != "minilm":
        return config
    from dedupe.verify import SEMANTIC_INSTALL, missing_semantic_packages

    missing = missing_semantic_packages()
    if missing:
        raise typer.BadParameter(f"story_model=minilm needs {', '.join(missing)}: {SEMANTIC_INSTALL}", param_hint="--set")
    return config


def _print_summary(summary: Summary, out: Path) -> None:
    table = Table(title=f"dedupe: {summary.records} records from {summary.files} files", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, count in summary.run.items():
        table.add_row(f"this run: {what.replace('_', ' ')}", str(count))
    for status, count in summary.status.items():
        table.add_row(f"articles {status}", str(count))
    table.add_row("duplicate groups", str(summary.duplicate_groups))
    table.add_row("stories", str(summary.stories))
    for rule, count in summary.removed_lines.items():
        table.add_row(f"lines removed: {rule}", str(count))
    for reason, count in list(summary.rejected_reasons.items())[:5]:
        table.add_row(f"rejected: {reason}", str(count))
    for kind, count in summary.notes.items():
        table.add_row(f"note: {kind}", str(count))
    console.print(table)
    for story in summary.largest_stories[:5]:
        console.print(f"  {story['n_articles']:>5}  {story['headline'] or '(no headline)'}")
    console.print(f"outputs in {out}/: articles.parquet (their texts in article_texts.parquet/, by article_id), "
                  "stories.parquet, pairs.parquet, report.md")


def _exit_without_teardown(code: object) -> None:
    """Leave as `sys.exit(code)` would, but without the interpreter's teardown of every module and
    object (Prefect, polars, the stages), about 1 s after the last exit handler of a seeds run; with
    two smaller cuts it saves 0.8-1.7 s a run (`python benchmarks/speed.py seeds --against` an
    older checkout, benchmarks/README.md). The exit handlers still run first, in
    their order (Prefect's log and event workers drain, the embedded server stops), and the
    outputs are already in place (renamed), so nothing is left unwritten. Only when the CLI is the
    program: `app()` called from Python keeps the normal exit."""
    import atexit

    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    atexit._run_exitfuncs()  # what a normal exit would run, then nothing more
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    try:
        app()
    except SystemExit as leaving:
        _exit_without_teardown(leaving.code)
