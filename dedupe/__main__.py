"""The command line: `python -m dedupe run PATH... [--out DIR]`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dedupe.config import Config
from dedupe.write import Summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn a day's scrape of news into one clean story per event.")
console = Console(stderr=False)

# Prefect settings we default (the user's own environment always wins): no telemetry; room for
# the embedded server's first start on a fresh machine, which takes ~18 s against a 20 s limit;
# and quiet server loggers: when the temporary server is stopped while its task-run recorder is
# still flushing, that recorder logs a traceback (seen once in CI) though the run is complete.
# The embedded server of a one-shot run is thrown away with it, so it keeps its database in
# memory (no migrations written to disk, no race between two first runs on one PREFECT_HOME),
# registers no block types and runs none of the services that only record or react to events:
# `python benchmarks/speed.py seeds` measures the cut. A server the user started runs in its own
# process and keeps its own settings.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///:memory:",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    **{
        f"PREFECT_SERVER_SERVICES_{service}_ENABLED": "false"
        for service in ("EVENT_PERSISTER", "EVENT_LOGGER", "TRIGGERS", "TASK_RUN_RECORDER", "DB_VACUUM")
    },
}


@app.callback()
def main() -> None:
    """dedupe: cleanup, near-duplicates and stories for scraped news."""


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively) of articles.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the outputs.")] = Path("out"),
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field, e.g. --set num_perm=256 (repeatable).")
    ] = None,
) -> None:
    """Read, clean, match duplicates and group stories in PATHS; write the outputs to --out."""
    config = _config(settings or [])
    missing = [str(path) for path in paths if not path.exists() and not path.is_symlink()]
    if missing:
        raise typer.BadParameter(f"no such file or folder: {', '.join(missing)}", param_hint="PATHS")
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    from flows.pipeline import dedupe_flow  # Prefect reads its settings on import

    summary = dedupe_flow(paths=[str(path) for path in paths], out=str(out), config=config)
    _print_summary(summary, out)
    if summary.records == summary.status["rejected"]:
        console.print(f"[bold red]error:[/] nothing could be read from {', '.join(map(str, paths))}: "
                      f"{summary.records} records, all rejected (reasons in {out / 'report.md'})")
        raise typer.Exit(code=1)


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


def _config(settings: list[str]) -> Config:
    defaults = Config()
    overrides: dict[str, object] = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not hasattr(defaults, name):
            raise typer.BadParameter(f"{setting!r}: expected FIELD=VALUE with a field of:\n{defaults}", param_hint="--set")
        try:
            overrides[name] = type(getattr(defaults, name))(value)
        except ValueError:
            raise typer.BadParameter(f"{setting!r}: {value!r} is not a valid {type(getattr(defaults, name)).__name__}",
                                     param_hint="--set") from None
    return defaults.with_overrides(**overrides)


def _print_summary(summary: Summary, out: Path) -> None:
    table = Table(title=f"dedupe: {summary.records} records from {summary.files} files", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    for status, count in summary.status.items():
        table.add_row(f"articles {status}", str(count))
    table.add_row("duplicate groups", str(summary.duplicate_groups))
    table.add_row("stories", str(summary.stories))
    for rule, count in summary.removed_lines.items():
        table.add_row(f"lines removed: {rule}", str(count))
    for reason, count in list(summary.rejected_reasons.items())[:5]:
        table.add_row(f"rejected: {reason}", str(count))
    console.print(table)
    for story in summary.largest_stories[:5]:
        console.print(f"  {story['n_articles']:>5}  {story['headline'] or '(no headline)'}")
    console.print(f"outputs in {out}/: articles.parquet, stories.parquet, pairs.parquet, report.md")


if __name__ == "__main__":
    app()
