"""End to end: the CLI runs the Prefect flow on Prefect's embedded API, as a new user would."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

import polars as pl
import pytest

from dedupe import __main__ as cli
from dedupe import write
from flows import server
from tests.conftest import ROOT, SEEDS

SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "dedupe", "run", *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory, prefect_home: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("out")
    return run_cli("seeds/", "--out", out, home=prefect_home), out


def test_seed_run_succeeds_cleanly(seed_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = seed_run
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "telemetry" not in output.lower() and "analytics" not in output.lower()
    assert "Finished in state Completed()" in output
    assert "articles kept" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [".article_texts.parquet", "article_texts.parquet", "articles.parquet", "pairs.parquet", "report.md", "state", "stories.parquet"]


def test_seed_run_accounts_for_every_record(seed_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = seed_run
    articles = write.read_articles(out)
    jsonl_ids = [json.loads(line)["id"] for line in (SEEDS / "aeb-sample.jsonl").read_text().splitlines()]
    csv_ids = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False)["id"].to_list()
    expected = len(jsonl_ids) + len(csv_ids) + 2  # the seed article and one HTML page
    assert articles.height == expected == articles["article_id"].n_unique()
    assert set(jsonl_ids + csv_ids) <= set(articles["article_id"])


def test_seed_run_shows_real_duplicates_and_stories(seed_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = seed_run
    articles = write.read_articles(out)
    stories = pl.read_parquet(out / "stories.parquet")
    pairs = pl.read_parquet(out / "pairs.parquet")
    assert articles.filter(pl.col("status") == "duplicate").height > 100
    assert set(pairs["relation"]) == {"duplicate", "same_story"}
    assert stories.filter(pl.col("n_articles") >= 20).height >= 6
    seed = articles.filter(pl.col("source_file").str.ends_with("000_dc6af5a75e8b8c84.txt")).row(0, named=True)
    assert seed["headline"] == "Iraq-Syria Airstrikes: President Biden Orders 2nd Attack On Iran Backed Militias"
    assert seed["text"].startswith("For the second time")
    assert [r["rule"] for r in seed["removed_lines"]] == ["repeated_headline", "repeated_headline"]
    report = (out / "report.md").read_text()
    assert "## Largest stories" in report and "repeated_headline" in report


def test_a_run_in_chunks_shows_each_chunk_and_writes_the_same_outputs(
    tmp_path: Path, prefect_home: Path, seed_run: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    """The seeds in chunks of 100 records: every stage of every chunk a task, a log line per
    chunk, and the outputs of the unchunked run."""
    _, unchunked = seed_run
    result = run_cli("seeds/", "--out", tmp_path, "--set", "chunk_records=100", home=prefect_home)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "chunk 2: records 101 to 200" in output and "chunk 3, the last" in output
    # the stages of three chunks as tasks, the story steps (six) in the last chunk alone
    assert output.count("Finished in state Completed()") > 3 * 16 - 2 * 6
    assert output.count("Task run 'cluster stories") == 1 and output.count("Task run 'clean with copies") >= 3
    for name, chunked, whole in zip(("articles", "stories", "pairs"), write.read_outputs(tmp_path), write.read_outputs(unchunked), strict=True):
        assert chunked.equals(whole), name


def test_nothing_readable_exits_non_zero_with_a_clear_message(tmp_path: Path, prefect_home: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.json").write_text("{nope")
    (tmp_path / "in" / "empty.txt").write_text("\n")
    result = run_cli(tmp_path / "in", "--out", tmp_path / "out", home=prefect_home)
    assert result.returncode == 1
    assert "nothing could be read" in result.stdout
    assert write.read_articles(tmp_path / "out")["status"].to_list() == ["rejected", "rejected"]


def test_bad_arguments_are_refused_before_any_work(tmp_path: Path, prefect_home: Path) -> None:
    missing = run_cli(tmp_path / "nope", home=prefect_home)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    bad_setting = run_cli("seeds/", "--set", "num_perms=3", home=prefect_home)
    assert bad_setting.returncode == 2 and "expected FIELD=VALUE" in bad_setting.stderr
    bad_model = run_cli("seeds/", "--set", "story_model=bert", home=prefect_home)
    message = " ".join(bad_model.stderr.replace("│", " ").split())  # rich wraps the box at 80 columns
    assert bad_model.returncode == 2 and "story_model='bert': expected one of keywords, minilm" in message


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")
def test_dev_data_runs_and_every_input_id_is_there_once(tmp_path: Path, prefect_home: Path) -> None:
    aeb = SHARED_DATA / "aeb" / "articles.jsonl"
    headlines = SHARED_DATA / "news-aggregator" / "headlines.csv"
    result = run_cli(aeb, headlines, "--out", tmp_path, home=prefect_home)
    assert result.returncode == 0, result.stdout + result.stderr
    articles = write.read_articles(tmp_path)
    ids = [json.loads(line)["id"] for line in aeb.read_text().splitlines()]
    ids += pl.read_csv(headlines, infer_schema=False)["id"].to_list()
    assert sorted(articles["article_id"].to_list()) == sorted(ids)


def test_eval_scores_the_seed_run(seed_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    _, out = seed_run
    ids = [json.loads(line)["id"] for line in (SEEDS / "aeb-sample.jsonl").read_text().splitlines()]
    labels = tmp_path / "labels.csv"
    pl.DataFrame({"id": ids, "cluster": [i[:12] for i in ids]}).write_csv(labels)
    result = subprocess.run(
        [sys.executable, "-m", "dedupe", "eval", str(out), "--labels", str(labels), "--level", "duplicates"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "bcubed f1" in result.stdout and "ari" in result.stdout
    ari = float(next(line for line in result.stdout.splitlines() if "│ ari" in line).split("│")[2])
    assert ari > 0.8
    bad = subprocess.run(
        [sys.executable, "-m", "dedupe", "eval", str(out), "--labels", str(labels), "--level", "topics"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "expected one of" in bad.stderr


def test_first_runs_at_once_share_a_fresh_prefect_home_and_later_runs_start_from_its_template(tmp_path: Path) -> None:
    """Each run's embedded server has its own database (flows.server.EmbeddedServer), and the
    template both first runs write is renamed into place whole, so two first runs on one new
    PREFECT_HOME do not race on migrating a database file. The template is the migrated empty
    database; a later run copies it; each run removes its own copy and stops its server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    template = tmp_path / "home" / "dedupe" / f"embedded-server-prefect-{version('prefect')}.db"

    def start_run(out: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "dedupe", "run", "seeds/", "--out", str(tmp_path / out)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # the later run starts once both first runs have ended
    for start in (lambda: [start_run("first-0"), start_run("first-1")], lambda: [start_run("later")]):
        runs = start()
        outputs = [run.communicate(timeout=600)[0] for run in runs]
        assert [run.returncode for run in runs] == [0] * len(runs), outputs
        assert all("Traceback" not in output and "Finished in state Completed()" in output for output in outputs)
        assert template.is_file()
        assert not list((tmp_path / "tmp").glob("dedupe-prefect-api-*"))
    with closing(sqlite3.connect(template)) as database:  # migrated, and empty of runs
        assert database.execute("select count(*) from alembic_version").fetchone() == (1,)
        assert database.execute("select count(*) from flow_run").fetchone() == (0,)


def schema_of(database: Path) -> dict[str, object]:
    """What a SQLite schema means, independent of the order Prefect's migrations happen to write
    constraints and indexes in (it varies from one migration to the next): each table's columns
    in order, its foreign keys and its indexes (automatic ones by what they cover), and the rows
    of alembic_version."""
    with closing(sqlite3.connect(database)) as db:
        def index(name: str, unique: int, origin: str, partial: int) -> tuple[object, ...]:
            columns = tuple(row[2] for row in db.execute(f"pragma index_info('{name}')"))
            return ("automatic" if name.startswith("sqlite_autoindex") else name, unique, origin, partial, columns)

        tables = [name for (name,) in db.execute("select name from sqlite_master where type = 'table' order by name")]
        return {
            table: {
                "columns": db.execute(f"pragma table_xinfo('{table}')").fetchall(),
                "foreign keys": sorted(row[2:] for row in db.execute(f"pragma foreign_key_list('{table}')")),
                "indexes": sorted(index(*row[1:5]) for row in db.execute(f"pragma index_list('{table}')")),
            }
            for table in tables
        } | {
            "other": sorted(db.execute("select type, name, sql from sqlite_master where type not in ('table', 'index')")),
            "alembic_version": db.execute("select * from alembic_version").fetchall(),
        }


SHIPPED_SCHEMA = server.SCHEMAS / f"prefect-{version('prefect')}.sql"


@pytest.mark.skipif(
    not SHIPPED_SCHEMA.is_file(),
    reason=f"no shipped schema for prefect {version('prefect')}: first runs migrate (`python -m flows.server write-schema`)",
)
def test_the_shipped_schema_is_what_prefects_migrations_make(tmp_path: Path) -> None:
    server.migrate(tmp_path / "migrated.db")
    server._template_from_schema(tmp_path / "shipped.db", SHIPPED_SCHEMA)
    assert schema_of(tmp_path / "shipped.db") == schema_of(tmp_path / "migrated.db")


@pytest.mark.skipif(not SHIPPED_SCHEMA.is_file(), reason="no shipped schema for this prefect version")
def test_a_first_run_starts_from_the_shipped_schema_without_migrating(tmp_path: Path) -> None:
    embedded = server.EmbeddedServer(tmp_path / "home")
    try:
        assert not embedded.fresh  # a copy of the template made from the shipped schema, not a new database
        api = embedded.wait()
        assert server.request(api, "GET", "/health") is True
        assert server.request(api, "POST", "/flow_runs/filter", {}) == []
    finally:
        embedded.stop()


def test_without_a_shipped_schema_the_first_run_migrates_and_keeps_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "SCHEMAS", tmp_path / "no-schemas")
    embedded = server.EmbeddedServer(tmp_path / "home")
    try:
        assert embedded.fresh
        embedded.wait()
        assert embedded.template.is_file()
        assert schema_of(embedded.template) == schema_of(embedded.database)
    finally:
        embedded.stop()


def test_a_runs_embedded_api_is_sent_no_heartbeats_nor_logs_and_stops_with_nothing_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server `run` starts (its defaults, `flows.server.embedded_app`) answers, and flows run
    on it send it no heartbeats and no log lines: it stops with the run, unread, and the flow's
    end waited for the heartbeat thread's 1 s sleep."""
    from prefect.settings import get_current_settings

    for name in ("PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (cli.PREFECT_DEFAULTS | cli.EMBEDDED_SERVER_DEFAULTS | {"PREFECT_HOME": str(tmp_path)}).items():
        monkeypatch.setenv(name, value)
    embedded = cli._start_embedded_server()
    assert embedded is not None and embedded.process is not None
    process = embedded.process
    try:
        with cli._embedded_api(embedded):
            settings = get_current_settings()
            assert settings.api.url == embedded.api
            assert settings.flows.heartbeat_frequency is None
            assert not settings.logging.to_api.enabled
            assert server.request(embedded.api, "GET", "/health") is True
        assert get_current_settings().flows.heartbeat_frequency is not None  # only for the embedded API
    finally:
        embedded.stop()
    assert process.poll() is not None and not embedded.folder.exists()


def test_the_embedded_api_app_is_built_with_the_collector_off_and_leaves_it_on() -> None:
    """`embedded_app` pauses the cyclic garbage collector while Prefect's API is imported and
    built, and leaves it on (with what it built frozen) for serving."""
    assert gc.isenabled()
    try:
        app = server.embedded_app()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert any(getattr(route, "path", "") == "/api" for route in app.routes)


def test_the_cli_imports_with_the_collector_off_and_restores_it() -> None:
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with server.collector_off():
        assert not gc.isenabled()
        imported = [[] for _ in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(imported)  # left out of later collections
    with pytest.raises(KeyError), server.collector_off():
        raise KeyError("an import failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with server.collector_off():
            pass
        assert not gc.isenabled()  # off before, so off after
    finally:
        gc.enable()


def test_an_embedded_server_that_exits_with_status_3_at_every_start_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn exits with status 3 for a port taken between our pick and its bind (then `wait`
    starts it again on another port) and for an app that failed to start: after `STARTS` starts
    `wait` must say so, not return the address of a server that never answered."""
    spawned: list[int] = []

    def exits_with_3(self: server.EmbeddedServer) -> None:
        spawned.append(1)
        self.api = "http://127.0.0.1:9/api"
        self.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    monkeypatch.setattr(server.EmbeddedServer, "_spawn", exits_with_3)
    embedded = server.EmbeddedServer(tmp_path / "home")
    try:
        with pytest.raises(RuntimeError, match=r"status 3 at each of 3 starts"):
            embedded.wait(timeout=30)
        assert len(spawned) == server.STARTS
    finally:
        embedded.stop()
