from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from dedupe import shards
from dedupe.clean import clean
from dedupe.normalize import normalize
from dedupe.read import read
from flows import server

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SEED_ARTICLE = SEEDS / "000_dc6af5a75e8b8c84.txt"


def pytest_configure(config: pytest.Config) -> None:
    """A suite stopped by SIGTERM (a `timeout`) tears its fixtures down as after Ctrl-C: the
    servers and workers they started are stopped, not left running with parent 1."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cleaned_frame(*paths: Path) -> pl.DataFrame:
    return clean(normalize(read(paths)))


@pytest.fixture(scope="session")
def seed_cleaned() -> pl.DataFrame:
    return cleaned_frame(SEEDS)


@pytest.fixture
def first_passes(monkeypatch: pytest.MonkeyPatch) -> list[shards.FirstPass]:
    """Every `shards.FirstPass` made during the test, in order, kept alive."""
    made: list[shards.FirstPass] = []
    started = shards.FirstPass.__init__

    def recording(first_pass: shards.FirstPass, *args: object) -> None:
        started(first_pass, *args)  # type: ignore[arg-type]
        made.append(first_pass)

    monkeypatch.setattr(shards.FirstPass, "__init__", recording)
    return made


def prefect_env(home: Path, api: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return env | ({"PREFECT_API_URL": api} if api else {})


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real `prefect server start` (127.0.0.1, its own PREFECT_HOME) for the tests against a
    server, stopped by process id at the end: each start costs 15-35 s on a 2-core machine."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    with server.local_server(log=home / "server.log", env=prefect_env(home)) as url:
        yield url
