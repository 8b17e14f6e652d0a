"""Steps of a run on a stored state, each alone in a fresh process: time and peak memory.

    python benchmarks/state_steps.py STATE [--against WORKTREE] [--rounds 2] [--records PART]

- publish: the current generation's article_texts.parquet made again (`state._published_texts`)
  from its parts, as the first run that wrote them would publish it (a hard-linked copy of the
  generation without its article_texts.parquet), with the digest of the texts made;
- story candidates: `state.story_candidates` of the generation's group headlines against no
  history, what the one story pass of a first run in chunks does;
- duplicate candidates (with `--records PART`, a corpus part of `speed.py`): `state.new_candidates`
  of PART's records not in the state, normalized and cleaned first (not timed): a later chunk's
  LSH buckets against the stored band keys, and the pairs that their sketches leave.

STATE is a state folder (`speed.py profile --chunk N --state-to STATE` leaves one). With
`--against`, the same steps run on another checkout (a git worktree) too, alternating, so the
two are measured side by side. The peak is the process's VmHWM, less the memory it held before
the step (imports, the inputs read) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _memory(field: str) -> float:
    """A VmRSS or VmHWM figure of this process, in GiB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 2**20


def _reset_peak() -> None:
    """Start VmHWM again from the current resident size (Linux: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(step: str, generation: Path, records: Path | None = None) -> dict[str, object]:
    """Run `step` on `generation` in this process: seconds, GiB held before, peak GiB, digest."""
    import polars as pl

    from dedupe import clean, normalize, read, state, write
    from dedupe.config import Config
    from dedupe.schema import READ

    if step == "publish":
        work = Path(tempfile.mkdtemp(prefix="publish-", dir=generation.parent.parent))
        copy = work / generation.name
        shutil.copytree(generation, copy, copy_function=os.link)
        shutil.rmtree(copy / write.TEXTS_OUTPUT)
        before = _memory("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        state._published_texts(copy)
        seconds, peak = time.perf_counter() - started, _memory("VmHWM")
        digest = str(pl.read_parquet(copy / write.TEXTS_OUTPUT).hash_rows(seed=0).sum())
        shutil.rmtree(work)
    elif step == "duplicate candidates":
        assert records is not None
        config = Config()
        history = state.load_generation(generation, config)
        fresh = state.new_records(read.read([records], config), history.records)
        normalized = normalize.normalize(fresh.select(list(READ))).with_columns(text_raw=pl.lit(None, pl.String))
        new = state.with_keys(clean.clean(normalized), fresh)
        before = _memory("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        matched = state.new_candidates(new, history, config)
        seconds, peak = time.perf_counter() - started, _memory("VmHWM")
        digest = f"{new.height}:{matched.candidates.height}:{matched.candidates.hash_rows(seed=0).sum()}"
    else:
        headlines = state._read_keyed(generation / "group_headlines", *state.KEYED["group_headlines"])
        before = _memory("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        found = state.story_candidates(headlines, state.History(), Config())
        seconds, peak = time.perf_counter() - started, _memory("VmHWM")
        digest = f"{found.count}:{found.to_score.hash_rows(seed=0).sum()}"
    return {"seconds": seconds, "before_gib": before, "peak_gib": peak, "digest": digest}


def in_process_of(tree: Path, step: str, generation: Path, records: Path | None) -> dict[str, object]:
    """`measure` in a fresh Python process importing dedupe from `tree`."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--measure", step, str(generation)] + (["--records", str(records)] if records else [])
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{step} with the code of {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("state", type=Path, nargs="?")
    parser.add_argument("--against", type=Path, help="another checkout (a git worktree) measured beside this one")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--records", type=Path, help="a corpus part (speed.py): also time its duplicate candidates against the state")
    parser.add_argument("--steps", nargs="+", default=["publish", "story candidates", "duplicate candidates"],
                        help="the steps to measure (duplicate candidates: with --records)")
    parser.add_argument("--measure", nargs=2, metavar=("STEP", "GENERATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.records)))
        return
    if args.state is None:
        parser.error("a state folder is needed")
    generation = (args.state / "current").resolve()
    trees = [("this checkout", ROOT)] + ([(f"{args.against}", args.against.resolve())] if args.against else [])
    print(f"state {generation}")
    print(f"{'step':<22}{'code':<28}{'round':>6}{'s':>8}{'held GiB':>10}{'peak GiB':>10}  digest")
    for step in args.steps:
        if step == "duplicate candidates" and args.records is None:
            continue
        for round_ in range(1, args.rounds + 1):
            for name, tree in trees:
                figures = in_process_of(tree, step, generation, args.records)
                print(f"{step:<22}{name[-27:]:<28}{round_:>6}{figures['seconds']:>8.2f}{figures['before_gib']:>10.2f}"
                      f"{figures['peak_gib']:>10.2f}  {figures['digest']}")


if __name__ == "__main__":
    main()
