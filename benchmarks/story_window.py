"""Would a time window on story pairs keep a batch's story work near the batch? (issue #7)

    python benchmarks/story_window.py [--records 50100,200100] [--batch 100] [--windows 60000,30000,10000,7500,5000,2500]
        [--event-span 5000]

The chain split is exact for a story component only if it sees all of it, and on the arrival
order of `incremental.py` a batch of 100 lands in a single-link component that holds most of the
history's story pairs (benchmarks/README.md, session 24). One product answer would be a window:
two duplicate groups may pair as one story only if their coverage lies within W of each other in
time (a chain of coverage could still carry a story on). This script asks whether that would
bound the component a batch touches, before anything is built: it runs the plain pipeline once
over the last R records of one arrival order of as many records as the largest R
(`incremental.ordered_corpus`, each event's coverage within `--event-span` records; the slices
`incremental.py` times a batch against), takes a record's position as its time and a group's
span as its members' first and last positions, drops the story pairs whose groups lie more than W records
apart, and prints, per window, the story pairs kept, the groups and pairs of the single-link
components the last `--batch` records' groups fall in (what `state.story_components` would split
again), and the largest component.

Whether a story graph chains depends on how often two groups of different events pair by chance.
So it also prints, for those runs and for one run over news-aggregator's labeled headlines, the
story pairs between groups of different events (a group's event: its canonical article's) per
pair of such groups, and what that rate gives each group at the synthetic history's size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import incremental  # benchmarks/ is a folder of scripts, not a package
import speed

from dedupe import cluster, pipeline
from dedupe.config import Config


def group_spans(articles: pl.DataFrame, order: pl.Series) -> pl.DataFrame:
    """duplicate_group, first, last: its members' first and last positions in `order` (article ids)."""
    position = order.to_frame("article_id").with_row_index("at").with_columns(pl.col("at").cast(pl.Int64))
    members = articles.filter(pl.col("duplicate_group").is_not_null()).join(position, on="article_id")
    return members.group_by("duplicate_group").agg(first=pl.col("at").min(), last=pl.col("at").max()).sort("duplicate_group")


def story_pair_gaps(pairs: pl.DataFrame, spans: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The story pairs' ends as rows of `spans` (`cluster.numbered_pairs`), and the gap between
    their spans (0: overlapping)."""
    story = pairs.filter(pl.col("relation") == "same_story").select("article_id_a", "article_id_b")
    a, b = cluster.numbered_pairs(spans["duplicate_group"], story)
    first, last = spans["first"].to_numpy(), spans["last"].to_numpy()
    return a, b, np.maximum(0, np.maximum(first[b] - last[a], first[a] - last[b]))


def cross_event_rate(articles: pl.DataFrame, pairs: pl.DataFrame, events: pl.DataFrame) -> tuple[int, int, int, float]:
    """Duplicate groups, story pairs, story pairs between groups of different events (`events`:
    id, event), and those per pair of groups of different events."""
    event_of = events.select(pl.col("id").alias("duplicate_group"), "event")
    groups = articles.select("duplicate_group").drop_nulls().unique().join(event_of, on="duplicate_group")
    story = pairs.filter(pl.col("relation") == "same_story")
    for side in ("a", "b"):
        story = story.join(event_of.rename({"duplicate_group": f"article_id_{side}", "event": f"event_{side}"}), on=f"article_id_{side}")
    cross = story.filter(pl.col("event_a") != pl.col("event_b")).height
    per_event = groups.group_by("event").len()["len"].cast(pl.Float64)
    apart = (groups.height**2 - float((per_event**2).sum())) / 2
    return groups.height, story.height, cross, cross / apart if apart else 0.0


def touched(nodes: int, a: np.ndarray, b: np.ndarray, seeds: np.ndarray) -> tuple[int, int, int]:
    """Groups and pairs of the components over the edges (a[i], b[i]) holding `seeds`, and the
    largest component's groups."""
    component = cluster.smallest_of_components(nodes, a, b)
    inside = np.isin(component, component[seeds])
    return int(inside.sum()), int(inside[a].sum()), int(np.bincount(component).max())


def measure(corpus: pl.DataFrame, events: pl.DataFrame, records: int, batch: int, windows: list[int], work: Path) -> int:
    """Prints the window table and the cross-event rate of the last `records` of `corpus`;
    returns the number of its duplicate groups."""
    ordered = corpus.tail(records)  # a history and its batch, as `incremental.py` slices them
    path = work / f"records-{records}.parquet"
    ordered.write_parquet(path)
    started = time.perf_counter()
    result = pipeline.run([path], Config())
    print(f"{records:,} records in arrival order: one run {time.perf_counter() - started:.1f} s")
    spans = group_spans(result.articles, ordered["id"])
    a, b, gap = story_pair_gaps(result.pairs, spans)
    batch_ids = ordered["id"].tail(batch).implode()
    batch_groups = result.articles.filter(pl.col("article_id").is_in(batch_ids))["duplicate_group"].drop_nulls().unique()
    seeds = spans.with_row_index("node").filter(pl.col("duplicate_group").is_in(batch_groups.implode()))["node"].to_numpy()
    print("| window (records) | story pairs kept | groups split again | their pairs | largest component (groups) |")
    print("|---|---:|---:|---:|---:|")
    for window in [None, *windows]:
        kept = np.ones(len(gap), dtype=bool) if window is None else gap <= window
        groups, inside, largest = touched(spans.height, a[kept], b[kept], seeds)
        label = "none" if window is None else f"{window:,}"
        print(f"| {label} | {int(kept.sum()):,} | {groups:,} of {spans.height:,} | {inside:,} | {largest:,} |")
    groups, story, cross, rate = cross_event_rate(result.articles, result.pairs, events)
    print(f"\n{groups:,} groups, {story:,} story pairs, {cross:,} between groups of different events:"
          f" {rate:.2e} per such pair of groups, {rate * groups:.2f} a group\n")
    return groups


def labeled_rate() -> float:
    """`cross_event_rate` of one run over news-aggregator's headlines (their aggregator stories as events)."""
    labeled = speed.labeled_headlines()
    result = pipeline.run([speed.DATA / "news-aggregator/headlines.csv"], Config())
    groups, story, cross, rate = cross_event_rate(result.articles, result.pairs, labeled.select("id", event="cluster"))
    print(f"news-aggregator: {groups:,} groups, {story:,} story pairs, {cross:,} between groups of different stories:"
          f" {rate:.2e} per such pair of groups, {rate * groups:.2f} a group")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default="50100,200100", help="records in arrival order, the batch the last of them")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--windows", default="60000,30000,10000,7500,5000,2500", help="windows W, in records")
    parser.add_argument("--event-span", type=int, default=5000, help="records an event's coverage arrives over")
    given = parser.parse_args()
    windows = [int(window) for window in given.windows.split(",")]
    sizes = [int(size) for size in given.records.split(",")]
    with tempfile.TemporaryDirectory(prefix="dedupe-window-") as work:
        corpus = incremental.ordered_corpus(Path(work) / "corpus", max(sizes), 0.3, given.event_span)
        events = pl.read_parquet(Path(work) / "corpus" / "stories.parquet.truth").select("id", event="cluster")
        groups = [measure(corpus, events, records, given.batch, windows, Path(work)) for records in sizes]
    real = labeled_rate()
    for records, count in zip(sizes, groups):
        print(f"at news-aggregator's rate, a group of the {records:,} records' {count:,} groups would pair with"
              f" {real * count:.2f} of other events")


if __name__ == "__main__":
    main()
