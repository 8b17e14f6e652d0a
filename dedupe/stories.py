"""Canonical stories: what a reader sees of each event.

A story's headline is its most central clean headline (the one most similar to the others), not
merely the first; its representative article is the best member carrying that headline.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import polars as pl
from rapidfuzz import fuzz, process

from dedupe.clean import url_host
from dedupe.schema import CLEANED, GROUP_HEADLINES, STORIES, check

CENTRAL_HEADLINE_CANDIDATES = 200
"""Only the most frequent distinct headlines compete, so a huge story costs O(200^2), not O(n^2)."""
SLUG_MIN_WORDS = 3
"""A URL path segment of at least this many words is a slug ("mens-wearhouse-buying-rival"),
not a section ("business") or an id."""
_SLUG_SEPARATOR = re.compile(r"[-_+]")
_PAGE_SUFFIX = re.compile(r"\.(s?html?|php|aspx?|cms|jsp)$", re.IGNORECASE)


def slug_words(url: str | None) -> list[str]:
    """The words of a URL's slug: sites spell the story out in the path, often more fully than
    the headline ("Maybe ban these instead?" under ".../dont-ban-bossy-sheryl-sandberg-...").
    On news-aggregator (benchmarks/quality.py) they lift story ARI 0.811 -> 0.847."""
    if not url:
        return []
    try:
        path = urlsplit(url if "//" in url else f"//{url}").path
    except ValueError:
        return []
    best: list[str] = []
    for segment in path.split("/"):
        words = [word for word in _SLUG_SEPARATOR.split(_PAGE_SUFFIX.sub("", segment)) if word.isalpha()]
        if len(words) >= SLUG_MIN_WORDS and len(words) > len(best):
            best = words
    return [word.lower() for word in best]


def story_text(headline: str | None, url: str | None) -> str | None:
    """What story matching reads of an article: its clean headline and its URL's slug words."""
    if not headline:
        return None
    slug = slug_words(url)
    return f"{headline} {' '.join(slug)}" if slug else headline


def group_headlines(cleaned: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """duplicate_group -> the headline that speaks for it in story matching (its canonical
    article's, else its members' most common one) and that article's `story_text`. Groups
    without any headline are left out."""
    check(cleaned, CLEANED, "group headlines input")
    speakers = (
        groups.join(cleaned.select("article_id", "headline", "url"), on="article_id")
        .filter(pl.col("headline").is_not_null())
        .with_columns(canonical=pl.col("duplicate_of").is_null(), count=pl.len().over("duplicate_group", "headline"))
        .sort(
            ["duplicate_group", "canonical", "count", "headline", "article_id"],
            descending=[False, True, True, False, False],
        )
        .group_by("duplicate_group", maintain_order=True)
        .agg(pl.col("headline").first(), pl.col("url").first())
    )
    texts = [story_text(headline, url) for headline, url in speakers.select("headline", "url").iter_rows()]
    out = speakers.select("duplicate_group", "headline", story_text=pl.Series(texts, dtype=pl.String))
    return check(out, GROUP_HEADLINES, "group headlines")


def build_stories(articles: pl.DataFrame) -> pl.DataFrame:
    """One row per story over the kept and duplicate articles (rejected ones have no story).
    `articles` is ARTICLES, or LIGHT_ARTICLES (a run on a state: the length of a text, not the text)."""
    members = articles.filter(pl.col("story_id").is_not_null()).with_columns(
        source=pl.coalesce("source", pl.col("url").map_elements(_host, return_dtype=pl.String))
    )
    central = {story: central_headline(headlines) for story, headlines in _headlines_by_story(members)}
    ranked = members.with_columns(
        is_central=pl.col("headline") == pl.col("story_id").replace_strict(central, default=None, return_dtype=pl.String),
        is_canonical=pl.col("duplicate_of").is_null(),
        length=(pl.col("text_chars") if "text_chars" in articles.columns else pl.col("text").str.len_chars()).fill_null(0),
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
