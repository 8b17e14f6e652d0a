from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dedupe import pipeline, write
from dedupe.config import Config
from dedupe.schema import ARTICLE_TEXTS, ARTICLES, GROUPS, LIGHT_ARTICLES, PAIRS, STORIES
from dedupe.stories import build_stories
from dedupe.write import assemble_articles, read_articles, render_report, summarize, write_outputs
from tests.conftest import SEED_ARTICLE, cleaned_frame


def test_every_record_once_with_its_status(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "title": "A title"}\nnot json\n')
    cleaned = cleaned_frame(SEED_ARTICLE, bad)
    ok = cleaned.filter(pl.col("status") == "ok")["article_id"]
    groups = pl.DataFrame(
        {
            "article_id": ok,
            "duplicate_group": [ok[0]] * len(ok),
            "duplicate_of": [None] + [ok[0]] * (len(ok) - 1),
            "story_id": ["story-1"] * len(ok),
        },
        schema=GROUPS,
    )
    articles = assemble_articles(cleaned, groups)
    assert dict(articles.schema) == ARTICLES
    assert articles["article_id"].to_list() == cleaned["article_id"].to_list()
    assert articles["status"].to_list() == ["kept", "duplicate", "rejected"]
    stories = build_stories(articles)
    summary = summarize(articles, stories, pl.DataFrame(schema=PAIRS), {"text": 0}, {"read": 0.1}, Config().top_stories)
    assert summary.status == {"kept": 1, "duplicate": 1, "rejected": 1}
    assert summary.rejected_reasons == {"malformed JSON line: Expecting value (column 1)": 1}
    assert summary.removed_lines == {"repeated_headline": 2}
    written = write_outputs(tmp_path / "out", articles, stories, pl.DataFrame(schema=PAIRS), summary)
    assert [path.name for path in written] == ["articles.parquet", "article_texts.parquet", "stories.parquet", "pairs.parquet", "report.md"]
    assert dict(pl.read_parquet(tmp_path / "out" / "articles.parquet").schema) == LIGHT_ARTICLES
    assert read_articles(tmp_path / "out").equals(articles)
    write.light_articles(articles.head(1)).write_parquet(tmp_path / "out" / "articles.parquet")
    write_outputs(tmp_path / "other", articles.tail(1), stories, pl.DataFrame(schema=PAIRS), summary)
    (tmp_path / "out" / write.TEXTS_OUTPUT).unlink()
    (tmp_path / "out" / write.TEXTS_OUTPUT).symlink_to((tmp_path / "other" / write.TEXTS_OUTPUT).resolve())
    with pytest.raises(ValueError, match=f"no texts for 1 articles of articles.parquet, e.g. {articles['article_id'][0]}"):
        read_articles(tmp_path / "out")  # texts of other articles
    assert dict(pl.read_parquet(tmp_path / "out" / "stories.parquet").schema) == STORIES
    report = (tmp_path / "out" / "report.md").read_text()
    assert report == render_report(summary)
    assert "| repeated_headline" not in report and "lines removed: repeated_headline | 2" in report
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_id_clashes_and_encoding_guesses_are_counted_and_reported(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": "x", "title": "One"}\n')
    (tmp_path / "b.jsonl").write_bytes('{"id": "x", "title": "Caf\xe9 two"}\n'.encode("cp1252"))
    result = pipeline.run([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], Config())
    assert result.summary.notes == {"encoding guessed": 1, "id clash": 1}
    assert result.summary.id_clashes == [f"id clash: x is also the id of {tmp_path / 'a.jsonl'}:1, renamed x~2"]
    report = render_report(result.summary)
    assert "| id clash | 1 |" in report and f"- id clash: x is also the id of {tmp_path / 'a.jsonl'}:1" in report


def test_texts_are_parts_of_a_folder_swapped_whole_and_the_version_before_stays_until_the_next(tmp_path: Path) -> None:
    """Parts of `part_rows` rows, in order; a second and third publication each swap the symlink,
    keep the version before and remove older ones; a folder left by another layout is replaced."""
    texts = pl.DataFrame({"article_id": [f"a{i}" for i in range(7)], "title_raw": "t", "text": "x", "removed_lines": [[]] * 7}, schema=ARTICLE_TEXTS)
    target = tmp_path / "out" / write.TEXTS_OUTPUT
    target.mkdir(parents=True)  # an older layout's folder
    (target / "stale.parquet").write_bytes(b"")
    versions = []
    for version, rows in enumerate((texts, texts.head(3), texts.tail(2))):
        killed = target.parent / f".{target.name}.link-{version + 1_000_000}"  # a link a killed call left
        killed.symlink_to(target.name)
        folder = write.versions_of(target) / f".v{version}.tmp"
        folder.mkdir(parents=True)
        with write.ParquetParts(folder, ARTICLE_TEXTS, part_rows=3) as parts:
            parts.write(rows.head(1))
            parts.write(rows.slice(1))
        assert [part.name for part in parts.written] == [write.part_name(i) for i in range(-(-rows.height // 3))]
        assert [pl.read_parquet(part).height for part in parts.written] == [min(3, rows.height - 3 * i) for i in range(len(parts.written))]
        write.publish_folder(folder, target, f"v{version}")
        versions.append(f"v{version}")
        assert target.is_symlink() and pl.read_parquet(target).equals(rows)
        assert sorted(p.name for p in write.versions_of(target).iterdir()) == versions[-2:]
        assert not killed.is_symlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    with write.ParquetParts(empty, ARTICLE_TEXTS):
        pass
    assert pl.read_parquet(empty).is_empty() and dict(pl.read_parquet(empty).schema) == ARTICLE_TEXTS
