"""Canonical stories: what a reader sees of each event.

A story's headline is its most central clean headline (the one most similar to the others), not
merely the first; its representative article is the best member carrying that headline.
"""

from __future__ import annotations

import polars as pl
from rapidfuzz import fuzz, process

from dedupe.clean import url_host
from dedupe.schema import CLEANED, STORIES, check

CENTRAL_HEADLINE_CANDIDATES = 200
"""Only the most frequent distinct headlines compete, so a huge story costs O(200^2), not O(n^2)."""


def group_headlines(cleaned: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """duplicate_group -> the headline that speaks for it in story matching: its canonical
    article's, else its members' most common one. Groups without any headline are left out."""
    check(cleaned, CLEANED, "group headlines input")
    return (
        groups.join(cleaned.select("article_id", "headline"), on="article_id")
        .filter(pl.col("headline").is_not_null())
        .with_columns(is_canonical=pl.col("duplicate_of").is_null())
        .group_by("duplicate_group", "headline")
        .agg(canonical=pl.col("is_canonical").any(), count=pl.len())
        .sort(["duplicate_group", "canonical", "count", "headline"], descending=[False, True, True, False])
        .group_by("duplicate_group", maintain_order=True)
        .agg(pl.col("headline").first())
    )


def build_stories(articles: pl.DataFrame) -> pl.DataFrame:
    """One row per story over the kept and duplicate articles (rejected ones have no story)."""
    members = articles.filter(pl.col("story_id").is_not_null()).with_columns(
        source=pl.coalesce("source", pl.col("url").map_elements(_host, return_dtype=pl.String))
    )
    central = {story: central_headline(headlines) for story, headlines in _headlines_by_story(members)}
    ranked = members.with_columns(
        is_central=pl.col("headline") == pl.col("story_id").replace_strict(central, default=None, return_dtype=pl.String),
        is_canonical=pl.col("duplicate_of").is_null(),
        length=pl.col("text").str.len_chars().fill_null(0),
    ).sort(
        ["story_id", "is_central", "is_canonical", "length", "article_id"],
        descending=[False, True, True, True, False],
        nulls_last=True,
    )
    stories = ranked.group_by("story_id", maintain_order=True).agg(
        headline=pl.col("headline").drop_nulls().first(),
        representative_id=pl.col("article_id").first(),
        article_ids=pl.col("article_id").sort(),
        n_articles=pl.len().cast(pl.UInt32),
        sources=pl.col("source").drop_nulls().unique().sort(),
        first_seen=pl.col("published_at").min(),
        last_seen=pl.col("published_at").max(),
    )
    out = stories.sort(["n_articles", "story_id"], descending=[True, False])
    return check(out, STORIES, "stories")


def central_headline(headlines: list[str]) -> str | None:
    """The headline with the highest total similarity to the story's other headlines (each
    headline counted as often as it occurs); ties go to the shorter, then the first in order."""
    if not headlines:
        return None
    counts = (
        pl.DataFrame({"headline": headlines})
        .group_by("headline")
        .len()
        .sort(["len", "headline"], descending=[True, False])
        .head(CENTRAL_HEADLINE_CANDIDATES)
    )
    distinct, weight = counts["headline"].to_list(), counts["len"].to_numpy()
    scores = process.cdist(distinct, distinct, scorer=fuzz.token_set_ratio, processor=str.casefold, workers=-1)
    totals = scores @ weight
    return min(zip(distinct, totals), key=lambda pair: (-pair[1], len(pair[0]), pair[0]))[0]


def _headlines_by_story(members: pl.DataFrame) -> list[tuple[str, list[str]]]:
    grouped = members.filter(pl.col("headline").is_not_null()).group_by("story_id").agg("headline")
    return list(grouped.sort("story_id").iter_rows())


def _host(url: str) -> str | None:
    host = url_host(url)
    return host.removeprefix("www.") if host else None
