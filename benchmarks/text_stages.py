"""The per-record stages (normalize, clean, minhash and verify duplicates, clean with copies, story keywords) on the dev data and the speed corpus:
docs/s per stage, next to the same stages of an earlier commit run in the same process on the
same records, and whether the output is the same to the last character and audit row (a
speed-up must change nothing).

    python benchmarks/text_stages.py --against 48eb8c3     # that commit's normalize, clean, minhash, verify and cluster
    python benchmarks/text_stages.py --speed-docs 0        # dev data only
    python benchmarks/text_stages.py --against main --rounds 3   # alternating, best of three each
    python benchmarks/text_stages.py --against main --rounds 3 --clock cpu   # CPU seconds of the process
    python benchmarks/text_stages.py --profile normalize --speed-docs 10000     # where a stage's time goes
    python benchmarks/text_stages.py --against main --speed-docs 20000 --speed-duplicates 0.7   # most records have copies
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import polars as pl

from dedupe import clean, cluster, minhash, normalize, read, verify
from dedupe.config import Config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def inputs(data: Path, speed_docs: int, duplicates: float = 0.3) -> dict[str, list[Path]]:
    sets = {
        "seeds": [ROOT / "seeds"],
        "aeb": [data / "aeb/articles.jsonl"],
        "aeb-html": [data / "aeb/html"],
        "news-aggregator": [data / "news-aggregator/headlines.csv"],
    }
    if speed_docs:
        from speed import build_corpus  # benchmarks/speed.py: real words, known copies

        corpus = build_corpus(Path(tempfile.mkdtemp(prefix="dedupe-text-stages-")), speed_docs, duplicates, seed=speed_docs)
        sets[f"speed-{speed_docs}" + (f"-{duplicates:g}" if duplicates != 0.3 else "")] = sorted(corpus.glob("part-*.parquet"))
    return sets


def module_at(commit: str, name: str) -> ModuleType:
    """dedupe/NAME.py as it was at `commit`, loaded beside today's under another name."""
    source = subprocess.run(["git", "show", f"{commit}:dedupe/{name}.py"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="dedupe-text-stages-")) / f"{name}_at_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def text_stages(records: pl.DataFrame, normalizing: ModuleType, cleaning: ModuleType, hashing: ModuleType,
                verifying: ModuleType, clustering: ModuleType, matched: dict[str, object] | None, config: Config,
                clock=time.perf_counter) -> tuple[dict[str, object], dict[str, float]]:
    """The frames after normalize, clean, minhash duplicates (candidates and shingles), verify
    duplicates, clean with copies and the story keywords of attachment (by the given modules),
    and each stage's seconds. Candidates,
    shingles and duplicate groups of the first run (`matched` None) are passed to the later
    ones, so that both versions verify the same candidates
    and clean with the same copies. Each run starts with the modules' line caches empty, as a run
    on a new day's records does: a later round would otherwise time hits on the lines the round
    before cached, which hides what a change does to the work per line."""
    for module in (normalizing, cleaning, verifying):  # minhash caches no data: its case tables stay
        for function in vars(module).values():
            if hasattr(function, "cache_clear"):
                function.cache_clear()
    timings: dict[str, float] = {}

    def timed(name: str, function, *args):
        started = clock()
        result = function(*args)
        timings[name] = clock() - started
        return result

    normalized = timed("normalize", normalizing.normalize, records)
    cleaned = timed("clean", cleaning.clean, normalized)
    found = timed("minhash duplicates", hashing.duplicate_candidates, cleaned, config)
    if matched is None:
        matched = {"candidates": found[0], "shingles": found[1]}
    pairs = timed("verify duplicates", verifying.verify_duplicates, cleaned, matched["candidates"], matched["shingles"], config)
    if "groups" not in matched:
        matched["groups"] = cluster.duplicate_groups(cleaned, pairs, config)
    with_copies = timed("clean with copies", cleaning.clean_with_copies, cleaned, matched["groups"], config)
    keywords = timed("story keywords", clustering.story_keywords, with_copies)
    return {"normalize": normalized, "clean": cleaned, "minhash duplicates": found, "verify duplicates": pairs,
            "clean with copies": with_copies, "story keywords": keywords, "matched": matched}, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--speed-docs", type=int, default=10_000, help="speed corpus size (0: none)")
    parser.add_argument("--speed-duplicates", type=float, default=0.3,
                        help="the speed corpus's share of copies: 0.7 cleans most records against their copies, "
                        "as the late chunks of a 1M day do")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two versions this many times; best time of each")
    parser.add_argument("--against", metavar="COMMIT", help="also run normalize.py, clean.py, minhash.py, verify.py and cluster.py of this commit")
    parser.add_argument("--profile", choices=("normalize", "clean"),
                        help="print a cProfile of this stage per input, no timing")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the process's CPU seconds (all its threads), which move less than wall time "
                        "when other processes share the cores")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    config = Config()
    old = tuple(module_at(args.against, name) for name in ("normalize", "clean", "minhash", "verify", "cluster")) if args.against else None
    if args.profile:
        profile(args.profile, inputs(args.data, args.speed_docs, args.speed_duplicates), config)
        return
    print(f"{'input':<18}{'records':>9}{'stage':>20}{'docs/s':>10}" + (f"{'before':>10}{'speed-up':>10}  output" if old else ""))
    for name, paths in inputs(args.data, args.speed_docs, args.speed_duplicates).items():
        records = read.read(paths, config)
        frames, timings = text_stages(records, normalize, clean, minhash, verify, cluster, None, config, clock)
        if old:
            frames_before, timings_before = text_stages(records, *old, frames["matched"], config, clock)
        matched = frames["matched"]
        for _ in range(args.rounds - 1):  # on a shared machine the load moves: alternate, keep the best
            timings = _best(timings, text_stages(records, normalize, clean, minhash, verify, cluster, matched, config, clock)[1])
            if old:
                timings_before = _best(timings_before, text_stages(records, *old, matched, config, clock)[1])
        for stage, seconds in timings.items():
            line = f"{name:<18}{records.height:>9,}{stage:>20}{records.height / max(seconds, 1e-9):>10,.0f}"
            if old:
                same = _same(frames[stage], frames_before[stage])
                before = timings_before[stage]
                line += f"{records.height / max(before, 1e-9):>10,.0f}{before / max(seconds, 1e-9):>9.2f}x  {'IDENTICAL' if same else 'DIFFERENT'}"
            print(line, flush=True)


def profile(stage: str, sets: dict[str, list[Path]], config: Config, lines: int = 15) -> None:
    """cProfile of one stage of today's code on each input (clean on the normalized records), the
    functions that spend the most time in themselves first."""
    for name, paths in sets.items():
        records = read.read(paths, config)
        normalize.clear_line_cache()
        clean.clear_line_caches()
        if stage == "clean":
            records = normalize.normalize(records)
        profiler = cProfile.Profile()
        profiler.runcall(normalize.normalize if stage == "normalize" else clean.clean, records)
        print(f"{stage} of {name} ({records.height:,} records):", flush=True)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(lines)


def _same(ours: object, theirs: object) -> bool:
    """Frames equal to the last null; minhash's (candidates, shingle sets) also hash for hash."""
    if isinstance(ours, pl.DataFrame):
        return ours.equals(theirs, null_equal=True)
    (pairs, sets), (their_pairs, their_sets) = ours, theirs
    return _same(pairs, their_pairs) and sets.ids == their_sets.ids and all(
        np.array_equal(getattr(sets, name), getattr(their_sets, name)) for name in ("hashes", "offsets"))


def _best(timings: dict[str, float], again: dict[str, float]) -> dict[str, float]:
    return {stage: min(seconds, again[stage]) for stage, seconds in timings.items()}


if __name__ == "__main__":
    main()
