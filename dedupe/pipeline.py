"""The whole pipeline as plain calls: the one place that says which stage feeds which.

The Prefect flow runs this same sequence with each stage as a task (its `call`); benchmarks and
tests run it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from dedupe import clean, cluster, minhash, normalize, read, stories, verify, write
from dedupe.config import Config

Call = Callable[..., Any]
"""call(stage_name, function, *args) runs one stage and returns its result."""


def direct(name: str, function: Callable[..., Any], *args: object) -> Any:
    return function(*args)


@dataclass(frozen=True)
class Result:
    articles: pl.DataFrame
    stories: pl.DataFrame
    pairs: pl.DataFrame
    summary: write.Summary


def run(
    paths: Sequence[str | Path], config: Config, call: Call = direct, log: Callable[[str], None] = lambda _: None
) -> Result:
    """Read, normalize, clean, match duplicates, group stories; everything but writing."""
    timings: dict[str, float] = {}

    def stage(name: str, function: Callable[..., Any], *args: object) -> Any:
        started = time.perf_counter()
        result = call(name, function, *args)
        timings[name] = time.perf_counter() - started
        return result

    records = stage("read", read.read, list(paths), config)
    log(f"read {records.height} records from {records['source_file'].n_unique()} files")
    normalized = stage("normalize", normalize.normalize, records)
    cleaned = stage("clean", clean.clean, normalized)
    duplicate_candidates, shingles = stage("minhash duplicates", minhash.duplicate_candidates, cleaned, config)
    duplicate_pairs = stage("verify duplicates", verify.verify_duplicates, cleaned, duplicate_candidates, shingles, config)
    groups = stage("cluster duplicates", cluster.duplicate_groups, cleaned, duplicate_pairs, config)
    log(
        f"{duplicate_candidates.height} duplicate candidates, {duplicate_pairs.height} confirmed, "
        f"{groups['duplicate_group'].n_unique()} duplicate groups"
    )
    cleaned = stage("clean with copies", clean.clean_with_copies, cleaned, groups, config)
    headlines = stage("group headlines", stories.group_headlines, cleaned, groups)
    story_candidates, keywords = stage("minhash stories", minhash.story_candidates, headlines, config)
    if config.story_model == "keywords":
        story_pairs = stage("verify stories", verify.verify_stories, headlines, story_candidates, keywords, config)
        groups = stage("cluster stories", cluster.story_ids, cleaned, groups, story_pairs, config)
    else:
        scored = stage("verify stories", verify.semantic_story_pairs, headlines, story_candidates, keywords)
        groups = stage("cluster stories", cluster.semantic_story_ids, cleaned, groups, scored, config)
        story_pairs = verify.strong_pairs(scored, 100.0 * config.story_semantic_similarity)
    articles = stage("assemble", write.assemble_articles, cleaned, groups)
    story_table = stage("build stories", stories.build_stories, articles)
    log(f"{story_candidates.height} story candidates, {story_pairs.height} confirmed, {story_table.height} stories")

    pairs = write.concat_pairs(duplicate_pairs, story_pairs)
    candidates = {"duplicate": duplicate_candidates.height, "story": story_candidates.height}
    summary = write.summarize(articles, story_table, pairs, candidates, timings, config.top_stories)
    return Result(articles, story_table, pairs, summary)
