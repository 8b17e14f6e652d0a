"""Canonical stories: what a reader sees of each event.

A story's headline is its most central clean headline (the one most similar to the others), not
merely the first; its representative article is the best member carrying that headline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

from dedupe.clean import url_host
from dedupe.schema import CENTRAL_HEADLINES, CLEANED, GROUP_HEADLINES, STORIES, check, empty

CENTRAL_HEADLINE_CANDIDATES = 200
"""Only the most frequent distinct headlines compete, so a huge story costs O(200^2), not O(n^2)."""
EXACT_SCORE_FLOOR = 0.125
EXACT_WEIGHT_LIMIT = 2**18
"""A story's totals are exact sums (`headline_totals`) when every score is 0 or at least
EXACT_SCORE_FLOOR and its candidates' counts sum below EXACT_WEIGHT_LIMIT."""
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


def build_stories(articles: pl.DataFrame, central: Mapping[str, str | None] | None = None) -> pl.DataFrame:
    """One row per story over the kept and duplicate articles (rejected ones have no story).
    `articles` is ARTICLES, or LIGHT_ARTICLES (a run on a state: the length of a text, not the text);
    `central` the central headline of each story when the caller found them (`central_headlines`)."""
    members = articles.filter(pl.col("story_id").is_not_null()).with_columns(
        source=pl.coalesce("source", pl.col("url").map_elements(_host, return_dtype=pl.String))
    )
    if central is None:
        central = central_headlines(headline_totals(central_candidates(members)))
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
    members = pl.DataFrame({"headline": headlines}, schema={"headline": pl.String})
    members = members.with_columns(story_id=pl.lit("story"))
    return central_headlines(headline_totals(central_candidates(members))).get("story")


def central_candidates(members: pl.DataFrame) -> pl.DataFrame:
    """story_id, headline, count: the CENTRAL_HEADLINE_CANDIDATES most frequent distinct
    headlines of each story (ties: in alphabetical order), most frequent first."""
    counted = members.filter(pl.col("headline").is_not_null()).group_by("story_id", "headline").agg(count=pl.len())
    ordered = counted.sort(["story_id", "count", "headline"], descending=[False, True, False])
    return ordered.filter(pl.int_range(pl.len()).over("story_id") < CENTRAL_HEADLINE_CANDIDATES)


def headline_totals(candidates: pl.DataFrame, known: pl.DataFrame | None = None) -> pl.DataFrame:
    """CENTRAL_HEADLINES plus `exact`: each candidate's similarity to its story's candidates,
    weighted by their counts and summed. Where `known` (CENTRAL_HEADLINES of exact totals, as
    an earlier call gave them) holds a story sharing candidates with it (`_nearest_known`), only
    the scores of headlines whose count moved from that story's (new, gone, or counted again)
    are computed: a story that gained one article costs 200 scores, not 200^2. The result is
    the same float: scores are float32, so a score of at least EXACT_SCORE_FLOOR (2^-3) is a
    multiple of 2^-26; times integer counts, and summed below 100 x 3 x EXACT_WEIGHT_LIMIT <
    2^27, every partial sum is an integer multiple of 2^-26 below 2^53 of them, which float64
    holds exactly, in any order. Otherwise the story's totals are computed whole, as a single
    run does, and not `exact`."""
    before = _nearest_known(candidates, empty(CENTRAL_HEADLINES) if known is None else known)
    parts = []
    for (story,), rows in candidates.partition_by("story_id", as_dict=True, maintain_order=True).items():
        distinct, weight = rows["headline"].to_list(), rows["count"].to_numpy()
        totals, exact = _updated_totals(distinct, weight, before[story]) if story in before else (None, False)
        if totals is None:
            scores = _similarities(distinct, distinct)  # the same list: rapidfuzz scores each pair once
            totals, exact = scores @ weight, _exact(scores, weight)
        parts.append(rows.with_columns(total=pl.Series(totals, dtype=pl.Float64), exact=pl.lit(exact)))
    return pl.concat(parts) if parts else empty(CENTRAL_HEADLINES).with_columns(exact=pl.lit(True))


def central_headlines(totals: pl.DataFrame) -> dict[str, str | None]:
    """story_id -> its candidate with the highest total; ties go to the shorter, then the first."""
    return {
        story: min(zip(rows["headline"], rows["total"]), key=lambda pair: (-pair[1], len(pair[0]), pair[0]))[0]
        for (story,), rows in totals.partition_by("story_id", as_dict=True, maintain_order=True).items()
    }


def _nearest_known(candidates: pl.DataFrame, known: pl.DataFrame) -> dict[str, dict[str, tuple[int, float]]]:
    """story_id -> headline -> (count, total): for each story of `candidates`, the known totals
    of the story sharing most candidate headlines with it (ties: the story of the same id, then
    the smallest id). Any exact totals are a start (`_updated_totals` moves them by the counts
    that differ), and the nearest costs least; the same id alone misses a story renamed since
    (the chunks of one run are named against the history it started from: in chunks 2 and 3 of
    `speed.py profile --docs 90000 --chunk 30000`, 253 of 581 and 248 of 575 stories had totals
    under their id, 548 and 572 a nearest)."""
    shared = candidates.select("story_id", "headline").join(
        known.select("headline", known_story="story_id"), on="headline"
    )
    best = (
        shared.group_by("story_id", "known_story")
        .agg(shared=pl.len(), same=(pl.col("story_id") == pl.col("known_story")).first())
        .sort(["story_id", "shared", "same", "known_story"], descending=[False, True, True, False])
        .unique("story_id", keep="first", maintain_order=True)
    )
    rows = known.join(best.select("story_id", "known_story"), left_on="story_id", right_on="known_story")
    return {
        story: dict(zip(part["headline"], zip(part["count"], part["total"])))
        for (story,), part in rows.select("headline", "count", "total", story="story_id_right").partition_by(
            "story", as_dict=True, include_key=False
        ).items()
    }


def _updated_totals(
    distinct: list[str], weight: np.ndarray, before: dict[str, tuple[int, float]]
) -> tuple[np.ndarray | None, bool]:
    """The totals of `distinct` from the exact ones `before` (headline -> (count, total)): a new
    candidate is scored against all, a kept one gains its scores to the headlines whose count
    moved times that move, those to new candidates read off the new ones' rows (the score is
    symmetric: a whole matrix is scored on one side of its diagonal too). None when that is
    not fewer scores than the whole matrix's half or not provably exact."""
    now = dict(zip(distinct, weight.tolist()))
    moved = {
        headline: now.get(headline, 0) - before.get(headline, (0, 0.0))[0] for headline in now.keys() | before.keys()
    }
    kept = [headline for headline in distinct if headline in before]
    entered = [headline for headline in distinct if headline not in before]
    recounted = {headline: change for headline, change in sorted(moved.items()) if change and headline in before}
    cheaper = len(kept) * len(recounted) + len(entered) * len(distinct) < len(distinct) * (len(distinct) - 1) // 2
    if not cheaper or max(int(weight.sum()), sum(count for count, _ in before.values())) >= EXACT_WEIGHT_LIMIT:
        return None, False
    totals = np.empty(len(distinct), dtype=np.float64)
    position = {headline: i for i, headline in enumerate(distinct)}
    kept_at = [position[headline] for headline in kept]
    gained = np.zeros(len(kept), dtype=np.float64)
    if entered:
        scores = _similarities(entered, distinct)
        if not _exact(scores):
            return None, False
        totals[[position[headline] for headline in entered]] = scores.astype(np.float64) @ weight.astype(np.float64)
        gained += scores[:, kept_at].T.astype(np.float64) @ weight[[position[headline] for headline in entered]].astype(np.float64)
    if kept and recounted:
        scores = _similarities(kept, list(recounted))
        if not _exact(scores):
            return None, False
        gained += scores.astype(np.float64) @ np.array(list(recounted.values()), dtype=np.float64)
    totals[kept_at] = np.array([before[headline][1] for headline in kept]) + gained
    return totals, True


def _similarities(headlines: list[str], others: list[str]) -> np.ndarray:
    """float32 token_set_ratio of each of `headlines` to each of `others`, casefolded; on all
    cores for a whole matrix, on one for a few rows or columns (threads would cost more than
    they save: 0.9 s -> 0.5 s for a batch's updates at 50,000 records)."""
    workers = -1 if headlines is others else 1
    return process.cdist(headlines, others, scorer=fuzz.token_set_ratio, processor=str.casefold, workers=workers)


def _exact(scores: np.ndarray, weight: np.ndarray | None = None) -> bool:
    """Whether sums of these scores times counts are exact in float64 (see `headline_totals`)."""
    small = bool(np.any((scores > 0) & (scores < EXACT_SCORE_FLOOR)))
    return not small and (weight is None or int(weight.sum()) < EXACT_WEIGHT_LIMIT)


def _host(url: str) -> str | None:
    host = url_host(url)
    return host.removeprefix("www.") if host else None
