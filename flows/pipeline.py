"""The dedupe flow: `dedupe.pipeline.run` with each stage as a Prefect task.

Frames pass between tasks in memory; `NO_CACHE` because hashing a large frame for a cache key
costs more than the stage it would skip, and `quote` because Prefect otherwise walks every
argument looking for futures: on aeb that walk over the shingle sets took 36 s of a 41 s stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from dedupe import pipeline, write
from dedupe.config import Config


def as_task(name: str, function: Callable[..., Any], *args: object) -> Any:
    """Run one stage as a Prefect task named after it. No retries: stages are pure, a failure
    would fail the same way again."""
    return task(name=name, cache_policy=NO_CACHE, retries=0)(function)(*(quote(arg) for arg in args))


@flow(name="dedupe")
def dedupe_flow(paths: list[str], out: str = "out", config: Config | None = None) -> write.Summary:
    """Read, normalize, clean, match duplicates, group stories, write: one run over `paths`."""
    logger = get_run_logger()
    result = pipeline.run(paths, config or Config(), call=as_task, log=logger.info)
    as_task("write", write.write_outputs, Path(out), result.articles, result.stories, result.pairs, result.summary)
    create_markdown_artifact(write.render_report(result.summary), key="dedupe-report", description="dedupe run report")
    return result.summary
