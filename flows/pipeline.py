"""The dedupe flow: `dedupe.pipeline.run_on_state` with each stage as a Prefect task, on a state
folder (a big input in chunks: each chunk's stages are tasks, and its log lines say which chunk).

Frames pass between tasks in memory; `NO_CACHE` because hashing a large frame for a cache key
costs more than the stage it would skip, and `quote` because Prefect otherwise walks every
argument looking for futures: on aeb that walk over the shingle sets took 36 s of a 41 s stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from dedupe import pipeline, shards, state, write
from dedupe.config import Config
from flows import scale


def as_task(name: str, function: Callable[..., Any], *args: object) -> Any:
    """Run one stage as a Prefect task named after it. No retries: stages are pure, a failure
    would fail the same way again."""
    return task(name=name, cache_policy=NO_CACHE, retries=0)(function)(*(quote(arg) for arg in args))


PROGRESS_SECONDS = 1.0
"""Least time between two moves of the progress artifact: each is an API call (17 in a run,
~0.3 s of the seeds run's ~2 s of stages, cProfile of `python -m dedupe run seeds`), while a
stage worth watching takes longer than this, so a long run still moves at every stage."""


def with_progress(progress: UUID) -> pipeline.Call:
    """`as_task` that moves the run's progress artifact on after each stage (at most once per
    PROGRESS_SECONDS); a run in chunks starts it again at each chunk's first pass, naming the chunk
    (how many come is not known ahead: the input is read as it goes)."""
    done: set[str] = set()
    chunk = 0
    moved = time.monotonic()

    def call(name: str, function: Callable[..., Any], *args: object) -> Any:
        nonlocal chunk, moved
        result = as_task(name, function, *args)
        if name in pipeline.UPDATE_STAGES:  # not loading, committing, publishing
            if name == "normalize and clean":  # every chunk's, also one with nothing new; its read may come during the last one
                chunk += 1
                done.intersection_update({"changed files", "read", "new records"})
            done.add(name)
            if time.monotonic() - moved < PROGRESS_SECONDS:
                return result
            moved = time.monotonic()
            update_progress_artifact(
                progress, 100.0 * len(done) / len(pipeline.UPDATE_STAGES),
                description=f"stages done, chunk {chunk}" if chunk > 1 else "stages done",
            )
        return result

    return call


@flow(name="dedupe")
def dedupe_flow(
    paths: list[str],
    out: str = "out",
    config: Config | None = None,
    state_dir: str | None = None,
    wait: bool = True,
    settings: list[str] | None = None,
    index: str | None = None,
) -> write.Summary:
    """Match the new records of `paths` against the history in `state_dir` (default OUT/state),
    update duplicate groups and stories, write the outputs over all history to `out`. A
    deployment gives `settings` (`FIELD=VALUE`, as `--set` takes them) rather than a Config:
    plain strings that its parameters keep and the UI shows. On a Dask or Ray task runner the
    per-record stages run in shards on its workers (flows/scale.py); `index` (redis://HOST:PORT/DB)
    keeps the LSH buckets in a shared Redis index (dedupe/index.py)."""
    logger = get_run_logger()
    config = config or Config().with_settings(settings or [])
    folder = Path(state_dir) if state_dir else Path(out) / "state"
    progress = create_progress_artifact(0.0, key="dedupe-progress", description="stages done")
    call = with_progress(progress)
    sharding = scale.plan(index)
    if sharding is not None:
        logger.info(f"{sharding.shards} shards, {sharding.partitions} band partitions, index {index or 'in the state'}")
        call = shards.sharded_call(call, sharding)
    result, registry = pipeline.run_on_state(paths, Path(out), folder, config, wait, call, logger.info, logger.warning)
    update_progress_artifact(progress, 100.0)
    create_markdown_artifact(write.render_report(result.summary), key="dedupe-report", description="dedupe run report")
    overview = state.story_overview(result.stories, registry, config.top_stories)
    create_table_artifact(overview.to_dicts(), key="dedupe-stories", description="largest and newest stories")
    return result.summary
