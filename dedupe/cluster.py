"""Group articles: duplicate groups from verified duplicate pairs, stories from story pairs.

Connected components with a union-find: near-linear in articles plus pairs, and independent of the
input order (every group is named by its smallest member, every choice broken by id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl
import xxhash

from dedupe.schema import CLEANED, GROUPS, PAIRS, check


def components(ids: Sequence[str], pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each id -> the smallest id of its connected component."""
    parent = {article_id: article_id for article_id in ids}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving keeps the trees flat
            node = parent[node]
        return node

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {article_id: root(article_id) for article_id in ids}


def duplicate_groups(cleaned: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """article_id, duplicate_group, duplicate_of for the records not rejected.

    The canonical article of a group is its medoid: the member most similar to the others (sum of
    Jaccard over its confirmed pairs), then the one with a headline, then the longest text, then the smallest
    id. The group is named by its canonical article's id; `duplicate_of` is null for it."""
    check(cleaned, CLEANED, "duplicate groups input")
    check(pairs, PAIRS, "duplicate groups pairs")
    articles = cleaned.filter(pl.col("status") == "ok")
    ids = articles["article_id"].to_list()
    duplicates = pairs.filter(pl.col("relation") == "duplicate")
    component = components(ids, duplicates.select("article_id_a", "article_id_b").iter_rows())
    centrality = (
        pl.concat([duplicates.select("jaccard", article_id=side) for side in ("article_id_a", "article_id_b")])
        .group_by("article_id")
        .agg(centrality=pl.col("jaccard").sum())
    )
    ranked = (
        articles.select("article_id", "headline", "body")
        .with_columns(component=pl.col("article_id").replace_strict(component))
        .join(centrality, on="article_id", how="left")
        .with_columns(
            pl.col("centrality").fill_null(0.0),
            has_headline=pl.col("headline").is_not_null(),
            length=pl.col("body").str.len_chars().fill_null(0),
        )
        .sort(
            ["component", "centrality", "has_headline", "length", "article_id"],
            descending=[False, True, True, True, False],
        )
    )
    grouped = ranked.with_columns(duplicate_group=pl.col("article_id").first().over("component"))
    return grouped.select(
        "article_id",
        "duplicate_group",
        duplicate_of=pl.when(pl.col("article_id") != pl.col("duplicate_group")).then("duplicate_group"),
    )


def story_ids(groups: pl.DataFrame, story_pairs: pl.DataFrame) -> pl.DataFrame:
    """GROUPS: the duplicate groups joined into stories by verified story pairs between canonical
    articles. A story id is a hash of its smallest canonical article id: the same articles always
    give the same id, whatever their order."""
    canonical = groups["duplicate_group"].unique().sort().to_list()
    story_of = components(canonical, story_pairs.select("article_id_a", "article_id_b").iter_rows())
    names = {group: f"story-{xxhash.xxh3_64_hexdigest(root.encode())[:12]}" for group, root in story_of.items()}
    out = groups.with_columns(story_id=pl.col("duplicate_group").replace_strict(names, return_dtype=pl.String))
    return check(out, GROUPS, "groups")
