"""Workers beyond this process: the `--task-runner` choice and the map that hands shards to it.

`dask` starts a Dask LocalCluster for the run (prefect-dask); `dask:ADDRESS` uses a running
scheduler (e.g. `tcp://10.0.0.5:8786`); `ray` / `ray:ADDRESS` the same with prefect-ray, when it
is installed (`pip install prefect-ray`: ~30 packages and a 70 MB wheel, so not a dependency).
The shards themselves are planned in dedupe/shards.py; here each shard is a Prefect task on the
run's task runner, so the run's workers do the work and the Prefect UI shows every shard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner

from dedupe import shards


def task_runner(spec: str) -> TaskRunner:
    """The task runner `spec` names: `dask`, `dask:ADDRESS`, `ray` or `ray:ADDRESS`."""
    kind, _, address = spec.partition(":")
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        # one thread per worker process: the stages hold the GIL in Python loops (clean, verify)
        local = {"cluster_kwargs": {"threads_per_worker": 1, "processes": True, "dashboard_address": None}}
        return DaskTaskRunner(address=address) if address else DaskTaskRunner(**local)
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ValueError("--task-runner ray needs prefect-ray: pip install prefect-ray") from None
        return RayTaskRunner(address=address) if address else RayTaskRunner()
    raise ValueError(f"{spec!r}: expected dask, dask:ADDRESS, ray or ray:ADDRESS")


def on_workers(name: str, function: Callable[..., Any], arguments: list[tuple[Any, ...]]) -> list[Any]:
    """A `shards.Map`: each piece a task submitted to the flow's task runner, results in order.
    Arguments are not `quote`d: prefect-dask walks the parameters itself and turns a quote into
    a plain tuple. The pieces' arguments are frames and small values, quick to walk."""
    piece = task(name=name, cache_policy=NO_CACHE, retries=0)(function)
    futures = [piece.submit(*args) for args in arguments]
    return [future.result() for future in futures]


def worker_threads() -> int | None:
    """Threads of the run's Dask or Ray workers; None on Prefect's default in-process runner."""
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    client = getattr(runner, "client", None)
    if client is not None and hasattr(client, "nthreads"):  # Dask
        return max(1, sum(client.nthreads().values()))
    if type(runner).__name__ == "RayTaskRunner":
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return None


def plan(index: str | None) -> shards.Plan | None:
    """How this run is cut: one shard and band partition per worker thread, on the workers;
    with an index but no workers, in this process. None: the plain one-process pipeline."""
    threads = worker_threads()
    if threads is None:
        return shards.Plan(index=index) if index else None
    return shards.Plan(map=on_workers, shards=threads, partitions=threads, index=index)
