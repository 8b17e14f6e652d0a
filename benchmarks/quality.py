"""Duplicate-group and story quality on the dev data, next to baselines computed in the same run.

- Duplicates, aeb: our duplicate groups vs a datasketch MinHashLSH baseline (word 3-grams of the
  raw text, threshold 0.5, connected components).
- Stories, news-aggregator: our stories with each story model (keywords, and minilm: sentence
  embeddings) vs datasketch MinHashLSH on headline words (threshold 0.5, connected components)
  and TF-IDF + average-linkage clustering (scikit-learn). `pip install -e '.[bench]'` first.

    python benchmarks/quality.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
from datasketch import MinHash, MinHashLSH

from dedupe import pipeline
from dedupe.cluster import components
from dedupe.config import STORY_MODELS, Config
from dedupe.evaluate import Scores, evaluate, read_labels
from dedupe.minhash import shingles


def datasketch_baseline(ids: list[str], texts: list[str], size: int, threshold: float) -> pl.DataFrame:
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    minhashes = MinHash.bulk([shingles(text, size) for text in texts], num_perm=128)
    for article_id, minhash in zip(ids, minhashes):
        lsh.insert(article_id, minhash)
    pairs = ((article_id, other) for article_id, minhash in zip(ids, minhashes) for other in lsh.query(minhash))
    root = components(ids, pairs)
    return pl.DataFrame({"id": ids, "cluster": [root[i] for i in ids]})


def tfidf_average_linkage(ids: list[str], texts: list[str], distance: float) -> pl.DataFrame | None:
    try:
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError:
        return None
    vectors = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts).toarray()
    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance)
    return pl.DataFrame({"id": ids, "cluster": [str(c) for c in model.fit_predict(vectors)]})


def show(name: str, scores: Scores, seconds: float) -> None:
    print(
        f"{name:<44} ARI {scores.ari:.3f}  B3 P/R/F1 {scores.bcubed_precision:.3f}/{scores.bcubed_recall:.3f}/"
        f"{scores.bcubed_f1:.3f}  pairs P/R/F1 {scores.pairwise_precision:.3f}/{scores.pairwise_recall:.3f}/"
        f"{scores.pairwise_f1:.3f}  {seconds:6.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--only", choices=["duplicates", "stories"], help="Run one of the two data sets.")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                        help="Override a config field, as `dedupe run --set` does (repeatable).")
    args = parser.parse_args()
    data, config = args.data, Config().with_settings(args.settings)
    chosen = any(setting.startswith("story_model=") for setting in args.settings)
    if args.only != "stories":
        duplicates(data, config)
    if args.only != "duplicates":
        stories(data, config, [config.story_model] if chosen else list(STORY_MODELS))


def duplicates(data: Path, config: Config) -> None:
    print("## Duplicate groups: aeb (2,819 versions of 89 pages)\n")
    labels = read_labels(data / "aeb/labels.csv")
    records = [json.loads(line) for line in open(data / "aeb/articles.jsonl")]
    started = time.perf_counter()
    ours = pipeline.run([data / "aeb/articles.jsonl"], config).articles
    show("dedupe", evaluate(ours.select(id="article_id", cluster="duplicate_group"), labels), time.perf_counter() - started)
    started = time.perf_counter()
    baseline = datasketch_baseline([r["id"] for r in records], [r["text"] or "" for r in records], 3, 0.5)
    show("datasketch LSH, raw word 3-grams, 0.5", evaluate(baseline, labels), time.perf_counter() - started)


def stories(data: Path, config: Config, models: list[str]) -> None:
    print("\n## Stories: news-aggregator (2,821 headlines in 39 stories)\n")
    labels = read_labels(data / "news-aggregator/labels.csv")
    headlines = pl.read_csv(data / "news-aggregator/headlines.csv", infer_schema=False)
    ids, titles = headlines["id"].to_list(), headlines["title"].fill_null("").to_list()
    for model in models:
        started = time.perf_counter()
        ours = pipeline.run([data / "news-aggregator/headlines.csv"], config.with_overrides(story_model=model)).articles
        scores = evaluate(ours.select(id="article_id", cluster="story_id"), labels)
        show(f"dedupe, story_model={model}", scores, time.perf_counter() - started)
    started = time.perf_counter()
    show("datasketch LSH, headline words, 0.5", evaluate(datasketch_baseline(ids, titles, 1, 0.5), labels), time.perf_counter() - started)
    for distance in (0.8, 0.9):
        started = time.perf_counter()
        clusters = tfidf_average_linkage(ids, titles, distance)
        if clusters is None:
            print("TF-IDF + average linkage: skipped (scikit-learn is not installed)")
            break
        show(f"TF-IDF + average linkage, distance {distance}", evaluate(clusters, labels), time.perf_counter() - started)


if __name__ == "__main__":
    main()
