"""Write the run's outputs: articles, their texts, stories and pairs as Parquet, a Markdown
report, a summary.

Files are written to a temporary name and renamed, so a killed run never leaves half a file. The
articles are two tables joined by `article_id` (`read_articles`): articles.parquet, one row per
article with everything but its texts (LIGHT_ARTICLES: status, duplicate group, story id, length
of the text, rules that removed lines), and article_texts.parquet (ARTICLE_TEXTS: raw title, clean
text, the removed lines with their rule), a Parquet dataset of parts (`ParquetParts`), which
polars, pyarrow, pandas, DuckDB (`'article_texts.parquet/*.parquet'`) and Spark read as one
table. A scheduled run changes the story ids of articles all over the history (stories merge,
articles move between them), and the texts of a few recent ones: the light table is small enough
to write again, and of the texts it rewrites only the parts that hold a text it changed
(`state.publish`). A folder cannot be renamed over another, so article_texts.parquet is a symlink
to one of `.article_texts.parquet/*`, swapped with one rename (`publish_folder`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from dedupe import minhash
from dedupe.schema import ARTICLE_TEXTS, ARTICLES, CLEANED, GROUPS, LIGHT_ARTICLES, PAIRS, STORIES, check

TEXTS_OUTPUT = "article_texts.parquet"
PUBLISHED_PART_ROWS = 8_192
"""Texts per part of the published article_texts.parquet. A scheduled run rewrites every part
that holds a text it cleaned again (of copies of its batch's articles: recent ones when news
arrives as it happens), and the last, open part when it adds articles: the smaller the parts, the
less it rewrites beside its batch, the more files (123 for 1M articles).
benchmarks/incremental.py prints the parts rewritten."""
PUBLISHED_COMPRESSION = "lz4"
"""Of the published texts' parts, which runs write again: lz4 streams them in about 0.6 of
zstd's time, for twice the bytes (benchmarks/incremental.py prints both); any Parquet reader
(polars, duckdb, pyarrow) reads them."""


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
    """articles.parquet, article_texts.parquet, stories.parquet, pairs.parquet and report.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    check(articles, ARTICLES, "write articles")
    version = f"{time.time_ns()}-{os.getpid()}"
    parts = versions_of(out / TEXTS_OUTPUT) / f".{version}.tmp"
    parts.mkdir(parents=True)
    with ParquetParts(parts, ARTICLE_TEXTS) as writer:
        writer.write(articles)
    texts = publish_folder(parts, out / TEXTS_OUTPUT, version)  # first: a light row published is never without its text
    written = [
        _write_parquet(light_articles(articles), out / "articles.parquet"),
        texts,
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


def light_articles(articles: pl.DataFrame) -> pl.DataFrame:
    """LIGHT_ARTICLES of ARTICLES: all but the texts, with the length of the text and the rules of
    the removed lines (`text_figures`)."""
    return articles.join(text_figures(articles), on="article_id", how="left", maintain_order="left").select(list(LIGHT_ARTICLES))


def text_figures(texts: pl.DataFrame) -> pl.DataFrame:
    """article_id, text_chars, removed_rules: what LIGHT_ARTICLES keeps of ARTICLE_TEXTS."""
    return texts.select(
        "article_id",
        text_chars=pl.col("text").str.len_chars(),
        removed_rules=pl.col("removed_lines").list.eval(pl.element().struct.field("rule")),
    )


def read_articles(out: Path) -> pl.DataFrame:
    """ARTICLES of an output folder: articles.parquet with article_texts.parquet beside it, row
    for row where both hold the articles in the same order (as a run publishes them: no copy of
    the texts, where a join copied them all), else joined on article_id."""
    light = pl.read_parquet(out / "articles.parquet")
    texts = pl.read_parquet(out / TEXTS_OUTPUT)
    if light["article_id"].equals(texts["article_id"]):
        return check(pl.concat([light, texts.drop("article_id")], how="horizontal").select(list(ARTICLES)), ARTICLES, f"articles of {out}")
    missing = light.join(texts, on="article_id", how="anti")
    if missing.height:
        raise ValueError(f"{out / TEXTS_OUTPUT}: no texts for {missing.height:,} articles of articles.parquet, e.g. {missing['article_id'][0]}")
    return check(light.join(texts, on="article_id", how="left", maintain_order="left").select(list(ARTICLES)), ARTICLES, f"articles of {out}")


def read_outputs(out: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """ARTICLES (`read_articles`), STORIES and PAIRS of an output folder."""
    return read_articles(out), pl.read_parquet(out / "stories.parquet"), pl.read_parquet(out / "pairs.parquet")


def versions_of(target: Path) -> Path:
    """The folder beside a published folder `target` holding the versions it links to (`publish_folder`)."""
    return target.parent / f".{target.name}"


def publish_folder(folder: Path, target: Path, version: str) -> Path:
    """Make `target` a relative symlink to `folder`, moved (renamed) to `versions_of(target)/VERSION`
    unless already there, with one rename; the version it linked to before stays until the next
    call (a reader that listed its parts can still open them), the others are removed, and so are
    links a killed call left. A folder at `target` that is not a symlink is moved among the
    versions first, then removed."""
    versions = versions_of(target)
    versions.mkdir(exist_ok=True)
    kept = versions / version
    if folder != kept:
        os.replace(folder, kept)
    before = target.resolve().name if target.is_symlink() else None
    for stale in target.parent.glob(f".{target.name}.link-*"):
        stale.unlink(missing_ok=True)
    link = target.parent / f".{target.name}.link-{os.getpid()}"
    link.symlink_to(kept.relative_to(target.parent))
    if target.is_dir() and not target.is_symlink():
        os.replace(target, versions / f".replaced-{version}")
    os.replace(link, target)
    remove_versions(target, keep={version, before})
    return target


def remove_versions(target: Path, keep: set[str | None] | None = None) -> None:
    """Remove the versions of a published folder `target` but those in `keep`; by default but the
    one it links to and the newest other (the version before, which a reader may still hold): a
    call killed after its swap left older ones."""
    versions = versions_of(target)
    if keep is None:
        current = target.resolve().name
        others = sorted((old for old in versions.iterdir() if old.name != current), key=lambda old: old.stat().st_mtime_ns)
        keep = {current, *(old.name for old in others[-1:])}
    for old in versions.iterdir():
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


class ParquetParts:
    """Frames of `schema` written one after another as Parquet parts of `part_rows` rows in
    `folder` (part-000000.parquet, ..., from `first`; one empty part when no rows come to an empty
    folder), by pyarrow's writer (polars writes a file from one frame or one query), each on one of
    the stages' threads while this one makes the next (the writer releases the GIL)."""

    def __init__(self, folder: Path, schema: Mapping[str, pl.DataType], first: int = 0, part_rows: int | None = None) -> None:
        self.folder, self.index, self.part_rows = folder, first, part_rows or PUBLISHED_PART_ROWS
        self.columns = dict(schema)
        self.schema = pl.DataFrame(schema=self.columns).to_arrow(compat_level=pl.CompatLevel.oldest()).schema
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0  # in the open part
        self.pending: Future[None] | None = None
        self.written: list[Path] = []

    def write(self, frame: pl.DataFrame) -> None:
        rows = check(frame.select(list(self.columns)), self.columns, f"parts of {self.folder.name}")
        while rows.height:
            if self.writer is None or self.rows == self.part_rows:
                self._open_next()
            taken, rows = rows.head(self.part_rows - self.rows), rows.slice(self.part_rows - self.rows)
            table = taken.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(self.schema)
            self._written()
            self.pending = minhash.threads().submit(self.writer.write_table, table)  # type: ignore[union-attr]
            self.rows += taken.height

    def _open_next(self) -> None:
        self._close_part()
        path = self.folder / part_name(self.index)
        self.writer = pq.ParquetWriter(path, self.schema, compression=PUBLISHED_COMPRESSION)
        self.written.append(path)
        self.index, self.rows = self.index + 1, 0

    def _written(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def _close_part(self) -> None:
        try:
            self._written()
        finally:
            if self.writer is not None:
                self.writer.close()
                self.writer = None

    def __enter__(self) -> ParquetParts:
        return self

    def __exit__(self, *exception: object) -> None:
        if not self.written and not any(self.folder.glob("part-*.parquet")):  # no rows: one empty part, not no table
            self._open_next()
        self._close_part()


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def part_index(part: Path) -> int:
    return int(part.stem.removeprefix("part-"))


def _write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(temporary)
    os.replace(temporary, path)
    return path


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
