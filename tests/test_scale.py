"""Beyond one process, with the real parts: a Dask scheduler with two workers and a Redis server,
started here on 127.0.0.1 and stopped by process id. Sharded runs, on the workers or with the
shared index, give exactly the one-process result; concurrent writers to one index lose nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
import redis
from distributed import Client

from dedupe import index, pipeline, read, shards, state, write
from dedupe.config import Config
from dedupe.schema import LEVEL_BAND_KEYS
from flows import server
from tests.conftest import ROOT, SEEDS, prefect_env
from tests.test_server import finished, wait_for
from tests.test_state import assert_same_as_one_run

SHARED_DATA = ROOT.parent / "shared" / "data"
CONFIG = Config()
needs_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with index.temporary_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def empty_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushall()
    return redis_url


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dask scheduler` and two `dask worker` processes of one thread each, each in its own process
    group (stopped with what it spawned by `server.stop`): the scheduler's address."""
    folder = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{server.free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    logs = [open(folder / name, "wb") for name in ("scheduler.log", "worker-1.log", "worker-2.log")]  # noqa: SIM115
    started: list[subprocess.Popen[bytes]] = []
    try:
        scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                     "--port", address.rsplit(":", 1)[1], "--no-dashboard"]
        started.append(subprocess.Popen(scheduler, cwd=folder, env=env, stdout=logs[0], stderr=subprocess.STDOUT,
                                        start_new_session=True))
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                  "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(folder)]
        for log in logs[1:]:
            started.append(subprocess.Popen(worker, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(started):  # workers first, then the scheduler
            server.stop(process)
        for log in logs:
            log.close()


def write_batches(folder: Path) -> tuple[list[Path], list[Path]]:
    """A real slice in two batches of two files each: 400 aeb pages (with their copies) and the
    news-aggregator headlines, cut in halves."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = (SHARED_DATA / "aeb" / "articles.jsonl").read_text().splitlines()[:400]
    headlines = pl.read_csv(SHARED_DATA / "news-aggregator" / "headlines.csv", infer_schema=False)
    first = [folder / "aeb-1.jsonl", folder / "news-1.csv"]
    second = [folder / "aeb-2.jsonl", folder / "news-2.csv"]
    first[0].write_text("\n".join(pages[:200]) + "\n")
    second[0].write_text("\n".join(pages[200:]) + "\n")
    headlines.head(1400).write_csv(first[1])
    headlines.slice(1400).write_csv(second[1])
    return first, second


def run_locally(paths: list[Path], work: Path, call: pipeline.Call = pipeline.direct, config: Config = CONFIG) -> pipeline.Result:
    """A run on the state in `work`, with the articles it published (the result holds no texts)."""
    result, _ = pipeline.run_on_state(paths, work / "out", work / "state", config, call=call)
    return replace(result, articles=write.read_articles(work / "out"))


def run_cli(*args: str | Path, home: Path, api: str | None = None) -> subprocess.CompletedProcess[str]:
    env = prefect_env(home, api)
    return subprocess.run(
        [sys.executable, "-m", "dedupe", "run", *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def as_result(out: Path) -> pipeline.Result:
    """A run's published outputs, for `assert_same_as_one_run` (which reads no summary)."""
    stories, pairs = (pl.read_parquet(out / f"{name}.parquet") for name in ("stories", "pairs"))
    return pipeline.Result(write.read_articles(out), stories, pairs, None)  # type: ignore[arg-type]


def assert_identical(sharded: pipeline.Result, local: pipeline.Result) -> None:
    assert_same_as_one_run(sharded, local)
    assert sharded.articles.sort("article_id").equals(local.articles.sort("article_id"))
    assert sharded.stories.equals(local.stories)  # story ids too: the same runs give the same ids
    assert sharded.pairs.equals(local.pairs)


@needs_data
def test_dask_workers_then_the_redis_index_give_the_one_process_result(
    tmp_path: Path, dask_cluster: str, empty_redis: str, prefect_api: str
) -> None:
    """Batch 1 on the two Dask workers (band keys in the state), batch 2 on the workers with the
    Redis index, which first takes in the state's keys: both as the one-process runs. (Against a
    running Prefect server: the embedded one would add ~10 s to each run.)"""
    first, second = write_batches(tmp_path / "data")
    local_1 = run_locally(first, tmp_path / "local")
    local_2 = run_locally(first + second, tmp_path / "local")
    home, out = tmp_path / "prefect", tmp_path / "dask-out"

    one = run_cli(*first, "--out", out, "--task-runner", f"dask:{dask_cluster}", home=home, api=prefect_api)
    assert one.returncode == 0, one.stdout + one.stderr
    assert "2 shards, 2 band partitions, index in the state" in one.stdout + one.stderr
    assert_identical(as_result(out), local_1)

    two = run_cli(*first, *second, "--out", out, "--task-runner", f"dask:{dask_cluster}", "--index", empty_redis, home=home, api=prefect_api)
    assert two.returncode == 0, two.stdout + two.stderr
    assert f"index {empty_redis}" in two.stdout + two.stderr
    assert_identical(as_result(out), local_2)
    indexed = redis.Redis.from_url(empty_redis)
    assert indexed.dbsize() > 0


@needs_data
def test_worker_processes_of_this_machine_give_the_one_process_result(tmp_path: Path) -> None:
    """`pipeline.run` and then `pipeline.update` (a new state, then a second batch against it)
    with the per-record stages on two spawned worker processes, cut into pieces of 100-400
    records so that every stage is cut, into more pieces than workers (normalize, both cleanings,
    band keys, verifying), and as `shards.on_cores` plans them (candidates found and pairs
    verified in this process): exactly the one-process result. Cleaning with copies is cut by
    duplicate group in both pipelines (`shards.clean_by_groups`): the pieces are recorded as the
    workers get them, and each group's records are in one of them."""
    first, second = write_batches(tmp_path / "data")
    cleaned_pieces: list[pl.Series] = []
    workers = shards.ProcessMap(2)

    def recording(name: str, function: Callable[..., Any], arguments: Iterable[tuple[Any, ...]]) -> list[Any]:
        given = list(arguments)
        if name == "clean with copies shard":
            cleaned_pieces.extend(args[0]["article_id"] for args in given)
        return workers(name, function, given)

    def assert_whole_groups_in_pieces(sharded: pipeline.Result) -> None:
        sent = pl.concat([pl.DataFrame({"article_id": ids, "piece": n}) for n, ids in enumerate(cleaned_pieces)])
        sent = sent.join(sharded.articles.select("article_id", "duplicate_group"), on="article_id")
        assert sent.height > 1_000 and sent["piece"].n_unique() >= 3  # the stage was cut: the check bites
        split = sent.drop_nulls("duplicate_group").group_by("duplicate_group").agg(pl.col("piece").n_unique())
        assert split.filter(pl.col("piece") > 1).is_empty()
        cleaned_pieces.clear()

    pieces = shards.Plan(map=recording, shards=2, min_rows=100, max_rows=400)
    on_two = shards.sharded_call(pipeline.direct, pieces)
    as_on_cores = shards.sharded_call(pipeline.direct, replace(pieces, read_in_shards=False, match_in_shards=False, verify_in_shards=False))
    one_process = CONFIG.with_overrides(workers=1)
    alone = pipeline.run(first + second, one_process)
    for call in (on_two, as_on_cores):
        sharded = pipeline.run(first + second, CONFIG, call)
        assert_identical(sharded, alone)
        assert_whole_groups_in_pieces(sharded)
    for batch in (first, first + second):  # the second update matches new records against the first's
        local = run_locally(batch, tmp_path / "local", config=one_process)
        for folder, call in (("two", on_two), ("cores", as_on_cores)):
            sharded = run_locally(batch, tmp_path / folder, call=call)
            assert_identical(sharded, local)
            assert_whole_groups_in_pieces(sharded)


@needs_data
def test_the_next_chunk_is_normalized_and_cleaned_on_the_workers_while_this_one_is_matched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_passes: list[shards.FirstPass]
) -> None:
    """A run in chunks on two worker processes reads the next chunk and starts its first pass
    (`shards.FirstPass`, its pieces left in files) once it has the current chunk's, before it
    matches the current one; the first chunk's runs alone. The outputs are exactly those of the
    same chunks in one process, which reads a chunk only once the last is committed, and every
    first pass is closed, its files gone (the passes are kept alive here: a folder left to its
    finalizer would show). A chunk that fails stops the next chunk's first pass half-way (more
    pieces than are in flight) and leaves none of its files."""
    monkeypatch.setattr(shards, "MIN_ROWS_ON_CORES", 100)  # chunks of 700 records in pieces
    first, second = write_batches(tmp_path / "data")
    calls: list[str] = []

    def call(name: str, function: Callable[..., Any], *args: object) -> Any:
        calls.append(name)
        return function(*args)

    def nth(name: str, number: int) -> int:
        return [index for index, called in enumerate(calls) if called == name][number - 1]

    def all_closed() -> bool:
        return all(
            not one._pieces and (one._running is None or (one._running.done() and not Path(one._folder.name).exists()))
            for one in first_passes
        )

    chunked = CONFIG.with_overrides(chunk_records=700)
    local = run_locally(first + second, tmp_path / "local", call=call, config=chunked.with_overrides(workers=1))
    assert len(first_passes) == 5 and not any(one._running for one in first_passes)  # 3,221 records
    assert nth("commit state", 1) < nth("read", 2)
    first_passes.clear(), calls.clear()
    on_workers = run_locally(first + second, tmp_path / "workers", call=call, config=chunked.with_overrides(workers=2))
    assert [one._running is not None for one in first_passes] == [False, True, True, True, True]
    assert nth("normalize and clean", 1) < nth("read", 2) < nth("minhash duplicates", 1)
    assert_identical(on_workers, local)
    assert all_closed() and not list((tmp_path / "workers" / "state" / "generations").glob(".first-pass-*"))

    monkeypatch.setattr(shards, "MIN_ROWS_ON_CORES", 25)
    monkeypatch.setattr(shards, "MAX_ROWS_ON_CORES", 50)  # 14 pieces a chunk, 2 of a first pass ahead in flight
    first_passes.clear()

    held, left = contextlib.ExitStack(), []

    def failing(name: str, function: Callable[..., Any], *args: object) -> Any:
        if name == "minhash duplicates":
            assert list((tmp_path / "failing" / "state" / "generations").glob(".first-pass-*"))  # the next chunk's
            deadline = time.monotonic() + 60
            while len(first_passes[-1]._pieces) == 14 and time.monotonic() < deadline:  # until some pieces are out
                time.sleep(0.005)
            held.enter_context(shards._WAITED.running())  # and no more: the close finds pieces left
            left.append(len(first_passes[-1]._pieces))
            raise RuntimeError("a chunk that fails")
        return function(*args)

    with held, pytest.raises(RuntimeError, match="a chunk that fails"):
        run_locally(first + second, tmp_path / "failing", call=failing, config=chunked.with_overrides(workers=2))
    assert len(first_passes) == 2 and first_passes[1]._running is not None and isinstance(first_passes[1]._running.exception(), shards.FirstPassClosed)
    assert 0 < left[0] < 14
    assert all_closed() and not list((tmp_path / "failing" / "state" / "generations").glob(".first-pass-*"))


def test_a_run_killed_while_the_next_chunk_is_normalized_ahead_leaves_the_state_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL a real run in chunks on two workers while the next chunk's first pass has its
    folder in the generations folder (`shards.FirstPass`): the state is the one before the run,
    a load takes it, also if the killed run's workers still write there, and the next run
    completes it with nothing of the killed one left, its outputs those of one run."""
    folder, out = tmp_path / "state", tmp_path / "out"
    script = (
        "from pathlib import Path; from dedupe import pipeline, shards; from dedupe.config import Config; "
        "shards.MIN_ROWS_ON_CORES = 20; "
        f"pipeline.run_on_state([Path({str(SEEDS)!r})], Path({str(out)!r}), Path({str(folder)!r}), Config(chunk_records=100, workers=2))"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not list(folder.glob("generations/.first-pass-*")):
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed, not ended: the folder was seen
    assert state.load(folder, CONFIG).generation == 0
    monkeypatch.setattr(shards, "MIN_ROWS_ON_CORES", 20)
    config = CONFIG.with_overrides(chunk_records=100, workers=2)
    result, _ = pipeline.run_on_state([SEEDS], out, folder, config)
    assert [path.name for path in (folder / "generations").iterdir()] == [(folder / "current").resolve().name]
    published = replace(result, articles=write.read_articles(out))  # with their texts
    assert_same_as_one_run(published, pipeline.run([SEEDS], CONFIG))
    shards.FramesFolder.remove_orphans()  # the shared memory of the killed run's maps, as its next pool would


def test_a_first_pass_ahead_hands_out_no_piece_while_a_map_this_process_waits_on_runs(tmp_path: Path) -> None:
    """The workers take pieces first in, first out: a first pass ahead waits while a map this
    process waits on runs (`shards._WAITED`, as every `ProcessMap` call without `results_in`),
    then gives what it gives in one process."""
    records = read.read([SEEDS], CONFIG)
    plan = shards.Plan(map=shards.ProcessMap(2), shards=2, min_rows=50)
    shards.ProcessMap(2)("start the workers", abs, [(-1,), (-2,)])
    with shards._WAITED.running():
        ahead = shards.FirstPass(plan, records, tmp_path)
        time.sleep(1.0)
        assert len(ahead._pieces) == 2 and not list(Path(ahead._folder.name).iterdir())
    assert_frame_equal(ahead.result(), shards.first_pass_slice(records))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no process priorities here")
def test_worker_processes_run_below_this_process_so_work_ahead_takes_only_idle_cores() -> None:
    """A first pass ahead (`shards.FirstPass`) shares the cores with this process's matching:
    the workers run `WORKER_NICENESS` lower (capped at the lowest priority, 19)."""
    niceness = os.nice(0)
    seen = shards.ProcessMap(2)("probe", os.nice, [(0,), (0,), (0,), (0,)])
    assert seen == [min(19, niceness + shards.WORKER_NICENESS)] * 4
    assert os.nice(0) == niceness


def test_worker_processes_only_where_they_can_pay() -> None:
    """One worker, or a call sharded already (a Dask flow), runs as given; by default a stage
    under `AUTO_START_ROWS` records runs whole here (the workers never start for it); slices
    never fall below `min_rows` records, and come in a multiple of the workers where they can."""
    assert shards.on_cores(pipeline.direct, CONFIG.with_overrides(workers=1)) is pipeline.direct
    default = shards.plan_of(shards.on_cores(pipeline.direct, Config()))
    assert default.shards == shards.available_cores() or default is shards.IN_PROCESS  # one core: as given
    if default is not shards.IN_PROCESS:
        assert [default.pieces(rows) for rows in (2_500, 24_999)] == [1, 1] and default.pieces(30_000) >= 2
        asked = shards.plan_of(shards.on_cores(pipeline.direct, CONFIG.with_overrides(workers=2)))
        assert asked.pieces(2_500) == 2  # asked for: from `min_rows` on
    dask_like = shards.sharded_call(pipeline.direct, shards.Plan(shards=2))
    assert shards.on_cores(dask_like, CONFIG.with_overrides(workers=2)) is dask_like
    assert shards.on_cores(pipeline.direct, CONFIG.with_overrides(workers=2)) is not pipeline.direct
    frame = pl.DataFrame({"x": range(2_500)})
    assert [piece.height for piece in shards.row_slices(frame, 2, 1_000)] == [1_250, 1_250]
    assert [piece.height for piece in shards.row_slices(frame, 4, 1_000)] == [1_250, 1_250]
    assert [piece.height for piece in shards.row_slices(frame.head(1_500), 2, 1_000)] == [1_500]
    plan = shards.Plan(shards=2, min_rows=1_000, max_rows=10_000)
    assert [plan.pieces(rows) for rows in (500, 1_500, 2_500, 30_000, 100_000, 1_000_000)] == [1, 1, 2, 4, 10, 100]
    with pytest.raises(ValueError, match="workers"):
        CONFIG.with_overrides(workers=-1)


def rows_and_lengths(frame: pl.DataFrame, fail: bool) -> tuple[pl.DataFrame, np.ndarray]:
    """A worker's piece: the frame's rows with a column added, and an array beside it."""
    if fail:
        raise ValueError("a piece that fails")
    return frame.with_columns(length=pl.col("text").str.len_chars()), frame["number"].to_numpy() * 2


def test_frames_pass_to_the_workers_as_files_in_shared_memory_and_none_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames go to the worker processes and come back as Arrow files in shared memory (here a
    folder of the test's own, as /dev/shm is the machine's), alone or in a tuple beside other
    values, with nested types and nulls as they were; the files are removed once read, and a map
    whose piece fails leaves none. A frame that cannot be written there is pickled. A killed
    run's folder (its lock free, or its lock file gone for a minute) is removed when workers
    start next; a running map's stays, and so does a new one not yet locked."""
    monkeypatch.setattr(shards, "SHARED_MEMORY", tmp_path)
    frame = pl.DataFrame({
        "number": range(3_000), "text": [None if n % 7 == 0 else f"piece {n} ’é" for n in range(3_000)],
        "removed": [[{"line": n, "rule": "link"}] if n % 3 else [] for n in range(3_000)],
    })
    pieces = shards.row_slices(frame, 3)
    running = shards.FramesFolder.made()
    assert running is not None
    try:
        handed = shards._handed((pieces[0], False), running.path)
        assert isinstance(handed[0], shards.FrameFile) and handed[1] is False
        returned = shards._apply(rows_and_lengths, handed, running.path)  # as a worker runs a piece
        assert isinstance(returned[0], shards.FrameFile) and not Path(handed[0].path).exists()
        rows, doubled = shards._taken(returned)
        assert rows.equals(rows_and_lengths(pieces[0], False)[0], null_equal=True) and not list(running.path.glob("*.arrow"))
        objects = pl.DataFrame({"thing": pl.Series([object()], dtype=pl.Object)})
        assert shards._handed(objects, running.path) is objects and not list(running.path.glob("*.arrow"))
        results = shards.ProcessMap(2)("rows", rows_and_lengths, [(piece, False) for piece in pieces])
        assert [len(result) for result in results] == [2, 2, 2]
        assert pl.concat([rows for rows, _ in results]).equals(rows_and_lengths(frame, False)[0], null_equal=True)
        assert np.array_equal(np.concatenate([doubled for _, doubled in results]), frame["number"].to_numpy() * 2)
        with pytest.raises(ValueError, match="fails"):
            shards.ProcessMap(2)("rows", rows_and_lengths, [(piece, n == 1) for n, piece in enumerate(pieces)])
        assert list(tmp_path.iterdir()) == [running.path]
        orphan = shards.FramesFolder.made()
        assert orphan is not None
        (orphan.path / "piece.arrow").write_bytes(b"held")
        os.close(orphan.lock)  # as a killed process's lock is let go
        unlocked = [Path(tempfile.mkdtemp(prefix=shards.FramesFolder.PREFIX, dir=tmp_path)) for _ in range(2)]
        os.utime(unlocked[0], (time.time() - 120, time.time() - 120))  # a killed run's, its lock removed
        shards.FramesFolder.remove_orphans()
        assert not orphan.path.exists() and running.path.exists()
        assert not unlocked[0].exists() and unlocked[1].exists()  # the other: a map about to lock it
    finally:
        running.remove()


@needs_data
def test_index_in_one_process_gives_the_one_process_result_batch_after_batch(tmp_path: Path, empty_redis: str) -> None:
    """The index alone, in shards and band partitions of this process: matching the second batch
    against the first through Redis finds what the state's own keys find, though the index also
    holds the keys of articles no run committed (as a run killed before its commit leaves them),
    in the very buckets the real ones are in."""
    first, second = write_batches(tmp_path / "data")
    shared = index.RedisIndex(empty_redis, CONFIG)
    indexed = shards.sharded_call(pipeline.direct, shards.Plan(shards=3, partitions=4, index=empty_redis))
    assert_identical(run_locally(first, tmp_path / "indexed", indexed), run_locally(first, tmp_path / "local"))
    stored = pl.read_parquet(tmp_path / "indexed" / "state" / "current" / "band_keys" / "*.parquet")
    shared.add(stored.with_columns(article_id=pl.col("article_id") + "~uncommitted"))
    both = first + second
    assert_identical(run_locally(both, tmp_path / "indexed", indexed), run_locally(both, tmp_path / "local"))

    stored = pl.read_parquet(tmp_path / "indexed" / "state" / "current" / "band_keys" / "*.parquet")
    for level in ("text", "headline"):
        keys = stored.filter(pl.col("level") == level).drop("level")
        committed = shared.members(level, keys).filter(~pl.col("article_id").str.ends_with("~uncommitted"))
        assert committed.sort("article_id", "band").equals(keys.sort("article_id", "band"))  # nothing lost, nothing twice


def crowded_keys(articles: int, first: int) -> pl.DataFrame:
    """LEVEL_BAND_KEYS of `articles` articles from number `first` on, four bands each, in 300
    buckets per band: every bucket is written by both writers."""
    numbers = np.arange(first, first + articles)
    return pl.DataFrame(
        {
            "level": "text",
            "article_id": np.repeat([f"article-{n}" for n in numbers], 4),
            "band": np.tile(np.arange(4, dtype=np.uint16), articles),
            "key": (np.repeat(numbers, 4) * 7919 % 300).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15),
        },
        schema=LEVEL_BAND_KEYS,
    )


ADD = """
import sys, time
from dedupe.index import RedisIndex
from dedupe.config import Config
from tests.test_scale import crowded_keys
keys = crowded_keys(int(sys.argv[2]), int(sys.argv[3]))
shared = RedisIndex(sys.argv[1], Config())
while time.time() < float(sys.argv[4]):  # both start together
    time.sleep(0.01)
for start in range(0, keys.height, 5_000):
    shared.add(keys.slice(start, 5_000))
"""


def test_two_writers_at_once_lose_nothing_and_add_nothing_twice(empty_redis: str) -> None:
    """Two processes add overlapping articles to the same buckets at the same moment: every
    bucket ends with each of its articles exactly once (a read-then-write append would lose
    one writer's ids whenever both read a bucket before either wrote it)."""
    start_at = str(time.time() + 3)
    writers = [
        subprocess.Popen([sys.executable, "-c", ADD, empty_redis, "12000", str(first), start_at], cwd=ROOT)
        for first in (0, 6000)  # articles 6000-11999 are added by both
    ]
    assert [writer.wait(timeout=300) for writer in writers] == [0, 0]
    expected = crowded_keys(18000, 0)
    shared = index.RedisIndex(empty_redis, CONFIG)
    found = shared.members("text", expected.select("band", "key").unique())
    assert found.height == expected.height  # no id twice in a bucket
    assert found.sort("article_id", "band").equals(expected.drop("level").sort("article_id", "band"))

    shared.add(expected)  # everything again: nothing changes
    assert shared.members("text", expected.select("band", "key").unique()).height == expected.height


def test_an_index_made_with_other_bits_is_refused(empty_redis: str) -> None:
    index.RedisIndex(empty_redis + "?bits=8", CONFIG)
    assert index.RedisIndex(empty_redis, CONFIG).bits == 8  # the index keeps what it was made with
    with pytest.raises(index.RedisIndexError, match="bits=8"):
        index.RedisIndex(empty_redis + "?bits=12", CONFIG)


def test_malformed_scale_options_are_refused_before_any_server(tmp_path: Path) -> None:
    bad_runner = run_cli(ROOT / "seeds", "--out", tmp_path, "--task-runner", "spark", home=tmp_path)
    assert bad_runner.returncode == 2 and "expected dask, dask:ADDRESS" in bad_runner.stderr
    bad_index = run_cli(ROOT / "seeds", "--out", tmp_path, "--index", "http://x", home=tmp_path)
    assert bad_index.returncode == 2 and "expected redis://HOST:PORT/DB" in bad_index.stderr
    closed = f"redis://127.0.0.1:{server.free_port()}/0"  # a port nothing listens on
    unreachable = run_cli(ROOT / "seeds", "--out", tmp_path, "--index", closed, home=tmp_path)
    assert unreachable.returncode == 2 and "cannot reach Redis at" in unreachable.stderr
    assert not (tmp_path / "state").exists()


def test_two_scheduled_flows_on_one_index_at_once_lose_nothing(prefect_api: str, tmp_path: Path, empty_redis: str) -> None:
    """Two deployments (`serve --index`), each on its own input and state, run at once against
    one Redis index: both complete, and the index holds every bucket entry of both states."""
    api, batches = prefect_api, [tmp_path / "pages", tmp_path / "headlines"]
    for batch, source in zip(batches, ("aeb-sample.jsonl", "headlines-sample.csv")):
        batch.mkdir()
        (batch / source).write_bytes((SEEDS / source).read_bytes())
    servings = [
        subprocess.Popen(
            [sys.executable, "-m", "dedupe", "serve", str(batch), "--out", str(tmp_path / f"out-{number}"),
             "--every", "1d", "--name", f"indexed-{number}", "--index", empty_redis],
            cwd=ROOT, env=prefect_env(tmp_path / f"home-{number}", api), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        for number, batch in enumerate(batches)
    ]
    try:
        deployments = [
            wait_for(name, lambda name=name: server.request(api, "POST", "/deployments/filter", {"deployments": {"name": {"any_": [name]}}}))[0]  # type: ignore[index]
            for name in ("indexed-0", "indexed-1")
        ]
        runs = [server.request(api, "POST", f"/deployments/{deployment['id']}/create_flow_run", {}) for deployment in deployments]
        assert [wait_for("the run's end", lambda run=run: finished(api, run["id"])) for run in runs] == ["COMPLETED"] * 2
    finally:
        for serving in servings:
            server.stop(serving)  # type: ignore[arg-type]
    shared = index.RedisIndex(empty_redis, CONFIG)
    for number in range(2):
        keys = pl.read_parquet(tmp_path / f"out-{number}" / "state" / "current" / "band_keys" / "*.parquet")
        for level in ("text", "headline"):
            stored = keys.filter(pl.col("level") == level).drop("level")
            found = shared.members(level, stored).join(stored.select("article_id"), on="article_id", how="semi")
            assert found.sort("article_id", "band").equals(stored.sort("article_id", "band"))
