"""Incremental runs: what a batch costs against a history, next to one run over everything.

    python benchmarks/incremental.py [--history 1000,2500,4500] [--batch 100,400,1000] [--data both|aeb|news]

Records are the dev data's aeb versions and news-aggregator headlines (../shared/data, 5,640)
in a fixed shuffled order. The batch is always the last B records; the history the first H. The
history is built with one run and committed; then the batch is timed against it (loading the
state, each stage of `pipeline.update` (best of two), committing), and so is one run
(`pipeline.run`) over the same H + B records. `old copies` counts the history's articles in the
batch's duplicate groups: cleaning with copies and verification redo work for them, so part of
a batch's cost follows its matches in the history. Timings are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import xxhash

from dedupe import pipeline, state
from dedupe.config import Config

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CONFIG = Config()


def records(data: str = "both") -> tuple[pl.DataFrame, pl.DataFrame]:
    """aeb versions and headlines (or only one of them: `data` "aeb" or "news"), each with a
    shuffled position `order` shared by both."""
    aeb = pl.read_ndjson(DATA / "aeb" / "articles.jsonl")
    news = pl.read_csv(DATA / "news-aggregator" / "headlines.csv", infer_schema=False)
    aeb, news = aeb.head(0 if data == "news" else aeb.height), news.head(0 if data == "aeb" else news.height)
    ids = aeb["id"].to_list() + news["id"].to_list()
    order = {i: rank for rank, i in enumerate(sorted(ids, key=lambda i: xxhash.xxh3_64_intdigest(i.encode())))}
    def ranked(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(order=pl.col("id").replace_strict(order, return_dtype=pl.Int64))
    return ranked(aeb), ranked(news)


def write_slice(folder: Path, aeb: pl.DataFrame, news: pl.DataFrame, start: int, stop: int) -> Path:
    folder.mkdir(parents=True)
    inside = pl.col("order").is_between(start, stop, closed="left")
    if aeb.height:
        aeb.filter(inside).drop("order").write_ndjson(folder / "aeb.jsonl")
    if news.height:
        news.filter(inside).drop("order").write_csv(folder / "headlines.csv")
    return folder


def measure(history: int, batch: int, aeb: pl.DataFrame, news: pl.DataFrame, work: Path) -> dict[str, float]:
    total = aeb.height + news.height
    old = write_slice(work / f"old-{history}-{batch}", aeb, news, 0, history)
    new = write_slice(work / f"new-{history}-{batch}", aeb, news, total - batch, total)
    folder = work / f"state-{history}-{batch}"
    _, update = pipeline.update([old], state.History(), CONFIG, datetime.now(UTC))
    assert update is not None
    state.commit(folder, state.History(), update, CONFIG)
    started = time.perf_counter()
    loaded = state.load(folder, CONFIG)
    load = time.perf_counter() - started
    tries = [pipeline.update([new], loaded, CONFIG, datetime.now(UTC)) for _ in range(2)]
    result, update = min(tries, key=lambda attempt: sum(attempt[0].summary.timings.values()))
    assert update is not None
    started = time.perf_counter()
    state.commit(folder, loaded, update, CONFIG)
    commit = time.perf_counter() - started
    started = time.perf_counter()
    pipeline.run([old, new], CONFIG)
    full = time.perf_counter() - started
    stages = result.summary.timings
    return {
        "load state": load, **stages, "commit state": commit,
        "incremental": load + sum(stages.values()) + commit,
        "full run": full,
        "old copies": old_copies(result.articles, update),
    }


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


def old_copies(articles: pl.DataFrame, update: state.Update) -> int:
    """History articles that share a duplicate group with a batch article."""
    new = pl.col("article_id").is_in(update.records["article_id"].implode())
    touched = articles.filter(new)["duplicate_group"].drop_nulls().implode()
    return articles.filter(pl.col("duplicate_group").is_in(touched) & ~new).height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", default="1000,2500,4500")  # at most 5,640 less the largest batch
    parser.add_argument("--batch", default="100,400,1000")
    parser.add_argument("--data", choices=["both", "aeb", "news"], default="both", help="news: headlines only")
    given = parser.parse_args()
    histories = [int(h) for h in given.history.split(",")]
    batches = [int(b) for b in given.batch.split(",")]
    aeb, news = records(given.data)
    cases = [(h, batches[0]) for h in histories] + [(histories[-1], b) for b in batches[1:]]
    with tempfile.TemporaryDirectory() as work:
        rows = {case: measure(*case, aeb, news, Path(work)) for case in cases}
        largest = Path(work) / f"state-{cases[-1][0]}-{cases[-1][1]}"
        keys = state.load(largest, CONFIG).band_keys
        reload = reload_seconds(keys, Path(work))
    print(f"{'history':>8} {'batch':>6} {'old copies':>10} {'incremental s':>14} {'full run s':>11} {'ratio':>6}")
    for (h, b), row in rows.items():
        print(
            f"{h:>8} {b:>6} {row['old copies']:>10.0f} {row['incremental']:>14.2f} {row['full run']:>11.2f} "
            f"{row['full run'] / row['incremental']:>6.1f}"
        )
    reloads = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in reload.items())
    print(f"band keys of the largest state ({keys.height} rows) reload in {reloads}")
    by_history = [rows[(h, batches[0])] for h in histories]
    by_batch = [rows[(histories[-1], b)] for b in batches]
    print(f"\nstage seconds; history {histories} at batch {batches[0]} | batch {batches} at history {histories[-1]}")
    for stage in by_history[0]:
        if stage in ("incremental", "full run", "old copies"):
            continue
        along_history = " ".join(f"{row.get(stage, 0.0):6.2f}" for row in by_history)
        along_batch = " ".join(f"{row.get(stage, 0.0):6.2f}" for row in by_batch)
        print(f"{stage:<20} {along_history} | {along_batch}")


if __name__ == "__main__":
    main()
