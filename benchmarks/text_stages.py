"""The text stages (normalize, clean, clean with copies) on the dev data and the speed corpus:
docs/s per stage, and whether their output is byte for byte the output saved from another
version of the code (a speed-up must not change a single character or audit row).

    python benchmarks/text_stages.py --save /tmp/text-before     # with the old code
    python benchmarks/text_stages.py --compare /tmp/text-before  # with the new: IDENTICAL or the differences
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl

from dedupe import clean, cluster, minhash, normalize, read, verify
from dedupe.config import Config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def inputs(data: Path, speed_docs: int) -> dict[str, list[Path]]:
    sets = {
        "seeds": [ROOT / "seeds"],
        "aeb": [data / "aeb/articles.jsonl"],
        "aeb-html": [data / "aeb/html"],
        "news-aggregator": [data / "news-aggregator/headlines.csv"],
    }
    if speed_docs:
        from speed import build_corpus  # benchmarks/speed.py: real words, known copies

        corpus = build_corpus(Path(tempfile.gettempdir()) / "dedupe-speed" / f"corpus-{speed_docs}", speed_docs, 0.3, seed=speed_docs)
        sets[f"speed-{speed_docs}"] = sorted(corpus.glob("part-*.parquet"))
    return sets


def text_stages(paths: list[Path], config: Config) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    """The frames after normalize, clean and clean with copies, and each stage's seconds."""
    timings: dict[str, float] = {}

    def timed(name: str, function, *args):
        started = time.perf_counter()
        result = function(*args)
        timings[name] = time.perf_counter() - started
        return result

    records = read.read(paths, config)
    normalized = timed("normalize", normalize.normalize, records)
    cleaned = timed("clean", clean.clean, normalized)
    candidates, shingles = minhash.duplicate_candidates(cleaned, config)
    groups = cluster.duplicate_groups(cleaned, verify.verify_duplicates(cleaned, candidates, shingles, config), config)
    with_copies = timed("clean with copies", clean.clean_with_copies, cleaned, groups, config)
    return {"normalize": normalized, "clean": cleaned, "clean with copies": with_copies}, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--speed-docs", type=int, default=10_000, help="speed corpus size (0: none)")
    parser.add_argument("--save", type=Path, help="write each stage's output here")
    parser.add_argument("--compare", type=Path, help="compare each stage's output with the one saved here")
    args = parser.parse_args()
    config = Config()
    print(f"{'input':<18}{'records':>9}{'stage':>20}{'seconds':>9}{'docs/s':>10}  output")
    for name, paths in inputs(args.data, args.speed_docs).items():
        frames, timings = text_stages(paths, config)
        for stage, frame in frames.items():
            file = f"{name}--{stage.replace(' ', '-')}.parquet"
            verdict = ""
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                frame.write_parquet(args.save / file)
            if args.compare:
                before = pl.read_parquet(args.compare / file)
                verdict = "IDENTICAL" if frame.equals(before, null_equal=True) else _differences(before, frame)
            seconds = timings[stage]
            print(f"{name:<18}{frame.height:>9,}{stage:>20}{seconds:>9.2f}{frame.height / seconds:>10,.0f}  {verdict}", flush=True)


def _differences(before: pl.DataFrame, after: pl.DataFrame) -> str:
    if before.columns != after.columns or before.height != after.height:
        return f"DIFFERENT shape/columns: {before.shape} {before.columns} -> {after.shape} {after.columns}"
    columns = [c for c in before.columns if not before[c].equals(after[c], null_equal=True)]
    rows = [
        i for i in range(before.height)
        if any(before[c][i] != after[c][i] for c in columns)
    ][:3]
    return f"DIFFERENT in {columns}, e.g. rows {rows}: " + "; ".join(
        f"{c}: {before[c][rows[0]]!r} -> {after[c][rows[0]]!r}" for c in columns
    )[:600] if rows else f"DIFFERENT in {columns}"


if __name__ == "__main__":
    main()
