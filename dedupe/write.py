"""Write the run's outputs: articles, stories and pairs as Parquet, a Markdown report, a summary.

Files are written to a temporary name and renamed, so a killed run never leaves half a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dedupe.schema import ARTICLES, CLEANED, GROUPS, PAIRS, STORIES, check


@dataclass(frozen=True)
class Summary:
    """The counts a person wants after a run, printed and written to report.md."""

    records: int
    files: int
    status: dict[str, int]
    rejected_reasons: dict[str, int]
    removed_lines: dict[str, int]
    candidates: dict[str, int]
    pairs: dict[str, int]
    duplicate_groups: int
    stories: int
    largest_stories: list[dict[str, object]]
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    """Notes on read records by kind ("id clash", "encoding guessed", "invalid UTF-8")."""
    id_clashes: list[str] = field(default_factory=list)
    """The first id clashes in full, which say where each id was first used."""
    run: dict[str, int] = field(default_factory=dict)
    """Counts of an incremental run (records in, new, stories opened...); empty for a single run."""


def assemble_articles(cleaned: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """ARTICLES: every input record once, with its final status and groups."""
    check(cleaned, CLEANED, "assemble input")
    check(groups, GROUPS, "assemble groups")
    joined = cleaned.join(groups, on="article_id", how="left", validate="1:1", maintain_order="left")
    status = (
        pl.when(pl.col("status") == "rejected")
        .then(pl.lit("rejected"))
        .when(pl.col("duplicate_of").is_not_null())
        .then(pl.lit("duplicate"))
        .otherwise(pl.lit("kept"))
    )
    articles = joined.with_columns(status=status, text=pl.col("body")).select(list(ARTICLES))
    return check(articles, ARTICLES, "articles")


def concat_pairs(*pairs: pl.DataFrame) -> pl.DataFrame:
    """PAIRS of every level in one frame, as pairs.parquet holds them: each level sorted by its
    ids, so the same pairs are the same rows (story pairs come out of a group-by in any order)."""
    frames = [check(frame, PAIRS, "pairs").sort("article_id_a", "article_id_b", "relation") for frame in pairs]
    return check(pl.concat(frames), PAIRS, "all pairs")


def summarize(
    articles: pl.DataFrame,
    stories: pl.DataFrame,
    pairs: pl.DataFrame,
    candidates: Mapping[str, int],
    timings: Mapping[str, float],
    top: int,
) -> Summary:
    def counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
        return dict(frame[column].value_counts(sort=True).iter_rows())

    rejected = articles.filter(pl.col("status") == "rejected").with_columns(
        why=pl.col("reason").str.replace(r"^.*?:\d+: ", "")
    )
    rules = pl.col("removed_rules") if "removed_rules" in articles.columns else pl.col("removed_lines").list.eval(pl.element().struct.field("rule"))
    removed = articles.select(rule=rules.explode()).drop_nulls()  # ARTICLES, or LIGHT_ARTICLES on a state
    notes = articles.select(pl.col("note").str.split("; ").explode()).drop_nulls()
    kinds = notes.select(kind=pl.col("note").str.extract(r"^([^:]+):")).drop_nulls()
    largest = stories.head(top).select("story_id", "headline", "n_articles", n_sources=pl.col("sources").list.len())
    return Summary(
        records=articles.height,
        files=articles["source_file"].n_unique(),
        status={name: counts(articles, "status").get(name, 0) for name in ("kept", "duplicate", "rejected")},
        rejected_reasons=counts(rejected, "why"),
        removed_lines=counts(removed, "rule"),
        candidates=dict(candidates),
        pairs=counts(pairs, "relation"),
        duplicate_groups=articles["duplicate_group"].drop_nulls().n_unique(),
        stories=stories.height,
        largest_stories=largest.to_dicts(),
        timings=dict(timings),
        notes=counts(kinds, "kind"),
        id_clashes=notes.filter(pl.col("note").str.starts_with("id clash:"))["note"].head(top).to_list(),
    )


def write_outputs(
    out: Path, articles: pl.DataFrame, stories: pl.DataFrame, pairs: pl.DataFrame, summary: Summary
) -> list[Path]:
    """articles.parquet, stories.parquet, pairs.parquet and report.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _write_parquet(check(articles, ARTICLES, "write articles"), out / "articles.parquet"),
        _write_parquet(check(stories, STORIES, "write stories"), out / "stories.parquet"),
        _write_parquet(check(pairs, PAIRS, "write pairs"), out / "pairs.parquet"),
    ]
    report = out / "report.md"
    _replace(report, render_report(summary).encode())
    return [*written, report]


def render_report(summary: Summary) -> str:
    lines = [
        "# dedupe run report",
        "",
        f"{summary.records} records from {summary.files} files: "
        + ", ".join(f"{count} {name}" for name, count in summary.status.items())
        + f"; {summary.duplicate_groups} duplicate groups in {summary.stories} stories.",
        "",
        *(["## This run", "", *_table(["what", "count"], summary.run.items()), ""] if summary.run else []),
        "## Records by status",
        "",
        *_table(["status", "records"], summary.status.items()),
        "",
        "## Stages",
        "",
        *_table(
            ["stage", "what", "count"],
            [
                *(("clean", f"lines removed: {rule}", n) for rule, n in summary.removed_lines.items()),
                *(("minhash", f"{level} candidate pairs", n) for level, n in summary.candidates.items()),
                *(("verify", f"confirmed {relation} pairs", n) for relation, n in summary.pairs.items()),
                ("cluster", "duplicate groups", summary.duplicate_groups),
                ("stories", "stories", summary.stories),
            ],
        ),
        "",
        "## Rejected records",
        "",
        *(_table(["reason", "records"], summary.rejected_reasons.items()) if summary.rejected_reasons else ["None."]),
        "",
        "## Notes on read records",
        "",
        *(_table(["note", "records"], summary.notes.items()) if summary.notes else ["None."]),
        *(["", "First id clashes (both records kept):", "", *(f"- {clash}" for clash in summary.id_clashes)]
          if summary.id_clashes else []),
        "",
        "## Timings",
        "",
        *_table(["stage", "seconds"], ((stage, f"{s:.2f}") for stage, s in summary.timings.items())),
        "",
        "## Largest stories",
        "",
        *_table(
            ["story_id", "articles", "sources", "headline"],
            ((s["story_id"], s["n_articles"], s["n_sources"], s["headline"] or "") for s in summary.largest_stories),
        ),
        "",
    ]
    return "\n".join(lines)


def _table(header: list[str], rows: object) -> list[str]:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),  # type: ignore[union-attr]
    ]


def _write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(temporary)
    os.replace(temporary, path)
    return path


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
