"""The dedupe flow: one Prefect task per stage, the flow body reads as the pipeline's contents.

Frames pass between tasks in memory; `NO_CACHE` because hashing a large frame for a cache key
costs more than the stage it would skip, and `quote` because Prefect otherwise walks every
argument looking for futures: on aeb that walk over the shingle sets took 36 s of a 41 s stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from dedupe import clean, cluster, minhash, normalize, read, stories, verify, write
from dedupe.config import Config

P = ParamSpec("P")
R = TypeVar("R")


def stage(name: str, function: Callable[P, R]) -> Callable[P, R]:
    """`function` as a Prefect task named after its stage, with retries off: stages are pure, a
    failure would fail the same way again."""
    return task(name=name, cache_policy=NO_CACHE, retries=0)(function)


read_task = stage("read", read.read)
normalize_task = stage("normalize", normalize.normalize)
clean_task = stage("clean", clean.clean)
duplicate_candidates_task = stage("minhash duplicates", minhash.duplicate_candidates)
verify_duplicates_task = stage("verify duplicates", verify.verify_duplicates)
duplicate_groups_task = stage("cluster duplicates", cluster.duplicate_groups)
group_headlines_task = stage("group headlines", stories.group_headlines)
story_candidates_task = stage("minhash stories", minhash.story_candidates)
verify_stories_task = stage("verify stories", verify.verify_stories)
story_ids_task = stage("cluster stories", cluster.story_ids)
assemble_task = stage("assemble articles", write.assemble_articles)
build_stories_task = stage("build stories", stories.build_stories)
write_task = stage("write", write.write_outputs)


@flow(name="dedupe", log_prints=False)
def dedupe_flow(paths: list[str], out: str = "out", config: Config | None = None) -> write.Summary:
    """Read, normalize, clean, match duplicates, group stories, write: one run over `paths`."""
    config = config or Config()
    logger = get_run_logger()
    timings: dict[str, float] = {}

    def timed(name: str, task_function: Callable[..., R], *args: object) -> R:
        started = time.perf_counter()
        result = task_function(*(quote(arg) for arg in args))
        timings[name] = time.perf_counter() - started
        return result

    records = timed("read", read_task, paths)
    logger.info("read %d records from %d files", records.height, records["source_file"].n_unique())
    normalized = timed("normalize", normalize_task, records)
    cleaned = timed("clean", clean_task, normalized)
    duplicate_candidates, shingles = timed("minhash", duplicate_candidates_task, cleaned, config)
    duplicate_pairs = timed("verify", verify_duplicates_task, cleaned, duplicate_candidates, shingles, config)
    groups = timed("cluster", duplicate_groups_task, cleaned, duplicate_pairs)
    logger.info(
        "%d duplicate candidates, %d confirmed, %d duplicate groups",
        duplicate_candidates.height,
        duplicate_pairs.height,
        groups["duplicate_group"].n_unique(),
    )
    headlines = timed("group headlines", group_headlines_task, cleaned, groups)
    story_candidates, keywords = timed("minhash stories", story_candidates_task, headlines, config)
    story_pairs = timed("verify stories", verify_stories_task, headlines, story_candidates, keywords, config)
    groups = timed("cluster stories", story_ids_task, groups, story_pairs)
    articles = timed("assemble", assemble_task, cleaned, groups)
    story_table = timed("stories", build_stories_task, articles)
    logger.info("%d story candidates, %d confirmed, %d stories", story_candidates.height, story_pairs.height, story_table.height)

    pairs = write.concat_pairs(duplicate_pairs, story_pairs)
    candidates = {"duplicate": duplicate_candidates.height, "story": story_candidates.height}
    summary = write.summarize(articles, story_table, pairs, candidates, timings, config.top_stories)
    timed("write", write_task, Path(out), articles, story_table, pairs, summary)
    create_markdown_artifact(write.render_report(summary), key="dedupe-report", description="dedupe run report")
    return summary
