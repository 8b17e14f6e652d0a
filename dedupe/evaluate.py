"""Clustering quality against labels: pairwise and B-cubed precision/recall/F1, and ARI.

All from the contingency table of (predicted, true) cluster sizes, so evaluating a million
articles never enumerates pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

LEVEL_COLUMNS = {"duplicates": "duplicate_group", "stories": "story_id"}


@dataclass(frozen=True)
class Scores:
    n: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float
    ari: float

    def rows(self) -> list[tuple[str, float]]:
        return [(name, getattr(self, name)) for name in self.__dataclass_fields__ if name != "n"]


def read_labels(path: Path) -> pl.DataFrame:
    """A labels file: columns `id, cluster` (CSV or Parquet); other columns are ignored."""
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    missing = {"id", "cluster"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: a labels file needs columns id and cluster; missing {', '.join(sorted(missing))}")
    return frame.select(pl.col("id").cast(pl.String), pl.col("cluster").cast(pl.String))


def evaluate(predicted: pl.DataFrame, labels: pl.DataFrame) -> Scores:
    """Scores of `predicted` (`id, cluster`) on the labelled ids. A labelled id missing from the
    prediction counts as a cluster of its own, so losing records costs recall."""
    joined = labels.join(predicted.rename({"cluster": "predicted"}), on="id", how="left").with_columns(
        pl.coalesce("predicted", "missing:" + pl.col("id"))
    )
    cells = joined.group_by("predicted", "cluster").len("n_ij")
    sizes_pred = joined.group_by("predicted").len("n_i")
    sizes_true = joined.group_by("cluster").len("n_j")
    n = joined.height

    def pairs(column: pl.Expr) -> pl.Expr:
        return (column * (column - 1) / 2).sum()

    both = cells.select(pairs(pl.col("n_ij").cast(pl.Float64))).item()
    pred_pairs = sizes_pred.select(pairs(pl.col("n_i").cast(pl.Float64))).item()
    true_pairs = sizes_true.select(pairs(pl.col("n_j").cast(pl.Float64))).item()
    precision = both / pred_pairs if pred_pairs else 1.0
    recall = both / true_pairs if true_pairs else 1.0
    expected = pred_pairs * true_pairs / (n * (n - 1) / 2) if n > 1 else 0.0
    top = (pred_pairs + true_pairs) / 2
    ari = (both - expected) / (top - expected) if top != expected else 1.0
    cells = cells.join(sizes_pred, on="predicted").join(sizes_true, on="cluster")
    bcubed_precision = cells.select((pl.col("n_ij") ** 2 / pl.col("n_i")).sum()).item() / n
    bcubed_recall = cells.select((pl.col("n_ij") ** 2 / pl.col("n_j")).sum()).item() / n
    return Scores(
        n=n,
        pairwise_precision=precision,
        pairwise_recall=recall,
        pairwise_f1=_f1(precision, recall),
        bcubed_precision=bcubed_precision,
        bcubed_recall=bcubed_recall,
        bcubed_f1=_f1(bcubed_precision, bcubed_recall),
        ari=ari,
    )


def predicted_clusters(out: Path, level: str) -> pl.DataFrame:
    """`id, cluster` of a run's articles.parquet at `level` ("duplicates" or "stories")."""
    articles = pl.read_parquet(out / "articles.parquet" if out.is_dir() else out)
    return articles.select(id="article_id", cluster=LEVEL_COLUMNS[level])


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
