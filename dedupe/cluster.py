"""Group articles: duplicate groups from verified duplicate pairs, stories from story pairs.

Connected components with a union-find: near-linear in articles plus pairs, and independent of the
input order (every group is named by its smallest member, every choice broken by id).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np
import polars as pl
import xxhash
from scipy import sparse

from dedupe import minhash, stories
from dedupe.config import Config
from dedupe.schema import CLEANED, GROUPS, PAIRS, STORY_KEYWORDS, STORY_ROOTS, check


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


def duplicate_groups(cleaned: pl.DataFrame, pairs: pl.DataFrame, config: Config) -> pl.DataFrame:
    """article_id, duplicate_group, duplicate_of for the records not rejected.

    The canonical article of a group is its medoid: the member most similar to the others (sum of
    Jaccard over its confirmed pairs), then the one with a headline, then the longest text, then the smallest
    id. The group is named by its canonical article's id; `duplicate_of` is null for it."""
    check(cleaned, CLEANED, "duplicate groups input")
    check(pairs, PAIRS, "duplicate groups pairs")
    articles = cleaned.filter(pl.col("status") == "ok")
    ids = articles["article_id"].to_list()
    duplicates = pairs.filter(pl.col("relation") == "duplicate")
    edges = list(duplicates.select("article_id_a", "article_id_b").iter_rows())
    component = components(ids, without_weak_bridges(ids, edges, config.bridge_min_group))
    centrality = (
        pl.concat([duplicates.select("jaccard", article_id=side) for side in ("article_id_a", "article_id_b")])
        .group_by("article_id")
        # summed in sorted order: a parallel group-by sums in any order, and a float sum that
        # differs in its last bit turned ties between two medoids one way or the other, run to run
        .agg(centrality=pl.col("jaccard").sort().sum())
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


def without_weak_bridges(ids: Sequence[str], edges: list[tuple[str, str]], min_group: int) -> list[tuple[str, str]]:
    """The edges less those that alone join two well-knit groups of at least `min_group` articles.

    Copies of one article confirm each other many ways; one pair between two such groups is
    usually two failed extractions of one site that both kept only its template (on aeb: a
    justext and a boilerpipe version of two different pages of one blog). Bridges come from
    networkx, in linear time."""
    bridges = {frozenset(edge) for edge in nx.bridges(nx.Graph(edges))}
    if not bridges:
        return edges
    knit = components(ids, (edge for edge in edges if frozenset(edge) not in bridges))
    size = Counter(knit.values())
    return [
        edge
        for edge in edges
        if frozenset(edge) not in bridges or min(size[knit[edge[0]]], size[knit[edge[1]]]) < min_group
    ]


def story_ids(
    cleaned: pl.DataFrame,
    groups: pl.DataFrame,
    story_pairs: pl.DataFrame,
    config: Config,
    keywords: pl.DataFrame | None = None,
    roots: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """GROUPS: the duplicate groups joined into stories, first by verified story pairs between
    canonical articles (less weak bridges, see `without_weak_bridges`), then by attaching small
    stories to larger ones (`attach_stories`), by the `story_keywords` of every record. A later
    run passes the keywords and the STORY_ROOTS (`story_components`) it kept for what did not change.
    A story id is a hash of its smallest canonical article id: the same articles always give
    the same id, whatever their order."""
    check(cleaned, CLEANED, "story ids input")
    if roots is None:
        root_of = story_components(groups["duplicate_group"].unique().sort().to_list(), story_pairs, config)
        roots = pl.DataFrame(list(root_of.items()), schema=STORY_ROOTS, orient="row")
    keywords = story_keywords(cleaned) if keywords is None else keywords
    members = groups.select("article_id", "duplicate_group").join(roots, on="duplicate_group").select("article_id", story="root")
    ends = attach_stories(members, check(keywords, STORY_KEYWORDS, "story keywords"), config)
    story_of = roots.join(ends, left_on="root", right_on="story").select("duplicate_group", story="end")
    return _named_stories(groups, story_of)


def story_components(canonical: Sequence[str], story_pairs: pl.DataFrame, config: Config) -> dict[str, str]:
    """duplicate group -> the smallest group of its component of story pairs, less weak bridges."""
    edges = list(story_pairs.select("article_id_a", "article_id_b").iter_rows())
    return components(canonical, without_weak_bridges(canonical, edges, config.bridge_min_group))


def story_keywords(cleaned: pl.DataFrame) -> pl.DataFrame:
    """STORY_KEYWORDS: the keywords of each record's story text (headline and URL slug), for attachment."""
    texts = cleaned.select("headline", "url").iter_rows()
    words = [sorted(word.decode() for word in minhash.keywords(stories.story_text(headline, url))) for headline, url in texts]
    return pl.DataFrame({"article_id": cleaned["article_id"], "keywords": words}, schema=STORY_KEYWORDS)


def semantic_story_ids(cleaned: pl.DataFrame, groups: pl.DataFrame, scored_pairs: pl.DataFrame, config: Config) -> pl.DataFrame:
    """GROUPS: the duplicate groups joined into stories by average linkage over the scored
    candidate pairs (`verify.semantic_story_pairs`), each group weighing as many articles as it
    holds, until no two stories' mean similarity reaches `story_semantic_similarity`."""
    check(cleaned, CLEANED, "semantic story ids input")
    check(scored_pairs, PAIRS, "semantic story pairs")
    sizes = dict(groups.group_by("duplicate_group").len().iter_rows())
    edges = [(a, b, similarity / 100.0) for a, b, similarity in scored_pairs.select("article_id_a", "article_id_b", "similarity").iter_rows()]
    story_of = average_linkage(sizes, edges, config.story_semantic_similarity)
    return _named_stories(groups, pl.DataFrame(list(story_of.items()), schema={"duplicate_group": pl.String, "story": pl.String}, orient="row"))


def average_linkage(weights: Mapping[str, int], edges: Sequence[tuple[str, str, float]], threshold: float) -> dict[str, str]:
    """Each node -> the smallest node of its cluster, merging the two clusters of highest mean
    similarity while it reaches `threshold` > 0 (UPGMA, each node counted `weights[node]` times).

    Only candidate pairs have a similarity; every other pair counts as 0, as it would in the full
    matrix of a model whose unrelated texts score near 0. Averaging over the known pairs only
    made the result hinge on how many candidates there were: its best threshold moved with the
    posting cap, and the scores fell steeply on either side of it.
    A heap of cluster pairs: a merge re-scores the merged cluster's neighbours, at most
    `story_keyword_posting_cap` per keyword, so the work is near-linear in the edges, never all
    pairs. Ties go to the smallest names and a merged cluster keeps the smaller name, so the
    result does not depend on the order of the input. (scipy and scikit-learn need the dense
    matrix, or complete a sparse one into it.)"""
    size = {node: float(weight) for node, weight in weights.items()}
    links: dict[str, dict[str, float]] = {node: {} for node in weights}
    for a, b, similarity in sorted(edges):
        links[a][b] = links[b][a] = similarity * size[a] * size[b]
    heap = [(-total / (size[a] * size[b]), a, b) for a in sorted(links) for b, total in links[a].items() if a < b]
    heapq.heapify(heap)
    parent = {node: node for node in weights}
    while heap and -heap[0][0] >= threshold:
        negative_mean, a, b = heapq.heappop(heap)
        total = links.get(a, {}).get(b)
        if total is None or total / (size[a] * size[b]) != -negative_mean:
            continue  # an entry from before a merge changed this link
        parent[b] = a  # a < b: the merged cluster keeps the smaller name
        gone = links.pop(b)
        del gone[a], links[a][b]
        for other, other_total in gone.items():
            links[a][other] = links[other][a] = links[a].get(other, 0.0) + other_total
            del links[other][b]
        size[a] += size.pop(b)
        for other, other_total in links[a].items():
            heapq.heappush(heap, (-other_total / (size[a] * size[other]), min(a, other), max(a, other)))
    return {node: _root(parent, node) for node in weights}


def _root(parent: Mapping[str, str], node: str) -> str:
    while parent[node] != node:
        node = parent[node]
    return node


def _named_stories(groups: pl.DataFrame, story_of: pl.DataFrame) -> pl.DataFrame:
    """GROUPS with each duplicate group's story id: a hash of the name of its story (a group
    name; `story_of` holds duplicate_group, story), so the same articles always give the same
    id, whatever their order. Hashed once per story."""
    story_names = story_of["story"].unique()
    names = pl.DataFrame(
        {"story": story_names, "story_id": [f"story-{xxhash.xxh3_64_hexdigest(story.encode())[:12]}" for story in story_names]},
        schema={"story": pl.String, "story_id": pl.String},
    )
    story_id = story_of.join(names, on="story").select("duplicate_group", "story_id")
    out = groups.join(story_id, on="duplicate_group", how="left", maintain_order="left")
    if out["story_id"].null_count():
        raise ValueError("story ids: a duplicate group without a story")
    return check(out, GROUPS, "groups")


def attach_stories(members: pl.DataFrame, keywords: pl.DataFrame, config: Config) -> pl.DataFrame:
    """story, end: the story each story ends in, after attaching each story to a larger one that
    its headlines' keywords fit.

    Pairs of headlines miss what an aggregator calls one story: "Titanfall reviewed" and
    "Microsoft's hopes 'Titanfall' shows off Xbox One" share one word, but a rare one that most
    of the larger story's headlines carry. A story's fit to a larger one is the IDF-weighted share
    of its keywords, each counted by how many of the larger story's headlines carry it; it moves
    to the best fit of at least `story_attach_fit`, and rounds repeat until nothing moves. Only
    stories that share a keyword carried by `story_profile_share` of a story's headlines are
    compared (an inverted index), so the work stays near-linear. Every move is decided from the
    same snapshot and ties go to the larger, then smaller-named story: order does not matter.
    The end story of a chain is named by its smallest member story.

    The IDF counts every article, so one new article changes every fit a little: this step is
    global, also in an incremental run. It is therefore columnar (scipy sparse matrices over
    stories x keywords, numpy for the fits): a Python loop over the candidate pairs made
    cluster stories 8.3 s of a 14.2 s incremental run at 20,000 records, 0.7 s now
    (`benchmarks/incremental.py`, see benchmarks/README.md). Stories and keywords are
    numbered in sorted order and each fit is summed in keyword order, so the result does not
    depend on the input order. Every article's keywords come as a list column (the state keeps
    them so) and are numbered, counted and put in the incidence matrix by polars and numpy, not
    as a Python set and dict entries per article of the history.

    `members` holds article_id, story for the articles in stories; `keywords` (STORY_KEYWORDS)
    every article the IDF counts."""
    names = members["story"].unique().sort()
    if names.is_empty():
        return pl.DataFrame(schema={"story": pl.String, "end": pl.String})
    incidence = _keyword_incidence(keywords)  # article x keyword; document frequency over every article
    document_frequency = np.asarray(incidence.sum(axis=0)).ravel()
    idf = np.log(max(keywords.height, 1) / (1.0 + document_frequency))
    numbered = (
        members.join(names.to_frame().with_row_index("story_number"), on="story")
        .join(keywords.select("article_id").with_row_index("row"), on="article_id")
        .sort("story_number", "row")
    )
    if numbered.height != members.height:
        raise ValueError("attach stories: a member article without keywords")
    first_story = numbered["story_number"].to_numpy().astype(np.int64)
    story_of = first_story.copy()  # member article -> its story (an index into `names`) this round
    parent = np.arange(len(names))
    member_incidence = incidence[numbered["row"].to_numpy()]
    for _ in range(config.story_attach_rounds):
        moves = _attachments(story_of, member_incidence, idf, len(names), config)
        if not moves.size:
            break
        end = np.arange(len(names))
        end[moves[:, 0]] = moves[:, 1]
        while not np.array_equal(end[end], end):  # moves only go to larger stories, so chains end
            end = end[end]
        story_of = end[story_of]
        parent = end[parent]
    # the end story of each chain is named by its smallest member story (names are sorted)
    name_of_end = np.full(len(names), len(names))
    np.minimum.at(name_of_end, parent, np.arange(len(names)))
    return pl.DataFrame({"story": names, "end": names.gather(name_of_end[parent])})


def _keyword_incidence(keywords: pl.DataFrame) -> sparse.csr_matrix:
    """A 0/1 CSR matrix, a row per STORY_KEYWORDS row and a column per distinct keyword in
    sorted order (the byte order `sorted` gave the sets of bytes this replaced)."""
    pairs = keywords.select(row=pl.int_range(pl.len(), dtype=pl.Int64), word="keywords").explode("word").drop_nulls("word")
    words = pairs["word"].unique().sort()
    columns = pairs.join(words.to_frame().with_row_index("column"), on="word", maintain_order="left")["column"].to_numpy()
    lengths = np.bincount(pairs["row"].to_numpy(), minlength=keywords.height)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    matrix = sparse.csr_matrix((np.ones(len(columns)), columns.astype(np.int64), indptr), shape=(keywords.height, len(words)))
    matrix.sort_indices()
    return matrix


def _attachments(
    story_of: np.ndarray, member_incidence: sparse.csr_matrix, idf: np.ndarray, stories: int, config: Config
) -> np.ndarray:
    """(story, larger story it fits best) rows for this round, where the fit is high enough."""
    size = np.bincount(story_of, minlength=stories).astype(np.float64)
    alive = size > 0
    membership = sparse.csr_matrix((np.ones(len(story_of)), (story_of, np.arange(len(story_of)))), shape=(stories, len(story_of)))
    counts = (membership @ member_incidence).tocsr()  # story x keyword: how many of its headlines carry it
    counts.sort_indices()
    smallest = size[alive].min()
    # Only stories big enough to be attached to are indexed. Keeping the many singletons off
    # the postings of common words: cluster stories at 30,000 docs 59.1 s -> 17.8 s, same
    # stories (`benchmarks/speed.py scaling`, busy machine)
    indexed = size >= config.story_attach_size_ratio * smallest
    rows = np.repeat(np.arange(stories), np.diff(counts.indptr))
    in_index = indexed[rows] & (counts.data >= config.story_profile_share * size[rows])
    index = sparse.csr_matrix((np.ones(in_index.sum()), (rows[in_index], counts.indices[in_index])), shape=counts.shape)
    weighted = sparse.csr_matrix((idf[counts.indices] * counts.data, counts.indices, counts.indptr), shape=counts.shape)
    weight = np.bincount(rows, weights=weighted.data, minlength=stories)  # summed in keyword order
    pairs = (counts.astype(bool).astype(np.float64) @ index.T).tocoo()  # stories sharing an indexed keyword
    story, other = pairs.row.astype(np.int64), pairs.col.astype(np.int64)
    keep = (story != other) & (size[other] >= config.story_attach_size_ratio * size[story]) & (weight[story] > 0)
    story, other = story[keep], other[keep]
    if not story.size:
        return np.empty((0, 2), dtype=np.int64)
    # rounded: fits equal in exact arithmetic (5 of 6 and 6 of 7 headlines...) differ in their
    # last bits, and a tie must go to the larger story, not to the rounding
    fit = np.round(_shared_weight(weighted, counts, story, other) / (weight[story] * size[other]), 12)
    good = fit >= config.story_attach_fit
    story, other, fit = story[good], other[good], fit[good]
    best = np.lexsort((other, -size[other], -fit, story))  # per story: best fit, larger, smaller name
    story, other = story[best], other[best]
    first = np.concatenate([[True], story[1:] != story[:-1]]) if story.size else np.empty(0, dtype=bool)
    return np.column_stack([story[first], other[first]])


def _shared_weight(weighted: sparse.csr_matrix, counts: sparse.csr_matrix, story: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each pair: the sum over the story's keywords of their IDF-weighted count in the story
    times their count in the other story. One sparse product between the stories and the larger
    stories that occur in pairs (it sums each entry in keyword order: the same sum every run),
    then one lookup per pair rather than one per keyword of each pair."""
    rows, columns = _positions(story, weighted.shape[0]), _positions(other, counts.shape[0])
    product = (weighted[rows >= 0] @ counts[columns >= 0].T).tocsr()
    product.sort_indices()  # a lookup in a row with sorted columns is a binary search, else a scan
    return np.asarray(product[rows[story], columns[other]]).ravel()


def _positions(used: np.ndarray, size: int) -> np.ndarray:
    """For each of `size` numbers, its position among the distinct `used` ones in order (-1 when
    unused): `np.unique` with its inverse, without sorting millions of pairs."""
    mask = np.zeros(size, dtype=bool)
    mask[used] = True
    return np.where(mask, np.cumsum(mask) - 1, -1)
