"""Incremental runs: what a fixed batch costs against histories of growing size, stage by stage,
next to one run over everything in the same process.

    python benchmarks/incremental.py [--history 1000,5000,20000,50000] [--batch 100] [--duplicates 0.3]
        [--order shuffled|arrival] [--event-span 5000] [--set FIELD=VALUE ...]
    python benchmarks/incremental.py --profile 50000 [--top 40] [--sort cumulative|tottime]

The records come from `speed.build_corpus` (real aeb words and news-aggregator titles, 30% of
the documents copies of another, see benchmarks/speed.py), in a fixed order (`ordered_corpus`):
shuffled, every event spread over the whole corpus (the worst case), or in arrival order, each
event's coverage within `--event-span` records. The batch is always the same last B records, the
history the H records before it. `--set` gives every run (and the profile) other settings. The history is built with one
update and committed; then the batch is timed against it (loading the state, each stage of
`pipeline.update` (best of two), committing, publishing the outputs), and so is one run
(`pipeline.run`) over the same H + B records. The peak resident memory of loading, updating,
committing and publishing (Linux VmHWM, reset before loading) is printed beside the memory the
process held before (corpus and imports), and so is the peak of the same run in a process of its
own, on a copy of the state (the figure to compare). The slope of each stage (least squares over the history sizes, ms per 1,000
history records) says what still follows the history rather than the batch. Timings are
wall-clock on a shared machine: noisy in absolute terms. `--profile H` instead builds the history
of H records and prints the top cumulative entries of a cProfile of the batch's update against it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # benchmarks/ is a folder of scripts, not a package

from dedupe import cluster, pipeline, state, write
from dedupe.config import Config

SETTINGS: list[str] = []
CONFIG = Config()
"""The settings every run here uses (`--set`, as `python -m dedupe run --set`)."""
TOTALS = (
    "load state", "commit state", "publish outputs", "incremental", "full run", "old copies", "rss before MiB", "peak rss MiB",
    "child start MiB", "child peak MiB", "computed", "carried", "single computed", "replayed s", "compared s", "single s",
    "published", "counts",
)
"""Rows of a measurement that are not stages of `pipeline.update`."""


def ordered_corpus(folder: Path, docs: int, duplicates: float, event_span: int | None) -> pl.DataFrame:
    """`docs` corpus records in a fixed order. Shuffled (`event_span` None): every event and every
    original's copies spread over the whole order, the worst case for a batch, which then touches
    stories as old as the history. In arrival order: each event's coverage (its originals and
    their copies) arrives within `event_span` records from its start, the starts spread over the
    corpus, as a scraper meets news; in the labeled news-aggregator data every story's headlines
    are consecutive in time order (`labeled_arrival`)."""
    corpus = speed.build_corpus(folder, docs, duplicates, seed=docs)
    frame = pl.concat([pl.read_parquet(part) for part in sorted(corpus.glob("part-*.parquet"))])
    rank = frame["id"].map_elements(lambda i: xxhash.xxh3_64_intdigest(i.encode()), return_dtype=pl.UInt64)
    if event_span is None:
        return frame.with_columns(rank=rank).sort("rank").drop("rank")
    events = pl.read_parquet(corpus / "stories.parquet.truth").select("id", event="cluster")
    start = pl.col("event").hash(seed=docs) % docs  # the record at which the event starts
    within = rank % max(event_span, 1)
    timed = frame.with_columns(rank=rank).join(events, on="id", how="left", maintain_order="left")
    return timed.with_columns(at=start + within).sort("at", "rank").drop("at", "rank", "event")


def labeled_arrival(data: Path = speed.DATA) -> str:
    """How the labeled news-aggregator stories arrive: sorted by published_at, the stories whose
    headlines are consecutive records, and the seconds between a story's first and last."""
    timed = speed.labeled_headlines(data).with_columns(at=pl.col("published_at").str.to_datetime(time_zone="UTC")).sort("at", "id").with_row_index("row")
    spans = timed.group_by("cluster").agg(
        consecutive=pl.col("row").max() - pl.col("row").min() + 1 == pl.len(),
        seconds=(pl.col("at").max() - pl.col("at").min()).dt.total_milliseconds() / 1000,
    )
    return (f"news-aggregator in time order: {spans['consecutive'].sum()} of {spans.height} stories' headlines consecutive,"
            f" each fetched within {spans['seconds'].median():.0f} s (median), {spans['seconds'].max():.0f} s (most)")


def history_before(records: pl.DataFrame, history: int, batch: int) -> pl.DataFrame:
    """The `history` records the batch (the last `batch` records) follows: in arrival order the
    ones just before it, so that a history ends where its batch starts."""
    return records.slice(records.height - batch - history, history)


def measure(history: int, batch: pl.DataFrame, records: pl.DataFrame, work: Path) -> dict[str, float]:
    old = work / f"history-{history}.parquet"
    new = work / "batch.parquet"
    history_before(records, history, batch.height).write_parquet(old)
    batch.write_parquet(new)
    folder = work / f"state-{history}"
    _, update = pipeline.update([old], state.History(), CONFIG, datetime.now(UTC))
    assert update is not None
    state.commit(folder, state.History(), update, CONFIG)
    state.publish(folder, work / f"out-{history}")
    child_start, child_peak = peak_rss_in_child(folder, new, work)
    rss_before = reset_peak_rss()
    started = time.perf_counter()
    loaded = state.load(folder, CONFIG)
    load = time.perf_counter() - started
    # each try on a history of its own (its counts are the try's); the commit is given the history
    # its update was made from, as a scheduled run does
    tries = [(history, *pipeline.update([new], history, CONFIG, datetime.now(UTC))) for history in (loaded, state.load(folder, CONFIG))]
    loaded, result, update = min(tries, key=lambda attempt: sum(attempt[1].summary.timings.values()))
    assert update is not None
    started = time.perf_counter()
    state.commit(folder, loaded, update, CONFIG)
    commit = time.perf_counter() - started
    copies = old_copies(result.articles, update)
    out = work / f"out-{history}"
    previous = work / f"previous-{history}.parquet"
    os.link(out / "articles.parquet", previous)  # the last run's light table, kept to compare
    parts_before = {part.name: part.stat().st_ino for part in (out / write.TEXTS_OUTPUT).glob("*.parquet")}
    started = time.perf_counter()
    state.publish(folder, work / f"out-{history}")
    publish = time.perf_counter() - started
    peak = peak_rss_mib()
    counts = {name: float(loaded.counts[name]) for name in state.READ_COUNTS}
    layout = published_changes(previous, out, parts_before, update.ahead.rows["article_texts"])
    (replayed, replay_seconds), (_, compared_seconds), (single, single_seconds) = attachment_work(result.articles, update, loaded)
    del loaded, tries, update
    started = time.perf_counter()
    pipeline.run([old, new], CONFIG)
    full = time.perf_counter() - started
    stages = result.summary.timings
    return {
        "load state": load, **stages, "commit state": commit, "publish outputs": publish,
        "incremental": load + sum(stages.values()) + commit + publish,
        "full run": full,
        "old copies": copies,
        "rss before MiB": rss_before, "peak rss MiB": peak, "child start MiB": child_start, "child peak MiB": child_peak,
        "computed": replayed.computed, "carried": replayed.carried, "single computed": single.computed,
        "replayed s": replay_seconds, "compared s": compared_seconds, "single s": single_seconds, "published": layout,
        "counts": counts,
    }


def attachment_work(articles: pl.DataFrame, update: state.Update, history: state.History) -> list[tuple[cluster.Attached, float]]:
    """The batch's story attachment again, outside the timed update: replaying the history's
    rounds as the update does (told which articles' keywords it made again), replaying them with
    every article's keywords compared to the stored ones, and alone (best of two each); what each
    computed, and its seconds."""
    groups = articles.filter(pl.col("duplicate_group").is_not_null()).select("article_id", "duplicate_group", "duplicate_of")
    args = (groups, update.story_roots, update.story_keywords, CONFIG)
    stored = history.story_keywords.rename({"keywords": "stored"})
    lists = update.story_keywords.join(stored, on="article_id", how="left")
    # the lists that differ from the stored ones: the update's made-again ones less those made the
    # same, which the replay's comparison would drop anyway
    remade = lists.filter(pl.col("keywords").ne_missing(pl.col("stored")))["article_id"]
    timed = []
    for previous in (state.previous_attachment(history, remade), state.previous_attachment(history), None):
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            _, attached = cluster.attached_story_ids(*args, previous)
            seconds.append(time.perf_counter() - started)
        timed.append((attached, min(seconds)))
    return timed


CHILD = """
import sys
from datetime import UTC, datetime
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
from incremental import peak_rss_mib, reset_peak_rss
from dedupe import pipeline, state
from dedupe.config import Config
CONFIG = Config().with_settings({settings!r})
folder, new, out = Path({folder!r}), Path({new!r}), Path({out!r})
start = reset_peak_rss()
with state.locked(folder):
    history = state.load(folder, CONFIG)
    _, update = pipeline.update([new], history, CONFIG, datetime.now(UTC))
    state.commit(folder, history, update, CONFIG)
    state.publish(folder, out)
print(start, peak_rss_mib())
"""


def peak_rss_in_child(folder: Path, new: Path, work: Path) -> tuple[float, float]:
    """One scheduled run (lock, load, update, commit, publish) of the batch on a copy of the state,
    in a process of its own: its resident memory once imported, and its peak (MiB)."""
    copy = work / "child-state"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy, symlinks=True)
    code = CHILD.format(benchmarks=str(Path(__file__).resolve().parent), folder=str(copy), new=str(new), out=str(work / "child-out"),
                        settings=SETTINGS)
    flags = ["-S"] if sys.flags.no_site else []  # a run of another checkout, see benchmarks/README.md
    done = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, check=True)
    start, peak = done.stdout.split()[-2:]
    shutil.rmtree(copy)
    return float(start), float(peak)


def reset_peak_rss() -> float:
    """Reset the process's peak resident memory (Linux: 5 to /proc/self/clear_refs); the
    current resident memory in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def _status_mib(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def reload_seconds(keys: pl.DataFrame, folder: Path) -> dict[str, float]:
    """Best of five reads of the band keys as Parquet (what the state uses) and as Arrow IPC."""
    keys.write_parquet(folder / "keys.parquet")
    keys.write_ipc(folder / "keys.arrow")
    readers = {
        "parquet": lambda: pl.read_parquet(folder / "keys.parquet"),
        "arrow ipc": lambda: pl.read_ipc(folder / "keys.arrow"),
    }
    seconds = {}
    for name, reader in readers.items():
        times = []
        for _ in range(5):
            started = time.perf_counter()
            reader()
            times.append(time.perf_counter() - started)
        seconds[name] = min(times)
    return seconds


def bridge_seconds(pairs: pl.DataFrame) -> dict[str, float]:
    """Best of three: the bridges of the story-pair graph (`pairs`, PAIRS of a state), as
    `cluster.without_weak_bridges` finds them (a compiled loop over the distinct numbered pairs)
    and as networkx, which it replaced, did; the two must be the same set."""
    edges = list(pairs.filter(pl.col("relation") == "same_story").select("article_id_a", "article_id_b").iter_rows())
    nodes = sorted({node for edge in edges for node in edge})
    number = {node: position for position, node in enumerate(nodes)}
    distinct = sorted({(min(number[a], number[b]), max(number[a], number[b])) for a, b in edges})
    low, high = (np.array([edge[side] for edge in distinct], dtype=np.int64) for side in (0, 1))
    import networkx as nx  # pip install -e '.[bench]'

    finders = {
        "compiled": lambda: {frozenset((nodes[low[i]], nodes[high[i]])) for i in cluster._bridges(len(nodes), low, high)},
        "networkx": lambda: {frozenset(edge) for edge in nx.bridges(nx.Graph(edges))},
    }
    found, seconds = {}, {}
    for name, finder in finders.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            found[name] = finder()
            times.append(time.perf_counter() - started)
        seconds[name] = min(times)
    assert found["compiled"] == found["networkx"], "compiled and networkx found different bridges"
    return {"edges": len(edges), "bridges": len(found["compiled"]), **seconds}


def compression_costs(published: Path, folder: Path) -> dict[str, tuple[float, int]]:
    """Best of three: seconds to stream the published texts (all their parts) into a new file
    with each compression, and the file's bytes."""
    costs = {}
    for compression in ("zstd", "lz4", "uncompressed"):
        target = folder / f"articles-{compression}.parquet"
        times = []
        for _ in range(3):
            started = time.perf_counter()
            pl.scan_parquet(published).sink_parquet(target, compression=compression)
            times.append(time.perf_counter() - started)
        costs[compression] = (min(times), target.stat().st_size)
    return costs


def partner_read_costs(generation: Path, folder: Path, partners: int) -> dict[str, tuple[float, int]]:
    """Best of three: seconds to read the texts of `partners` records (a seeded sample, spread over
    the history as candidate partners are) by a filtered scan of the records with their texts in
    one lz4 Parquet file (how state format 9 read them) and gathered by position from the texts
    files (`History.record_rows`), with the bytes on disk of each."""
    history = state.load_generation(generation, CONFIG)
    wanted = history.records["article_id"].sample(min(partners, history.records.height), seed=0)
    scanned = folder / "records-lz4.parquet"
    state.stored_records(generation).write_parquet(scanned, compression="lz4")
    texts = state.STORED_TEXTS
    readers = {
        "filtered scan of lz4 parquet": lambda: pl.scan_parquet(scanned).filter(
            pl.col("article_id").is_in(wanted.implode())).select("article_id", *texts).collect(),
        "gathered by position": lambda: history.record_rows(wanted),
    }
    sizes = {
        "filtered scan of lz4 parquet": scanned.stat().st_size,
        "gathered by position": sum(path.stat().st_size for path in (generation / "record_texts").iterdir())
        + sum(path.stat().st_size for path in (generation / "records").iterdir()),
    }
    costs = {}
    for name, reader in readers.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            read = reader()
            times.append(time.perf_counter() - started)
        assert read.height == wanted.len(), name
        costs[name] = (min(times), sizes[name])
    return costs


def old_copies(articles: pl.DataFrame, update: state.Update) -> int:
    """History articles that share a duplicate group with a batch article."""
    new = pl.col("article_id").is_in(update.records["article_id"].implode())
    touched = articles.filter(new)["duplicate_group"].drop_nulls().implode()
    return articles.filter(pl.col("duplicate_group").is_in(touched) & ~new).height


def published_changes(previous: Path, out: Path, parts_before: dict[str, int], texts_changed: int) -> dict[str, object]:
    """What a run changed of the published articles against the last run's: rows of
    articles.parquet changed (new ones among them; `previous` is the last one, whose articles
    keep their order, new ones follow) and the old rows changed in each column; the texts the run
    wrote (new and cleaned again); and the parts of article_texts.parquet it wrote (rewritten or
    new: not the same file as before, `parts_before` by name and inode) of all, with their rows."""
    published = out / "articles.parquet"
    old_rows = pl.scan_parquet(previous).select(pl.len()).collect().item()
    total = pl.scan_parquet(published).select(pl.len()).collect().item()
    changed = np.zeros(total, dtype=bool)
    changed[old_rows:] = True
    columns = {}
    for name in pl.read_parquet_schema(published):
        before, now = (
            pl.read_parquet(path, columns=[name]).to_series().head(old_rows) for path in (previous, published)
        )
        if name == "article_id" and not before.equals(now):
            raise AssertionError("published articles.parquet: the old articles moved")
        differs = (before.hash() != now.hash()) if isinstance(before.dtype, pl.List) else ~before.eq_missing(now)
        changed[:old_rows] |= differs.to_numpy()
        if differs.any():
            columns[name] = int(differs.sum())
    parts = sorted((out / write.TEXTS_OUTPUT).glob("*.parquet"))
    written = [part for part in parts if parts_before.get(part.name) != part.stat().st_ino]
    return {
        "rows changed": int(changed.sum()), "texts changed": texts_changed, "old rows by column": columns,
        "parts": len(parts), "parts written": len(written),
        "rows written": sum(pl.scan_parquet(part).select(pl.len()).collect().item() for part in written),
    }


def profile_update(history: int, batch: pl.DataFrame, records: pl.DataFrame, work: Path, top: int, order: str = "cumulative") -> None:
    """The top `top` entries by `order` (cumulative or tottime) of a cProfile of the batch's
    update against a history of `history` records (built and committed as `measure` does), the
    chain split's levels in it, then the update's stage seconds and a digest of its outputs (run
    it with PYTHONPATH at another checkout to compare the two)."""
    old, new, folder = work / "history.parquet", work / "batch.parquet", work / "state"
    history_before(records, history, batch.height).write_parquet(old)
    batch.write_parquet(new)
    _, update = pipeline.update([old], state.History(), CONFIG, datetime.now(UTC))
    assert update is not None
    state.commit(folder, state.History(), update, CONFIG)
    loaded = state.load(folder, CONFIG)
    profiler, levels = cProfile.Profile(), []
    with knit_levels(levels):
        result, _ = profiler.runcall(pipeline.update, [new], loaded, CONFIG, datetime.now(UTC))
    pstats.Stats(profiler, stream=sys.stdout).sort_stats(order).print_stats(top)
    print("the chain split's levels in the update (`cluster.split_chains`: pairs inside the open stories, support, seconds):")
    print("; ".join(f"{pairs:,} at {support:.2f} {seconds:.3f} s" for pairs, support, seconds in levels))
    print(", ".join(f"{name} {seconds:.3f} s" for name, seconds in result.summary.timings.items()))
    articles = result.articles.drop("source_file")  # a path in a temporary folder: another each run
    digest = speed._digest(articles, result.stories, result.pairs)
    print(f"outputs of the update (articles less source_file, stories, pairs): {digest}")


@contextlib.contextmanager
def knit_levels(levels: list[tuple[int, float, float]]) -> Iterator[None]:
    """Record each level `cluster.split_chains` knits (the pairs inside its open stories, its
    support, seconds) in `levels` while inside."""
    knit = cluster._Levels.knit

    def timed(self: cluster._Levels, inside: np.ndarray, min_group: int, min_support: float) -> np.ndarray:
        started = time.perf_counter()
        pieces = knit(self, inside, min_group, min_support)
        levels.append((int(inside.sum()), min_support, time.perf_counter() - started))
        return pieces

    cluster._Levels.knit = timed
    try:
        yield
    finally:
        cluster._Levels.knit = knit


def slope_ms_per_1000(histories: list[int], seconds: list[float]) -> float:
    """Least-squares growth of `seconds` with the history size, in ms per 1,000 history records."""
    return float(np.polyfit(np.array(histories) / 1000, np.array(seconds) * 1000, 1)[0]) if len(histories) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", default="1000,5000,20000,50000")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--duplicates", type=float, default=0.3, help="share of the documents that copy another")
    parser.add_argument("--order", choices=("shuffled", "arrival"), default="shuffled",
                        help="shuffled: events and copies spread over the whole corpus (the worst case); arrival: each"
                             " event's coverage within --event-span records")
    parser.add_argument("--event-span", type=int, default=5000, help="records an event's coverage arrives over (arrival order)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a config setting for every run, as `python -m dedupe run --set`")
    parser.add_argument("--profile", type=int, help="only profile one update against a history of this many records")
    parser.add_argument("--top", type=int, default=40, help="entries the profile prints")
    parser.add_argument("--sort", choices=("cumulative", "tottime"), default="cumulative", help="the order of the profile's entries")
    given = parser.parse_args()
    global CONFIG
    SETTINGS[:] = given.set
    CONFIG = Config().with_settings(given.set)
    span = given.event_span if given.order == "arrival" else None
    if given.profile:
        with tempfile.TemporaryDirectory() as work:
            records = ordered_corpus(Path(work) / "corpus", given.profile + given.batch, given.duplicates, span)
            profile_update(given.profile, records.tail(given.batch), records, Path(work), given.top, given.sort)
        return
    histories = [int(h) for h in given.history.split(",")]
    with tempfile.TemporaryDirectory() as work:
        records = ordered_corpus(Path(work) / "corpus", max(histories) + given.batch, given.duplicates, span)
        batch = records.tail(given.batch)
        rows = {}
        for history in histories:
            rows[history] = measure(history, batch, records, Path(work))
            row = rows[history]
            print(f"history {history:,}: incremental {row['incremental']:.2f} s, one run {row['full run']:.2f} s", file=sys.stderr, flush=True)
        largest = state.load(Path(work) / f"state-{histories[-1]}", CONFIG)
        keys, bridges = largest.band_keys, bridge_seconds(largest.pairs)
        del largest
        reload = reload_seconds(keys, Path(work))
        published = Path(work) / f"out-{histories[-1]}" / write.TEXTS_OUTPUT
        compressions = compression_costs(published, Path(work))
        partners = int(rows[histories[-1]]["counts"]["candidate partners read"])
        largest_generation = (Path(work) / f"state-{histories[-1]}" / "current").resolve()
        partner_reads = partner_read_costs(largest_generation, Path(work), partners)
    order = f"arrival order, events over {span:,} records ({labeled_arrival()})" if span else "shuffled order"
    settings = f", settings {' '.join(given.set)}" if given.set else ""
    print(f"batch of {given.batch} records against histories of {', '.join(f'{h:,}' for h in histories)}, {order}{settings}")
    print(f"{'history':>8} {'old copies':>10} {'incremental s':>14} {'one run s':>10} {'one run / incremental':>22}"
          f" {'rss before MiB':>15} {'peak rss MiB':>13} {'own process: start MiB':>23} {'peak MiB':>9}")
    for history, row in rows.items():
        print(f"{history:>8} {row['old copies']:>10.0f} {row['incremental']:>14.2f} {row['full run']:>10.2f} "
              f"{row['full run'] / row['incremental']:>22.1f} {row['rss before MiB']:>15.0f} {row['peak rss MiB']:>13.0f}"
              f" {row['child start MiB']:>23.0f} {row['child peak MiB']:>9.0f}")
    print("\nwhat the batch's update read from the state and cleaned again (`state.READ_COUNTS`)")
    print(f"{'history':>8}" + "".join(f"{name:>27}" for name in state.READ_COUNTS))
    for history, row in rows.items():
        print(f"{history:>8}" + "".join(f"{row['counts'][name]:>27,.0f}" for name in state.READ_COUNTS))
    print("\nstory attachment of the batch's stories (cluster.attached_story_ids): replaying the history's rounds as the update"
          " does, replaying them with every article's keywords compared, and alone:")
    print(f"{'history':>8} {'replayed s':>11} {'every list compared s':>22} {'alone s':>8} {'alone / replayed':>17}"
          f" {'story-rounds computed':>22} {'alone':>7} {'carried over':>13}")
    for history, row in rows.items():
        print(f"{history:>8} {row['replayed s']:>11.3f} {row['compared s']:>22.3f} {row['single s']:>8.3f}"
              f" {row['single s'] / row['replayed s']:>17.1f} "
              f"{row['computed']:>22.0f} {row['single computed']:>7.0f} {row['carried']:>13.0f}")
    print("\npublished articles: rows of articles.parquet the batch changed, texts it wrote, parts of article_texts.parquet"
          f" ({write.PUBLISHED_PART_ROWS:,} rows each) written again or new, of all, with their rows")
    print(f"{'history':>8} {'rows changed':>13} {'texts changed':>14} {'parts written':>14} {'parts':>6} {'rows written':>13}"
          "   old rows changed, by column")
    for history, row in rows.items():
        changes = row["published"]
        by_column = ", ".join(f"{name} {count:,}" for name, count in changes["old rows by column"].items())
        print(f"{history:>8} {changes['rows changed']:>13,} {changes['texts changed']:>14,}"
              f" {changes['parts written']:>14,} {changes['parts']:>6,} {changes['rows written']:>13,}   {by_column}")
    first, last = rows[histories[0]], rows[histories[-1]]
    print(f"incremental at {histories[-1]:,} / at {histories[0]:,}: {last['incremental'] / first['incremental']:.2f}x "
          f"(one run: {last['full run'] / first['full run']:.2f}x)")
    reloads = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in reload.items())
    print(f"bridges of the largest state's story-pair graph ({bridges['edges']:,} pairs, {bridges['bridges']:,} "
          f"bridges): compiled (cluster.without_weak_bridges) {bridges['compiled'] * 1000:.1f} ms, "
          f"networkx {bridges['networkx'] * 1000:.1f} ms")
    print(f"band keys of the largest state ({keys.height:,} rows) reload in {reloads}")
    print(f"article_texts.parquet of the largest state streamed into one file (`write.PUBLISHED_COMPRESSION` is "
          f"{write.PUBLISHED_COMPRESSION}): "
          + ", ".join(f"{name} {seconds:.2f} s {size / 2**20:.0f} MiB" for name, (seconds, size) in compressions.items()))
    print(f"texts of {partners:,} records of the largest state read as candidate partners are (best of 3; "
          "bytes on disk of the records with their texts): "
          + ", ".join(f"{name} {seconds * 1000:.1f} ms {size / 2**20:.0f} MiB"
                      for name, (seconds, size) in partner_reads.items()))
    print(f"\n{'stage seconds':<22}" + "".join(f"{h:>9,}" for h in histories) + f"{'ms per 1k history':>19}")
    stages = [name for name in first if name not in TOTALS[2:]]
    for stage in [*stages, "publish outputs", "incremental", "full run"]:
        seconds = [rows[h].get(stage, 0.0) for h in histories]
        print(f"{stage:<22}" + "".join(f"{s:>9.3f}" for s in seconds) + f"{slope_ms_per_1000(histories, seconds):>19.1f}")


if __name__ == "__main__":
    main()
