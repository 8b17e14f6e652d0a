"""The per-record stages on shards, duplicate candidates by band, optionally on a Redis index.

`sharded_call` wraps a pipeline `Call` so that `pipeline.update` runs unchanged while its
per-record stages are cut into shards and handed to `Plan.map` (a Prefect task runner's workers
in flows/scale.py; the plain `map` below runs them in this process):

- read: the input files in `shards` runs of files (ids are made unique once, over all of them),
  in `pipeline.update`; a run on a state (`pipeline.run_on_state`) reads its chunks in its own
  process (`read.Chunks`), a chunk at a time;
- normalize and first cleaning, one step (`FirstPass`): the records in `shards` slices; a run in
  chunks on this machine's workers starts the next chunk's before it matches the current one;
- duplicate candidates: shingles and band keys per slice of records (the workers that make them
  also add them to the Redis index), then buckets per band partition (band % `partitions`):
  an LSH bucket lies within one band, so each partition pairs its buckets alone and the union
  is every candidate pair, filtered here by the records' sketches, which the slices made with
  their band keys (`minhash.plausible`, as in one process);
- verifying: the candidate pairs in `shards` slices; each makes the shingles of its own pairs'
  articles, so shingles and signatures never meet in one process;
- cleaning with copies (`clean_by_groups`): the records cut by duplicate group, so that a group's
  copies meet in one piece; headline decoration is learnt here, once (in `pipeline.update` from
  what changed, `pipeline._clean_changed`, which finds the plan with `plan_of`).

`pipeline.run` adds duplicate candidates of its own: band keys per slice, the buckets paired here.

`on_cores` gives both pipelines these shards on worker processes of this machine
(`config.workers`), but for duplicate candidates and verifying, which run in this process on
minhash's and verify's compiled loops (both cores; `Plan.match_in_shards`). Pieces go to the
workers with only the columns the stage reads filled, and come back with only the columns it
writes (the first pass: whole rows): the raw text, a third of a row, goes to the first pass
alone and never comes back.

Every such stage gives exactly what the one-process stage gives (tests/test_scale.py): the
stages are per record, per bucket, per group or per pair, and the pieces are put back in their
order.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import ctypes
import ctypes.util
import fcntl
import itertools
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import polars as pl

from dedupe import clean, lifetime, minhash, normalize, read, state, verify
from dedupe.config import Config
from dedupe.index import RedisIndex
from dedupe.schema import CANDIDATES, CLEANED, LEVEL_BAND_KEYS, PAIRS, READ, check, empty

if TYPE_CHECKING:  # pipeline runs its stages through `on_cores`
    from dedupe.pipeline import Call

Map = Callable[[str, Callable[..., Any], Iterable[tuple[Any, ...]]], list[Any]]
"""map(name, function, argument tuples) -> the results, in order. The arguments may be made
lazily (a generator): a map that holds few pieces at once holds few arguments at once."""

LEVELS = tuple(minhash.DUPLICATE_THRESHOLDS)  # "text", "headline": the order `state.new_candidates` gives


def in_process(name: str, function: Callable[..., Any], arguments: Iterable[tuple[Any, ...]]) -> list[Any]:
    """A `Map` that runs each piece here, one after another."""
    return list(builtins.map(lambda args: function(*args), arguments))


@dataclass(frozen=True)
class Plan:
    map: Map = in_process
    shards: int = 1
    """Pieces the per-record stages are cut into."""
    partitions: int = 1
    """Band partitions duplicate candidates are found in."""
    index: str | None = None
    """redis://HOST:PORT/DB of a shared index, else the state's own band keys."""
    min_rows: int = 1
    """Rows a slice holds at least: fewer rows make fewer slices (one: the stage runs whole)."""
    start_rows: int = 0
    """Rows a stage needs for the workers at all: below, it runs whole (one piece, in this
    process), so that a small input never pays their start (`AUTO_START_ROWS`)."""
    max_rows: int | None = None
    """Rows a slice holds at most: more rows make more slices than `shards`, so that what a
    worker holds at once does not grow with the run."""
    read_in_shards: bool = True
    """Whether files are read on the workers (where they can read them themselves); the whole
    records would come back pickled from processes of this machine, for less than reading costs."""
    match_in_shards: bool = True
    """Whether duplicate candidates are found by the shards (band keys by slices of records,
    buckets by band partitions). On processes of this machine they are found here: minhash's
    compiled loops use both cores already, while the pieces sent the records out and their
    shingles back pickled. A 30k chunk on two workers: minhash duplicates 38.9 / 13.3 s in
    pieces, 14.7 / 7.1 s here, peak 2.14 / 2.03 GiB against 1.78 / 1.69 (`speed.py pipeline
    --workers 2 --chunk 30000`, alternating, load 8-10, benchmarks/README.md)."""
    verify_in_shards: bool = True
    """Whether candidate pairs given with their shingle sets are verified on the workers. Each
    piece needs the texts and sets of the articles of its pairs, which are most articles: on
    processes of this machine, verifying 100k documents' pairs in pieces cost 5x the one process
    (`speed.py scaling`), so there they are verified here (pairs without sets still go out)."""

    def slices(self, frame: pl.DataFrame) -> list[pl.DataFrame]:
        return row_slices(frame, self.pieces(frame.height), self.min_rows)

    def pieces(self, rows: int) -> int:
        """How many pieces `rows` rows are cut into: a multiple of `shards`, so that each worker
        gets as many (30,000 rows in 3 pieces of 10,000 on 2 workers left one idle for a third of
        each stage), unless `min_rows` allows fewer; one below `start_rows`."""
        if rows < self.start_rows:
            return 1
        wanted = max(self.shards, -(-rows // self.max_rows)) if self.max_rows else self.shards
        return max(1, min(-(-wanted // self.shards) * self.shards, rows // max(1, self.min_rows)))


MAX_ROWS_ON_CORES = 10_000
"""Records a piece for a worker process holds at most: a worker's memory follows its piece,
not the run; the pieces queue up, a few at a time in flight (`ProcessMap`)."""
MIN_ROWS_ON_CORES = 1_000
"""Records a worker process of `on_cores` is given at least: a piece costs its handing over
both ways and the first one the workers' start (importing polars, numpy, ftfy and the rest, once
per process), which a few hundred records (the seeds, a small incremental batch) do not repay:
they run in process."""
AUTO_START_ROWS = 25_000
"""Rows a stage needs before `Config.workers` = 0 (one per core, the default) starts the workers:
on two cores they cost 0.80-0.85x the one process at 10k records (their start lands in
normalize) and paid 1.27x at 30k and 1.19x at 100k (`Config.workers`); 25k lies between."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def on_cores(call: Call, config: Config) -> Call:
    """`call` with the per-record stages on `config.workers` processes of this machine (0: one
    per available core, for stages of `AUTO_START_ROWS` records or more); `call` itself when
    that is one, or when it is sharded already (a flow on a Dask or Ray task runner)."""
    workers = config.workers or available_cores()
    if workers <= 1 or plan_of(call) is not IN_PROCESS:
        return call
    plan = Plan(
        map=ProcessMap(workers), shards=workers, min_rows=MIN_ROWS_ON_CORES, max_rows=MAX_ROWS_ON_CORES,
        start_rows=AUTO_START_ROWS if config.workers == 0 else 0,
        read_in_shards=False, match_in_shards=False, verify_in_shards=False,
    )
    return sharded_call(call, plan)


@dataclass(frozen=True)
class ProcessMap:
    """A `Map` on `workers` processes of this machine, started on first use and kept for the
    life of this process (later runs reuse them), and they end with it, also when it is killed
    (`lifetime.watch_parent`). They are spawned, not forked: a fork copies polars' thread pool in
    whatever state it is, which can hang the child. Frames go to them and come back as files in
    shared memory (`FrameFile`; a map run ahead's come back in a folder on disk it names)."""

    workers: int

    def __call__(
        self, name: str, function: Callable[..., Any], arguments: Iterable[tuple[Any, ...]], results_in: Path | None = None
    ) -> list[Any]:
        """The results of the pieces, in their order. With `results_in`, a map run ahead
        (`FirstPass`): the frames its pieces give are left there as `FrameFile`s, unread
        (`_taken` reads them), so a folder on disk holds them until asked, not this process's
        memory nor shared memory; any other map is one this process waits on (`_WAITED`)."""
        with contextlib.nullcontext() if results_in else _WAITED.running():  # before any argument is made
            pending = iter(arguments)
            first = list(itertools.islice(pending, 2))
            if len(first) == 2:
                return self._map(function, itertools.chain(first, pending), results_in)
        return in_process(name, function, first)  # the workers stay free for work ahead

    def _map(self, function: Callable[..., Any], pending: Iterator[tuple[Any, ...]], results_in: Path | None) -> list[Any]:
        pool = _pool(self.workers)
        # two pieces per worker handed over at once (a map run ahead: one, so that fewer of its
        # pieces wait before those of a map this process waits on); the rest wait, their arguments not yet made
        in_flight = self.workers if results_in else 2 * self.workers
        running: collections.deque[Future[Any]] = collections.deque()
        results = []
        frames = FramesFolder.made()
        folder = frames.path if frames else None
        try:
            for args in itertools.islice(pending, in_flight):
                running.append(pool.submit(_apply, function, _handed(args, folder), results_in or folder))
            while running:
                result = running.popleft().result()
                results.append(result if results_in else _taken(result))
                for args in itertools.islice(pending, 1):
                    running.append(pool.submit(_apply, function, _handed(args, folder), results_in or folder))
        except BrokenProcessPool:  # a worker died (killed, out of memory): the next run starts new ones
            with _POOLS_LOCK:  # unless another thread's map has started them already
                if _POOLS.get(self.workers) is pool:
                    del _POOLS[self.workers]
            raise
        finally:
            for future in running:  # a piece failed: those not started never start, the others end first
                future.cancel()
            wait(running)
            if frames is not None:  # what the pieces in flight left
                frames.remove()
        return results


class _Waited:
    """The maps on the workers that this process waits on, counted: a first pass ahead hands out
    no piece while one runs (`FirstPass`). The workers take pieces first in, first out: a first
    pass handing out pieces beside clean with copies took half the workers from it, which ran
    +56 s longer over a 1M run (benchmarks/README.md, *Workers below this process*)."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def none_running(self, timeout: float) -> bool:
        """Whether no such map runs, waiting up to `timeout` seconds for it."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout)


_WAITED = _Waited()


SHARED_MEMORY = Path("/dev/shm")
"""Where frames pass between this process and its workers (`FrameFile`), where there is one (Linux)."""


@dataclass(frozen=True)
class FrameFile:
    """A frame handed to or by a worker as an uncompressed Arrow IPC file in shared memory: written
    once and read once (`pl.read_ipc` copies it), then removed. Pickled, a frame was serialized,
    copied through a pipe and built again on the other side: over a 1M run in chunks of 100k on
    two workers, normalize took 78.0 s with 21.9 s of this process's CPU, against 63.5 s and
    7.9 s, and clean 110.5 s and 20.5 s against 95.9 s and 6.9 s (`benchmarks/speed.py profile`;
    benchmarks/README.md, session 20). The files of the pieces in flight are held in memory
    outside any process until read: a few pieces (`ProcessMap` hands out two per worker). A map
    run ahead (`FirstPass`) has its pieces' results written to a folder on disk instead. A
    frame that cannot be written there (shared memory full: containers often give 64 MiB; a
    column of Python objects) is pickled as before."""

    path: str


@dataclass(frozen=True)
class FramesFolder:
    """One map's folder of `FrameFile`s in shared memory, locked (`flock`) while the map runs:
    a folder whose lock is free was left by a killed run (`remove_orphans`). A lock, not the
    owner's process id: the id of a process of another container sharing the memory is not
    ours to see, and ids are reused."""

    path: Path
    lock: int  # the open, locked `LOCK` file

    PREFIX = "dedupe-frames-"
    LOCK = ".lock"

    @classmethod
    def made(cls) -> FramesFolder | None:
        """A new locked folder; None where there is no shared memory to write to (frames are pickled)."""
        if not (SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK)):
            return None
        path = Path(tempfile.mkdtemp(prefix=cls.PREFIX, dir=SHARED_MEMORY))
        lock = os.open(path / f"{cls.LOCK}.new", os.O_CREAT | os.O_WRONLY, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.rename(path / f"{cls.LOCK}.new", path / cls.LOCK)  # seen by `remove_orphans` only once locked
        return cls(path, lock)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self.lock)

    UNLOCKED_SECONDS = 60.0
    """Age past which a folder without its lock file is an orphan: a map locks its new folder at
    once, and a run killed while removing one (`remove`) leaves it without."""

    @classmethod
    def remove_orphans(cls) -> None:
        """Remove this user's folders whose lock is free, or that have none and are older than
        `UNLOCKED_SECONDS`: shared memory is held until removed."""
        for path in SHARED_MEMORY.glob(f"{cls.PREFIX}*") if SHARED_MEMORY.is_dir() else []:
            try:
                if path.stat().st_uid != os.getuid():
                    continue
                if not (path / cls.LOCK).exists() and time.time() - path.stat().st_mtime > cls.UNLOCKED_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                lock = os.open(path / cls.LOCK, os.O_WRONLY)
            except OSError:  # gone, or not yet locked by its map
                continue
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its map runs
                os.close(lock)
                continue
            shutil.rmtree(path, ignore_errors=True)
            os.close(lock)


def _handed(value: Any, folder: Path | None) -> Any:
    """`value` with its frames (itself, or the items of a tuple) written to `folder` as `FrameFile`s;
    a frame that cannot be written there is left to be pickled."""
    if folder is None:
        return value
    if isinstance(value, pl.DataFrame):
        path = folder / f"{uuid.uuid4().hex}.arrow"
        try:
            value.write_ipc(path, compression="uncompressed")
        except (OSError, pl.exceptions.PolarsError):
            path.unlink(missing_ok=True)
            return value
        return FrameFile(str(path))
    if type(value) is tuple:  # from a list: a tuple grown from a generator is resized in place, which
        # fails (SystemError) if another thread holds it meanwhile (`gc.get_objects`, as `speed.py profile` calls)
        return tuple([_handed(item, folder) for item in value])
    return value


def _taken(value: Any) -> Any:
    """`value` with its `FrameFile`s read, and removed."""
    if isinstance(value, FrameFile):
        frame = pl.read_ipc(value.path)
        os.unlink(value.path)
        return frame
    if type(value) is tuple:
        return tuple([_taken(item) for item in value])  # from a list, as in `_handed`
    return value


_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()  # a first pass ahead (`FirstPass`) maps from a thread of its own


WORKER_NICENESS = 10
"""How much lower than this process the workers run (`os.nice`; the kernel then gives them about a
tenth of a core this process wants). In a run in chunks they normalize and clean the next chunk
while this process matches the current one on its own thread pools: at the same priority they
took their share of both cores, and the matching stages grew by about what the first pass no
longer waited. Lowered, they take the time this process leaves idle (over a 1M run, minhash
duplicates 102.8 s against 157.0 s: benchmarks/README.md, *Workers below this process*); where
it waits for them, as in every other map, nothing else of this run wants the cores and they run
as fast as before. The price, not measured: on a machine busy with other work at the normal
priority, every map on the workers (clean with copies, the first chunk's first pass) gets less
of it than before."""


def _start_worker(parent: int) -> None:
    try:
        os.nice(WORKER_NICENESS)
    except (AttributeError, OSError):  # no priorities here (Windows), or not allowed to change them
        pass
    lifetime.watch_parent(parent)


def _pool(workers: int) -> ProcessPoolExecutor:
    with _POOLS_LOCK:
        if workers not in _POOLS:
            FramesFolder.remove_orphans()
            _POOLS[workers] = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(os.getpid(),)
            )
        return _POOLS[workers]


def _apply(function: Callable[..., Any], args: tuple[Any, ...], results_in: Path | None) -> Any:
    """`function(*args)` in a worker, the frames of its arguments read (`FrameFile`) and those it
    gives written to `results_in`."""
    try:
        return _handed(function(*_taken(args)), results_in)
    finally:
        release_free_memory()  # the workers live on between pieces and runs


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None


def release_free_memory() -> None:
    """Let go of what a stage kept for itself and give the memory that Python freed back to the
    system (glibc's `malloc_trim`). The per-line caches of normalize and clean are emptied: they
    pay within a stage, and kept they grew with the records a run had seen, up to their caps
    (with the reader's pieces, 0.26 GiB of a chunked run's resident memory at 20,000 records:
    benchmarks/README.md, *Memory kept between chunks*). The text stages make and drop millions
    of Python strings of a few KB; glibc keeps the freed heap for later Python objects, but polars
    allocates through its own allocator, so without the trim the next stage's frames come on top
    of it (`speed.py profile`). The trim is a no-op off Linux."""
    normalize.clear_line_cache()
    clean.clear_line_caches()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def sharded_call(call: Call, plan: Plan) -> Call:
    """`call`, with the stages `Plan` knows run its way (the others as they were)."""

    def verifier(sets: minhash.ShingleSets) -> state.Verifier:
        """Where pairs given with `sets` are verified: on the shards, which make the sets
        themselves when none are given, or here (`Plan.verify_in_shards`)."""
        if plan.verify_in_shards or not len(sets):
            return lambda rows, pairs, given, config: verify_duplicates(plan, rows, pairs, config, given)
        return verify.verify_duplicates

    table: dict[Callable[..., Any], Callable[..., Any]] = {
        verify.verify_duplicates: lambda involved, candidates, sets, config: verifier(sets)(involved, candidates, sets, config),
        state.verify_candidates: lambda matched, history, config: state.verify_candidates(
            matched, history, config, verifier(matched.shingles)
        ),
        clean.clean_with_copies: lambda cleaned, groups, config: clean_with_copies(plan, cleaned, groups, config),
    }
    if plan.read_in_shards:
        table[read.read_found] = lambda found, config: read_found(plan, found, config)
    if plan.match_in_shards:
        table[state.new_candidates] = lambda records, history, config: new_candidates(plan, records, history, config)
        table[minhash.duplicate_candidates] = lambda cleaned, config: duplicate_candidates(plan, cleaned, config)
    if plan.index is not None:
        table[state.load] = lambda folder, config: load_indexed(plan.index, folder, config)  # type: ignore[arg-type]
        table[state.commit] = lambda folder, history, added, config, *chained: commit_indexed(
            plan.index, folder, history, added, config, *chained  # type: ignore[arg-type]
        )

    def run(name: str, function: Callable[..., Any], *args: object) -> Any:
        return call(name, table.get(function, function), *args)

    run.plan = plan  # type: ignore[attr-defined]
    return run


IN_PROCESS = Plan()
"""The plan of a call that is not sharded: every stage whole, in this process."""


def plan_of(call: Call) -> Plan:
    """The plan `call` runs its stages on (`sharded_call`), for a stage that cuts its own work
    into pieces (`pipeline._clean_changed`)."""
    return getattr(call, "plan", IN_PROCESS)


def read_found(plan: Plan, found: list[tuple[Path, str]], config: Config) -> pl.DataFrame:
    """`read.read_found`, the files read in `plan.shards` runs of about equal bytes."""
    runs = [(piece, config) for piece in file_runs(found, plan.shards) if piece]
    parts = plan.map("read shard", read.read_files, runs) if runs else [empty(READ)]
    return check(read.unique_ids(pl.concat(parts, rechunk=False)), READ, "read")


def file_runs(found: list[tuple[Path, str]], shards: int) -> list[list[tuple[Path, str]]]:
    """`found` cut into at most `shards` consecutive runs of about equal size on disk (kept in
    order, so that the records come back in the order one read gives them)."""
    sizes = np.array([path.stat().st_size if path.exists() else 0 for path, _ in found], dtype=np.float64)
    ends = np.cumsum(sizes)
    total = ends[-1] if len(ends) else 0.0
    cuts = np.searchsorted(ends, total * np.arange(1, shards) / shards, side="left") + 1
    bounds = [0, *sorted(set(np.minimum(cuts, len(found)).tolist())), len(found)]
    return [found[start:stop] for start, stop in zip(bounds, bounds[1:])]


def row_slices(frame: pl.DataFrame, shards: int, min_rows: int = 1) -> list[pl.DataFrame]:
    """`frame` in at most `shards` consecutive slices of about equal rows, each of at least
    `min_rows` rows (or one slice)."""
    shards = max(1, min(shards, frame.height // max(1, min_rows)))
    size = max(1, -(-frame.height // shards))
    return [frame.slice(start, size) for start in range(0, frame.height, size)] or [frame]


CLEAN_READS = ("article_id", "source_file", "line", "title", "text", "url", "source", "status", "reason")
"""What `clean.clean` reads of a row: the rest of a piece of `clean_by_groups` goes empty."""
CLEAN_WRITES = clean.WRITTEN


def first_pass_slice(records: pl.DataFrame) -> pl.DataFrame:
    """`normalize.normalize`, then `clean.clean`'s first pass, of a slice of READ records: CLEANED
    rows, the raw text null (no later step reads it), in one piece each way."""
    return clean.clean(normalize.normalize(records).with_columns(text_raw=pl.lit(None, pl.String)))


class FirstPassClosed(Exception):
    """A first pass ahead was closed before all its pieces were handed out."""


class FirstPass:
    """`first_pass_slice` of READ records in `plan`'s slices, taken later (`result`).

    With a folder `near`, on this machine's worker processes in two pieces or more
    (`in_background`), it starts at once: a thread of this process hands the pieces out while
    this process goes on. A run in chunks starts the next chunk's first pass once it has the
    current chunk's, before it matches the current chunk (`pipeline._update_in_chunks`): the
    workers sat idle while this process found, verified and wrote the current chunk's duplicates
    on 1-1.6 of the two cores. The workers leave the pieces' rows in a temporary folder in `near`
    (a state's generations folder, where a load removes what a killed run left), not held in
    memory through the current chunk's peak. Otherwise the pieces are mapped when the result is
    asked for."""

    def __init__(self, plan: Plan, records: pl.DataFrame, near: Path | None = None) -> None:
        check(records, READ, "normalize and clean input")
        self._plan, self._pieces = plan, plan.slices(records)
        self._running: Future[list[Any]] | None = None
        if near is not None and self.in_background(plan, records.height):
            near.mkdir(parents=True, exist_ok=True)  # resolved: the workers keep the directory they started in
            self._folder = tempfile.TemporaryDirectory(prefix=".first-pass-", dir=near.resolve(), ignore_cleanup_errors=True)
            self._closed = threading.Event()
            background = ThreadPoolExecutor(1, thread_name_prefix="dedupe-first-pass")
            self._running = background.submit(
                cast(ProcessMap, plan.map), "normalize and clean shard", first_pass_slice, self._handed_out(), Path(self._folder.name)
            )
            background.shutdown(wait=False)  # its thread ends with the map

    @staticmethod
    def in_background(plan: Plan, rows: int) -> bool:
        """Whether `plan`'s first pass of `rows` records can run beside this process: on this
        machine's workers, in two pieces or more (one piece gains nothing there)."""
        return isinstance(plan.map, ProcessMap) and plan.pieces(rows) > 1

    def _handed_out(self) -> Iterator[tuple[pl.DataFrame]]:
        """The pieces as the map takes them, each once no map this process waits on runs
        (`_WAITED`); none once closed. The pieces are slices of one frame, whose memory goes
        when the last is handed out."""
        while self._pieces:
            while not (self._closed.is_set() or _WAITED.none_running(timeout=0.1)):
                pass
            if self._closed.is_set():
                raise FirstPassClosed
            yield (self._pieces.pop(0),)

    def result(self) -> pl.DataFrame:
        """CLEANED of the records, in their order."""
        try:
            if self._running is None:
                pieces, self._pieces = self._pieces, []
                parts = self._plan.map("normalize and clean shard", first_pass_slice, [(piece,) for piece in pieces])
            else:
                parts = [_taken(part) for part in self._running.result()]
        finally:
            self.close()
        return check(pl.concat(parts, rechunk=False), CLEANED, "normalize and clean output")

    def close(self) -> None:
        """Hand out no more pieces, wait for those out (a failed map cancels the others and waits
        for its running ones) and remove their files."""
        if self._running is not None:
            self._closed.set()
            wait([self._running])
            self._folder.cleanup()
        self._pieces = []


def _unread(reads: tuple[str, ...], schema: dict[str, pl.DataType]) -> list[pl.Expr]:
    """The columns of `schema` a stage does not read, as nulls: not handed to its workers."""
    return [pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in reads]


def duplicate_candidates(plan: Plan, cleaned: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, minhash.ShingleSets]:
    """`minhash.duplicate_candidates`: band keys and shingles per slice of records, the buckets
    paired here (the pairs do not depend on the order of the keys: buckets are grouped, pairs
    sorted). The shingles come back for the verifying shards: pickling them costs a fraction of
    making them again."""
    check(cleaned, CLEANED, "duplicate candidates input")
    slices = plan.slices(matching_columns(cleaned))
    keys, sets, sketched = zip(*plan.map("band keys", minhash.duplicate_keys, [(piece, config) for piece in slices]))
    level_keys = pl.concat(keys)
    pairs = [
        minhash.bucket_pairs(level_keys.filter(pl.col("level") == level).drop("level"), level, config) for level in LEVELS
    ]
    # the slices are consecutive: their sketches, one after the other, are row for row with `cleaned`
    plausible = minhash.plausible(pl.concat(pairs), cleaned["article_id"], np.concatenate(sketched), config)
    return plausible, minhash.ShingleSets.concat(sets)


def clean_with_copies(plan: Plan, cleaned: pl.DataFrame, groups: pl.DataFrame, config: Config) -> pl.DataFrame:
    """`clean.clean_with_copies` on `plan`'s pieces (`clean_by_groups`); headline decoration is
    learnt here, once, from all titles."""
    check(cleaned, CLEANED, "clean with copies input")
    decorations = clean.headline_decorations(cleaned, groups.select("article_id", "duplicate_group"))
    return clean_by_groups(plan, cleaned, groups, config, decorations)


def clean_by_groups(
    plan: Plan,
    frame: pl.DataFrame,
    groups: pl.DataFrame,
    config: Config,
    decorations: clean.Decorations,
    texts_of_copies: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """`clean.clean_by_groups` with the records of `frame` cut by duplicate group (a group's copies
    in one piece: what they share is learnt from all of them; a record in none of `groups` is a
    group of its own), the pieces cleaned on `plan`'s workers with the `decorations` learnt once.
    `pipeline.run` (through `clean_with_copies`) and `pipeline.update` (`_clean_changed`, the
    changed groups) both clean their copies here. Only the records cleaned against their copies
    (`clean.with_copies`) go out with their texts; the others have their headline made again
    alone, and their body goes as an empty stand-in (whether there is one decides whether the
    record is rejected) and stays here: 4,664 of 30,000 speed-corpus records have copies, and
    the pieces shrank from 238.6 to 32.8 MB pickled (`speed.py copies`).

    `texts_of_copies` gives the records cleaned against their copies the texts that `frame`
    leaves out (`pipeline._clean_changed`: the history's), a piece at a time as the pieces go
    out to this machine's workers (`ProcessMap` takes them as it goes; a Dask or Ray map makes
    them all first): read for every piece at once, they and what was made of them were ~1 GiB
    of a 1M run's peak (benchmarks/README.md, *A chunk's texts written ahead*)."""
    membership = groups.select("article_id", "duplicate_group")
    copied = frame["article_id"].is_in(clean.with_copies(frame, membership, config)["article_id"].implode())
    read = texts_of_copies or (lambda rows: rows)
    pieces = plan.pieces(frame.height)
    if pieces == 1:
        if texts_of_copies is not None:  # a small input, or no workers: read at once
            frame = rows_made_again(frame, copied, read)
        return clean.clean_by_groups(frame, membership, config, decorations)
    piece_of = (
        frame.select("article_id")
        .join(membership, on="article_id", how="left", maintain_order="left")
        .select(pl.coalesce("duplicate_group", "article_id").hash(seed=0) % pieces)
        .to_series()
    )
    # the first pass's body is made again from the text where the copies are read, and stands in
    # as an empty string elsewhere; literals, not nulls over a column: those are handed over with its text
    with_texts = _unread(CLEAN_READS + ("removed_lines",), CLEANED)
    headline_only = [
        *_unread(tuple(name for name in CLEAN_READS if name != "text") + ("body",), CLEANED),
        pl.when(pl.col("body").is_not_null()).then(pl.lit("")).alias("body"),
    ]
    rows = []

    def arguments() -> Iterator[tuple[Any, ...]]:  # made as the map takes them: a piece is a copy of its rows
        for number in range(pieces):
            in_piece = piece_of == number
            rows.extend([(in_piece & copied).arg_true(), (in_piece & ~copied).arg_true()])
            piece = pl.concat([read(frame.filter(in_piece & copied)).with_columns(with_texts),
                               frame.filter(in_piece & ~copied).with_columns(headline_only)])
            members = membership.join(piece.select("article_id"), on="article_id", how="semi")
            yield piece, members, decorations, config

    written = pl.concat(plan.map("clean with copies shard", clean_group_slice, arguments()))
    cleaned = frame.with_columns(written[pl.concat(rows).arg_sort()])
    kept = [pl.when(copied).then(name).otherwise(frame[name]).alias(name) for name in ("body", "removed_lines")]
    return check(cleaned.with_columns(kept), CLEANED, "clean by groups output")


def rows_made_again(frame: pl.DataFrame, rows: pl.Series, making: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """`frame` with the rows in the mask `rows` replaced by `making` of them (which gives the same
    rows in their order, with `frame`'s columns), the others as they are, in `frame`'s order: the
    texts read for some rows only (`clean_by_groups`, `pipeline._with_texts_to_clean`)."""
    in_order = pl.concat([rows.arg_true(), (~rows).arg_true()]).arg_sort()
    return pl.concat([making(frame.filter(rows)), frame.filter(~rows)])[in_order]


def clean_group_slice(cleaned: pl.DataFrame, groups: pl.DataFrame, decorations: clean.Decorations, config: Config) -> pl.DataFrame:
    """`clean.clean_with_copies` of the records of whole duplicate groups: the columns it writes."""
    return clean.clean_by_groups(cleaned, groups, config, decorations).select(CLEAN_WRITES)


def new_candidates(plan: Plan, records: pl.DataFrame, history: state.History, config: Config) -> state.Candidates:
    """`state.new_candidates` by shards and band partitions. The shingles are left to the
    verifying shards (`verify_duplicates`): the result holds none."""
    new = records.select(list(CLEANED))
    slices = plan.slices(matching_columns(new))
    keys, sketched = zip(*plan.map("band keys", shard_band_keys, [(piece, config, plan.index) for piece in slices]))
    keys, sketched = pl.concat(keys), np.concatenate(sketched)  # consecutive slices: row for row with `new`
    new_ids = new["article_id"]
    known = history.records["article_id"] if plan.index else None
    pieces = []
    for partition in range(plan.partitions):
        in_partition = pl.col("band") % plan.partitions == partition
        old = None if plan.index else history.band_keys.filter(in_partition)
        pieces.append((keys.filter(in_partition), old, new_ids, known, config, plan.index))
    level_order = pl.col("level").replace_strict({level: rank for rank, level in enumerate(LEVELS)}, return_dtype=pl.UInt8)
    found = pl.concat(plan.map("band candidates", band_candidates, pieces)).unique().sort(level_order, "article_id_a", "article_id_b")
    candidates, partners = state.plausible_candidates(
        check(found, CANDIDATES, "candidates"), new["article_id"], sketched, history, config
    )
    keys = keys.sort(level_order, "article_id", "band")  # as `state.new_candidates` gives them
    sets = minhash.ShingleSets.concat([])
    involved = state.in_pairs(new, candidates)
    return state.Candidates(candidates, check(keys, LEVEL_BAND_KEYS, "new band keys"), sets, involved, sketched, partners)


def shard_band_keys(records: pl.DataFrame, config: Config, index: str | None) -> tuple[pl.DataFrame, np.ndarray]:
    """LEVEL_BAND_KEYS of a slice of new records, added to the index when there is one, and
    their sketches (`minhash.duplicate_keys`)."""
    frame, _, sketched = minhash.duplicate_keys(records, config)
    if index is not None:
        RedisIndex(index, config).add(frame)
    return frame, sketched


def band_candidates(
    new_keys: pl.DataFrame,
    old_keys: pl.DataFrame | None,
    new_ids: pl.Series,
    known_ids: pl.Series | None,
    config: Config,
    index: str | None,
) -> pl.DataFrame:
    """CANDIDATES with a new article among the buckets of one band partition: the new keys with
    the old members of the buckets they fall in, from the state's keys (`old_keys`) or the index.
    From the index, articles of this run (already added by the shards) and of no committed
    run (a run that failed before its commit) are left out: the old members are then exactly
    those of the state's keys."""
    pairs = []
    new = new_ids.implode()
    shared = RedisIndex(index, config) if index is not None else None
    for level in LEVELS:
        level_keys = new_keys.filter(pl.col("level") == level).drop("level")
        touched = level_keys.select("band", "key").unique()
        if shared is not None:
            assert known_ids is not None
            members = shared.members(level, touched)
            old = members.filter(~pl.col("article_id").is_in(new) & pl.col("article_id").is_in(known_ids.implode()))
        else:
            assert old_keys is not None
            old = old_keys.filter(pl.col("level") == level).drop("level").join(touched, on=["band", "key"], how="semi")
        pairs.append(minhash.new_bucket_pairs(old, level_keys, level, config))
    return pl.concat(pairs)


def verify_duplicates(
    plan: Plan, involved: pl.DataFrame, candidates: pl.DataFrame, config: Config, sets: minhash.ShingleSets
) -> pl.DataFrame:
    """`verify.verify_duplicates` over slices of the candidate pairs, each with the shingle sets
    of its articles: from `sets`, or made by the shard where `sets` is empty (an update's
    candidates come without them)."""
    rows = matching_columns(involved)

    def pieces() -> Iterator[tuple[Any, ...]]:  # made as the map takes them: the sets of a piece are a copy
        for piece in row_slices(candidates, plan.shards, plan.min_rows):  # few pieces: each needs most articles
            piece_rows = _rows_of_pairs(rows, piece)
            yield piece_rows, piece, config, sets.of(piece_rows["article_id"].to_list()) if len(sets) else None

    confirmed = pl.concat(plan.map("verify shard", verify_slice, pieces()))
    return check(confirmed.sort("article_id_a", "article_id_b"), PAIRS, "duplicate pairs")


MATCHED_COLUMNS = ("article_id", "status", "headline", "body")
"""What shingles and verifying read of a CLEANED row (`minhash.duplicate_shingles`,
`verify.verify_duplicates`)."""


def matching_columns(records: pl.DataFrame) -> pl.DataFrame:
    """CLEANED rows with only `MATCHED_COLUMNS` filled: the raw and normalized texts, two
    thirds of a row's bytes, are not sent to shards that never read them."""
    unread = [pl.lit(None, dtype).alias(name) for name, dtype in CLEANED.items() if name not in MATCHED_COLUMNS]
    return records.with_columns(unread)


def _rows_of_pairs(records: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """The rows of `records` in `pairs`: a shard is sent only the articles it verifies."""
    ids = pl.concat([pairs["article_id_a"], pairs["article_id_b"]]).unique().implode()
    return records.filter(pl.col("article_id").is_in(ids))


def verify_slice(
    rows: pl.DataFrame, candidates: pl.DataFrame, config: Config, sets: minhash.ShingleSets | None = None
) -> pl.DataFrame:
    """Verified pairs of one slice of candidates, from the shingle sets of its articles (`rows`),
    made here when not given."""
    if sets is None:
        by_level = minhash.duplicate_shingles(rows, config)
        sets = minhash.ShingleSets.concat([by_level["text"], by_level["headline"]])
    return verify.verify_duplicates(rows, candidates, sets, config)


# --- the state's keys in the index --------------------------------------------------------


def load_indexed(index: str, folder: Path, config: Config) -> state.History:
    """`state.load`, then the state's band keys added to the index if it lacks any of them (an
    index made after the state, or a Redis that lost its data): runs then match against all."""
    history = state.load(folder, config)
    shared = RedisIndex(index, config)
    if shared.generation(_state_name(folder)) < history.generation:
        shared.add(history.band_keys)
        shared.mark(_state_name(folder), history.generation)
    return history


def commit_indexed(
    index: str, folder: Path, history: state.History, added: state.Update, config: Config, *chained: object
) -> Path:
    """`state.commit` (`chained`: its arguments for a run's later chunks), recording in the index
    that the new generation's keys are there (the shards added them before the commit; a run
    killed in between adds them again, harmlessly)."""
    shared = RedisIndex(index, config)
    final = state.commit(folder, history, added, config, *chained)  # type: ignore[arg-type]
    shared.mark(_state_name(folder), int(final.name))
    return final


def _state_name(folder: Path) -> str:
    return str(folder.resolve())
