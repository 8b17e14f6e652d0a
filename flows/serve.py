"""Serve the dedupe flow as a Prefect deployment on a schedule: `python -m flows.serve ARGS`.

`flow.serve` runs here, in the main module, because the runner starts each scheduled run in a
new process that imports the flow again: called from inside an imported module (the CLI's), the
runs crashed at start. `python -m dedupe serve` starts this module; see its help for the options.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from flows.pipeline import dedupe_flow


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--name", default="dedupe-schedule")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--index", help="redis://HOST:PORT/DB: a Redis LSH index shared with other flows")
    schedule = parser.add_mutually_exclusive_group(required=True)
    schedule.add_argument("--every-seconds", type=float)
    schedule.add_argument("--cron")
    return parser.parse_args(argv)


if __name__ == "__main__":
    given = arguments()
    dedupe_flow.serve(
        name=given.name,
        interval=timedelta(seconds=given.every_seconds) if given.every_seconds else None,
        cron=given.cron,
        parameters={
            "paths": [str(path.resolve()) for path in given.paths],
            "out": str(given.out.resolve()),
            "state_dir": str(given.state.resolve()) if given.state else None,
            "settings": given.settings,
            "index": given.index,
        },
        limit=1,  # one run at a time: a slow run delays the next instead of queueing on the lock
    )
