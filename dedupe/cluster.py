"""Group articles: duplicate groups from verified duplicate pairs, stories from story pairs.

Connected components over numbered ids (a compiled union-find, `smallest_of_components`;
`components` is the plain one over names, for small inputs): near-linear in articles plus pairs, and independent of the input order (every
group is named by its smallest member, every choice broken by id).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import polars as pl
import xxhash
from scipy import sparse

from dedupe import minhash, stories
from dedupe.config import Config
from dedupe.schema import CLEANED, GROUPS, PAIRS, STORY_KEYWORDS, STORY_ROOTS, STORY_ROUNDS, check, empty


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
    ids = articles["article_id"].sort()
    duplicates = pairs.filter(pl.col("relation") == "duplicate")
    edges = duplicates.select("article_id_a", "article_id_b")
    component = pl.DataFrame({"article_id": ids, "component": knit_components(ids, edges, config.bridge_min_group)})
    centrality = (
        pl.concat([duplicates.select("jaccard", article_id=side) for side in ("article_id_a", "article_id_b")])
        .group_by("article_id")
        # summed in sorted order: a parallel group-by sums in any order, and a float sum that
        # differs in its last bit turned ties between two medoids one way or the other, run to run
        .agg(centrality=pl.col("jaccard").sort().sum())
    )
    ranked = (
        articles.select("article_id", "headline", "body")
        .join(component, on="article_id")
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


def knit_components(
    ids: pl.Series, pairs: pl.DataFrame, min_group: int, min_support: float = 0.0, min_piece: int = 0
) -> pl.Series:
    """For each of the sorted distinct `ids`, the smallest id of its connected component over
    `pairs` (two columns of ids) less the weak bridges (`without_weak_bridges`) and, if
    `min_support` > 0, less the pairs their neighbourhoods do not support (`supported_pairs`);
    if `min_piece` > 0, components that are chains of several stories are split (`split_chains`).

    Numbered and columnar (polars joins, compiled bridges and components): the dicts, sets
    and Python union-find this replaced took 0.93 s of a 1.7 s cluster stories stage for the
    touched story component of a 50,000-record state (`benchmarks/incremental.py --profile 50000`,
    benchmarks/README.md, 2026-12-02)."""
    return ids.gather(_knit_numbered(len(ids), *numbered_pairs(ids, pairs), min_group, min_support, min_piece))


def _knit_numbered(nodes: int, a: np.ndarray, b: np.ndarray, min_group: int, min_support: float, min_piece: int) -> np.ndarray:
    """`knit_components` on numbered nodes: for each, the smallest node of its story."""
    if min_piece > 0:
        return split_chains(nodes, a, b, min_group, min_support, min_piece)
    return _knit(nodes, a, b, min_group, min_support)


def _knit(nodes: int, a: np.ndarray, b: np.ndarray, min_group: int, min_support: float) -> np.ndarray:
    """`knit_components` on numbered nodes, without splitting chains."""
    if min_support > 0:
        a, b = supported_pairs(nodes, a, b, min_support)
    kept = without_weak_bridges(nodes, a, b, min_group)
    return smallest_of_components(nodes, a[kept], b[kept])


SUPPORT_STEP = 0.05
"""How much more support `split_chains` asks of a component at each level. The first step from
the default 0.3 must stay below 0.4, where news-aggregator's sparse stories fall apart (story
ARI 0.856 at `story_pair_support` 0.35, 0.717 at 0.4); at 0.05 none splits, while the speed
corpus's chains come apart (`Config.story_split_min_groups`)."""


def split_chains(
    nodes: int, a: np.ndarray, b: np.ndarray, min_group: int, min_support: float, min_piece: int
) -> np.ndarray:
    """For each of `nodes` numbered nodes, the smallest node of its story: the knit components
    at `min_support` (`knit_components`), each split where it is a chain of several stories.

    A fixed support does not follow the day's size: chance pairs between stories grow with the
    day, and at 100k speed-corpus documents enough of them share neighbours to pass 0.3 and chain
    half the day into one component, while 0.5, which cuts it, breaks news-aggregator's sparse
    stories. So each component is asked whether it is one story or several: the support is raised
    by `SUPPORT_STEP` on its own pairs; if that leaves two or more pieces of at least `min_piece`
    nodes, it was several stories joined, and each piece is asked again at the next level; if it
    only sheds pieces smaller than that (the fringe of one story), it stays whole (HDBSCAN's
    condensed tree tells a split from points falling out of a cluster the same way: Campello et
    al., 2013). Chance pairs grow with the day and join whole stories; a story's fringe does not.
    The answer depends on the component alone, so `state.story_components` may redo the touched
    components only. Columnar: every component of a level is knit again in one call (on the pairs
    inside components, so one's neighbourhoods never reach into another's; `_Levels` carries each
    edge's shared neighbours from level to level)."""
    low, high = _distinct_edges(nodes, a, b)
    levels = _Levels(nodes, low, high)
    story = levels.knit(np.ones(len(low), dtype=bool), min_group, min_support)
    open_ = np.bincount(story, minlength=nodes)[story] >= 2 * min_piece  # a smaller story cannot hold two pieces
    level = 1
    while open_.any() and min_support + level * SUPPORT_STEP <= 1 + 1e-9:
        inside = open_[low] & (story[low] == story[high])
        pieces = levels.knit(inside, min_group, round(min_support + level * SUPPORT_STEP, 6))
        pieces = np.where(open_, pieces, np.arange(nodes))
        piece_size = np.bincount(pieces, minlength=nodes)
        is_big = (piece_size >= min_piece) & (pieces == np.arange(nodes))  # one row per piece, at its smallest node
        big_pieces = np.bincount(story[is_big], minlength=nodes)  # per story, at its smallest node
        chained = open_ & (big_pieces[story] >= 2)
        story = np.where(chained, pieces, story)
        open_ = chained & (piece_size[pieces] >= 2 * min_piece)  # a smaller piece cannot hold two big ones
        level += 1
    return story


def supported_pairs(nodes: int, a: np.ndarray, b: np.ndarray, min_support: float) -> tuple[np.ndarray, np.ndarray]:
    """The distinct edges (a[i], b[i]) between `nodes` numbered nodes that single linkage may
    follow: those of at least `min_support`, and for each node with none of those, its one
    best-supported edge.

    An edge's support is SCAN's structural similarity (Xu et al., KDD 2007): the closed
    neighbourhoods its two ends share over the geometric mean of their sizes, |N[u] & N[v]| /
    sqrt(|N[u]| |N[v]|); 1 for a pair alone. Headlines of one event match many of the same others;
    a chance match between two events shares few of their neighbours, however many such matches
    there are (single linkage follows each; the weak-bridge cut only a lone one). A node without a
    supported edge (one headline matching a member of a large story, or of several stories)
    follows its best edge alone (highest support, then smallest neighbour): each such node points
    at one neighbour, and pointers form trees that reach one supported node at most, so they join
    no two stories. A component's result depends on that component alone, so
    `state.story_components` may redo the touched components only."""
    low, high = _distinct_edges(nodes, a, b)
    closed = _closed_neighbourhoods(nodes, low, high)
    return _followed(nodes, low, high, _shared_neighbours(closed, low, high), np.diff(closed[0]), min_support)


class _Levels:
    """The distinct edges of a graph and, for those of the last level knit, how many closed
    neighbours their ends share, for `split_chains` to knit level after level.

    Each level knits a subgraph of the last one's (the pairs inside the open pieces), and an
    edge's support depends on its two ends' closed neighbourhoods alone: it changes only where an
    end lost a neighbour. So each level counts the shared neighbours of those edges only, and
    keeps the others' counts (in the third chunk of a 90k run in chunks of 30k, levels 1-8 count
    189,000 edges again instead of 804,000; benchmarks/README.md, session 12)."""

    def __init__(self, nodes: int, low: np.ndarray, high: np.ndarray):
        self.nodes, self.low, self.high = nodes, low, high
        self.shared = np.zeros(len(low), dtype=np.int64)
        self.counted = np.zeros(len(low), dtype=bool)  # the edges of the graph the counts are of

    def knit(self, inside: np.ndarray, min_group: int, min_support: float) -> np.ndarray:
        """`_knit` over the edges in the mask `inside`."""
        low, high = self.low[inside], self.high[inside]
        if min_support > 0:
            closed = _closed_neighbourhoods(self.nodes, low, high)
            moved = self.counted != inside
            lost = np.zeros(self.nodes, dtype=bool)
            lost[self.low[moved]] = lost[self.high[moved]] = True
            again = np.flatnonzero(inside & (lost[self.low] | lost[self.high]))
            self.shared[again] = _shared_neighbours(closed, self.low[again], self.high[again])
            self.counted = inside
            low, high = _followed(self.nodes, low, high, self.shared[inside], np.diff(closed[0]), min_support)
        kept = without_weak_bridges(self.nodes, low, high, min_group)
        return smallest_of_components(self.nodes, low[kept], high[kept])


def _distinct_edges(nodes: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct edges (a[i], b[i]) between `nodes` numbered nodes, as (smaller, larger) ends
    in sorted order, without loops."""
    low, high = np.minimum(a, b), np.maximum(a, b)
    loop = low == high
    distinct = _distinct(low[~loop] * nodes + high[~loop])
    return distinct // nodes, distinct % nodes


def _closed_neighbourhoods(nodes: int, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indptr and indices of the 0/1 CSR matrix of each node's closed neighbourhood (itself
    among them) over the distinct edges (low[i], high[i]) in the sorted order of
    `_distinct_edges` (or a subset of them), its indices sorted (`compiled.closed_neighbourhoods`)."""
    from dedupe import compiled  # numba's import, only when stories are matched

    return compiled.closed_neighbourhoods(nodes, low.astype(np.int64, copy=False), high.astype(np.int64, copy=False))


def _shared_neighbours(closed: tuple[np.ndarray, np.ndarray], low: np.ndarray, high: np.ndarray) -> np.ndarray:
    from dedupe import compiled  # numba's import, only when stories are matched

    return minhash.per_item_on_threads(partial(compiled.shared_neighbours, *closed), low, high)


def _followed(
    nodes: int, low: np.ndarray, high: np.ndarray, shared: np.ndarray, size: np.ndarray, min_support: float
) -> tuple[np.ndarray, np.ndarray]:
    """`supported_pairs` of the distinct edges (low[i], high[i]), given how many closed
    neighbours their ends share and each node's closed neighbourhood size."""
    support = shared / np.sqrt(size[low] * size[high])
    strong = support >= min_support
    supported = np.zeros(nodes, dtype=bool)
    supported[low[strong]] = supported[high[strong]] = True
    loose = ~supported[np.concatenate([low, high])]  # each edge from either end, kept at the ends without support
    node, other, edge_support = (np.concatenate(side)[loose] for side in ([low, high], [high, low], [support, support]))
    order = np.lexsort((other, -edge_support, node))
    best = order[np.concatenate([[True], node[order][1:] != node[order][:-1]])] if len(order) else order
    return np.concatenate([low[strong], node[best]]), np.concatenate([high[strong], other[best]])


def _distinct(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)` by a sort: numpy 2.4's hashed unique of the pair codes was 1.3 s of the
    5.9 s the chain split took in the third chunk of a 90k run in chunks of 30k (under cProfile;
    benchmarks/README.md, session 11)."""
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if ordered.size else ordered


def numbered_pairs(ids: pl.Series, pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The two ends of `pairs` (its first two columns) as positions in the distinct `ids`, for
    the graph libraries (scipy, compiled loops), which work on numbered nodes."""
    number = ids.to_frame("id").with_row_index("node")
    a, b = (
        pairs.select(id=pl.col(side)).join(number, on="id", how="left", maintain_order="left")["node"]
        for side in pairs.columns[:2]
    )
    if a.null_count() or b.null_count():
        raise ValueError("numbered pairs: a pair with an id that is not among the ids")
    return a.to_numpy().astype(np.int64), b.to_numpy().astype(np.int64)


def without_weak_bridges(nodes: int, a: np.ndarray, b: np.ndarray, min_group: int) -> np.ndarray:
    """Which edges (a[i], b[i]) between `nodes` numbered nodes to keep: all but the bridges that
    alone join two well-knit groups of at least `min_group` nodes each.

    Copies of one article confirm each other many ways; one pair between two such groups is
    usually two failed extractions of one site that both kept only its template (on aeb: a
    justext and a boilerpipe version of two different pages of one blog)."""
    low, high = np.minimum(a, b), np.maximum(a, b)
    distinct, edge = np.unique(low * nodes + high, return_inverse=True)  # repeated and reversed pairs count once
    bridge = np.zeros(len(distinct), dtype=bool)
    bridge[_bridges(nodes, distinct // nodes, distinct % nodes)] = True
    if not bridge.any():
        return np.ones(len(a), dtype=bool)
    knit = smallest_of_components(nodes, (distinct // nodes)[~bridge], (distinct % nodes)[~bridge])
    size = np.bincount(knit, minlength=nodes)
    return ~bridge[edge.ravel()] | (np.minimum(size[knit[a]], size[knit[b]]) < min_group)


def _bridges(nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The positions of the bridges among the distinct edges (a[i], b[i]) of an undirected simple
    graph, in linear time (`compiled.bridges`): for the 138,584 story pairs of a 50,000-record
    state, networkx (Python) 1.3-1.7 s, igraph 51 ms (most of it handing over the edges as Python
    tuples), compiled 11 ms, the same bridges (benchmarks/incremental.py checks them against
    networkx; benchmarks/README.md, session 11)."""
    from dedupe import compiled  # numba's import, only when there are pairs to cut

    return np.flatnonzero(compiled.bridges(nodes, a.astype(np.int64), b.astype(np.int64)))


def smallest_of_components(nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of `nodes` numbered nodes, the smallest node of its connected component over the
    edges (a[i], b[i]): the one way components are found (`compiled.smallest_of_components`, a
    union-find; scipy's components converted the edges to a sparse matrix at every call, at
    every level of the chain split)."""
    from dedupe import compiled  # numba's import, only when there are components to find

    return compiled.smallest_of_components(nodes, a.astype(np.int64, copy=False), b.astype(np.int64, copy=False))


def story_ids(cleaned: pl.DataFrame, groups: pl.DataFrame, story_pairs: pl.DataFrame, config: Config) -> pl.DataFrame:
    """GROUPS: the duplicate groups joined into stories, first by verified story pairs between
    canonical articles (less weak bridges, see `without_weak_bridges`), then by attaching small
    stories to larger ones (`attach_stories`), by the `story_keywords` of every record.
    A story id is a hash of its smallest canonical article id: the same articles always give
    the same id, whatever their order."""
    check(cleaned, CLEANED, "story ids input")
    roots = story_components(groups["duplicate_group"].unique().sort(), story_pairs, config)
    return attached_story_ids(groups, roots, story_keywords(cleaned), config)[0]


def attached_story_ids(
    groups: pl.DataFrame, roots: pl.DataFrame, keywords: pl.DataFrame, config: Config, previous: Previous | None = None
) -> tuple[pl.DataFrame, Attached]:
    """`story_ids` from the story-pair components (STORY_ROOTS) and keywords (STORY_KEYWORDS)
    of every record, replaying the `previous` run's attachment if given; and the attachment."""
    members = groups.select("article_id", "duplicate_group").join(roots, on="duplicate_group").select("article_id", story="root")
    attached = attach_stories(members, check(keywords, STORY_KEYWORDS, "story keywords"), config, previous)
    story_of = roots.join(attached.ends, left_on="root", right_on="story").select("duplicate_group", story="end")
    return _named_stories(groups, story_of), attached


def story_components(canonical: pl.Series, story_pairs: pl.DataFrame, config: Config) -> pl.DataFrame:
    """STORY_ROOTS: each of the sorted duplicate groups `canonical` with the smallest group of its
    component of story pairs, less the pairs their neighbourhoods do not support
    (`story_pair_support`) and less weak bridges, split where it is a chain of stories
    (`story_split_min_groups`)."""
    return story_roots(canonical, *numbered_pairs(canonical, story_pairs.select("article_id_a", "article_id_b")), config)


def story_roots(canonical: pl.Series, a: np.ndarray, b: np.ndarray, config: Config) -> pl.DataFrame:
    """`story_components` of the story pairs (a[i], b[i]) numbered by their positions in
    `canonical` (`numbered_pairs`), for a caller that numbered them already."""
    knit = _knit_numbered(len(canonical), a, b, config.bridge_min_group, config.story_pair_support, config.story_split_min_groups)
    return check(pl.DataFrame({"duplicate_group": canonical, "root": canonical.gather(knit)}), STORY_ROOTS, "story roots")


def story_keywords(cleaned: pl.DataFrame) -> pl.DataFrame:
    """STORY_KEYWORDS: the keywords of each record's story text (headline and URL slug), for
    attachment: `minhash.keywords`, sorted. An ASCII text's are found by polars (its lower case
    and `TOKEN` words are Python's casefold and `\\w` there); other texts take `minhash.keywords`
    itself. Against a Python set per record: 1.43x the records per CPU second on the speed
    corpus, 1.45x on news-aggregator, the same lists (`benchmarks/text_stages.py --clock cpu`)."""
    texts = pl.Series([stories.story_text(headline, url) for headline, url in cleaned.select("headline", "url").iter_rows()], dtype=pl.String)
    ascii_only = ~minhash.beyond_ascii(texts).fill_null(False)
    stop = pl.Series([sorted(minhash.STOP_WORDS)], dtype=pl.List(pl.String))
    found = minhash.tokens(texts.filter(ascii_only)).fill_null([]).list.set_difference(stop)
    columnar = found.list.eval(pl.element().sort())
    rest = [sorted(word.decode() for word in minhash.keywords(text)) for text in texts.filter(~ascii_only).to_list()]
    keywords = pl.concat([columnar, pl.Series(rest, dtype=pl.List(pl.String))]).gather(
        pl.concat([ascii_only.arg_true(), (~ascii_only).arg_true()]).arg_sort()
    )
    return pl.DataFrame({"article_id": cleaned["article_id"], "keywords": keywords}, schema=STORY_KEYWORDS)


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


@dataclass(frozen=True)
class Previous:
    """What the last run's attachment saw and decided, for `attach_stories` to replay: its
    members (article_id, story), its STORY_KEYWORDS and its STORY_ROUNDS; and `remade`, the
    articles whose keywords this run made again (every new one among them: no other's differ
    from the stored lists; None: any may)."""

    members: pl.DataFrame
    keywords: pl.DataFrame
    rounds: pl.DataFrame
    remade: pl.Series | None = None


@dataclass(frozen=True)
class Attached:
    ends: pl.DataFrame  # story, end: the story each story ends in
    rounds: pl.DataFrame  # STORY_ROUNDS: each round's decision per story, for the next run to replay
    computed: int  # story-rounds whose fits to every candidate were computed
    carried: int  # story-rounds decided from bounds kept from the last run or round, and fits to changed stories


ATTACH_SLACK = 1e-11
"""Added to every carried-over fit interval: covers the 12-digit rounding of fits and the float
error of computing them (relative 1e-15 over a few dozen terms), both sides."""


def attach_stories(members: pl.DataFrame, keywords: pl.DataFrame, config: Config, previous: Previous | None = None) -> Attached:
    """The story each story ends in, after attaching each story to a larger one that its
    headlines' keywords fit; and each round's decisions (STORY_ROUNDS), for the next run.

    Pairs of headlines miss what an aggregator calls one story: "Titanfall reviewed" and
    "Microsoft's hopes 'Titanfall' shows off Xbox One" share one word, but a rare one that most
    of the larger story's headlines carry. A story's fit to a larger one is the IDF-weighted share
    of its keywords, each counted by how many of the larger story's headlines carry it; it moves
    to the best fit of at least `story_attach_fit` (among the stories that claim it, if
    `story_attach_claim` is set: `_Snapshot.claims`), and rounds repeat until nothing moves. Only
    stories that share a keyword carried by `story_profile_share` of a story's headlines are
    compared (an inverted index), so the work stays near-linear. Every move is decided from the
    same snapshot and ties go to the larger, then smaller-named story: order does not matter.
    The end story of a chain is named by its smallest member story.

    It is columnar (scipy sparse matrices over stories x keywords, numpy and compiled loops over
    the candidate pairs for the fits): a Python loop over the candidate pairs made cluster stories
    8.3 s of a 14.2 s incremental run at 20,000 records. Stories and keywords are numbered in sorted order and each fit is summed in
    keyword order, so a fit is the same float whichever other stories are computed with it.

    The IDF counts every article, so one new article moves every fit a little. A later run
    passes the `previous` run's members, keywords and rounds, and replays the rounds: a story
    keeps the last run's decision when it holds the same articles as then and the bounds kept
    for it prove that the IDF change cannot alter the decision; its fits to stories whose
    articles changed are computed, exactly (`_Replay`). Within any run, a story that neither
    moved nor grew in the last round only has its fits to the grown stories computed
    (`_after_moves`). Every other story has all its fits computed. The result is the one of a
    run without `previous`, bit for bit (tests/test_cluster.py, tests/test_state.py); a proof
    that fails costs work, never a different result. `members` holds article_id, story for the
    articles in stories; `keywords` (STORY_KEYWORDS) every article the IDF counts."""
    names = members["story"].unique().sort()
    if names.is_empty():
        return Attached(pl.DataFrame(schema={"story": pl.String, "end": pl.String}), empty(STORY_ROUNDS), 0, 0)
    incidence, words = _keyword_incidence(keywords)  # article x keyword; document frequency over every article
    document_frequency = np.asarray(incidence.sum(axis=0)).ravel()
    idf = _idf(keywords.height, document_frequency)
    numbered = (
        members.join(names.to_frame().with_row_index("story_number"), on="story")
        .join(keywords.select("article_id").with_row_index("row"), on="article_id")
        .sort("story_number", "row")
    )
    if numbered.height != members.height:
        raise ValueError("attach stories: a member article without keywords")
    story_of = numbered["story_number"].to_numpy().astype(np.int64)  # member article -> its story this round
    parent = np.arange(len(names))  # first-round story -> its story this round
    member_incidence = incidence[numbered["row"].to_numpy()]
    replay = None
    if previous is not None and previous.rounds.height:
        replay = _Replay(previous, members, keywords, names, words, document_frequency, idf)
    records, computed, carried = [], 0, 0
    decided: _Decisions | None = None
    grown = np.zeros(len(names), dtype=bool)  # stories that received others in the last round
    for round_number in range(config.story_attach_rounds):
        snapshot = _Snapshot(story_of, member_incidence, idf, document_frequency, len(names), config)
        among, still = snapshot.alive, None
        if decided is not None:  # stories that neither moved nor grew last round: only fits to grown ones are new
            kept, still = _after_moves(snapshot, decided, grown)
            among = among & ~still
        fresh = replay.decide(round_number, snapshot, parent, among) if replay else snapshot.decide(among)
        decided = fresh if still is None else kept.where(still, fresh)
        computed += decided.computed
        carried += int(snapshot.alive.sum()) - decided.computed
        records.append(decided.record(round_number, names, snapshot))
        moving = np.flatnonzero(decided.target >= 0)
        if not moving.size:
            break
        end = np.arange(len(names))
        end[moving] = decided.target[moving]
        while not np.array_equal(end[end], end):  # moves only go to larger stories, so chains end
            end = end[end]
        grown[:] = False
        grown[end[moving]] = True
        story_of = end[story_of]
        parent = end[parent]
    # the end story of each chain is named by its smallest member story (names are sorted)
    name_of_end = np.full(len(names), len(names))
    np.minimum.at(name_of_end, parent, np.arange(len(names)))
    ends = pl.DataFrame({"story": names, "end": names.gather(name_of_end[parent])})
    return Attached(ends, check(pl.concat(records), STORY_ROUNDS, "story rounds"), computed, carried)


def _idf(articles: int, document_frequency: np.ndarray) -> np.ndarray:
    return np.log(max(articles, 1) / (1.0 + document_frequency))


@dataclass(frozen=True)
class _Decisions:
    """One round's decision per story (arrays over all stories): the story it moves to (-1: it
    stays), an interval holding its fit there, a lower bound on how much that fit exceeds its fit
    to any other candidate, and an upper bound on its fits to the other candidates (-inf: none)."""

    target: np.ndarray
    low: np.ndarray
    high: np.ndarray
    gap: np.ndarray
    rest: np.ndarray
    computed: int  # stories whose fits to every candidate were computed
    smallest: float  # the size of the round's smallest story

    def where(self, mask: np.ndarray, other: _Decisions) -> _Decisions:
        """These decisions for the stories in `mask`, `other`'s for the rest."""
        mine = (self.target, self.low, self.high, self.gap, self.rest)
        theirs = (other.target, other.low, other.high, other.gap, other.rest)
        return _Decisions(*(np.where(mask, a, b) for a, b in zip(mine, theirs)), self.computed + other.computed, self.smallest)

    def record(self, round_number: int, names: pl.Series, snapshot: _Snapshot) -> pl.DataFrame:
        alive = np.flatnonzero(snapshot.alive)
        target = self.target[alive]
        frame = pl.DataFrame(
            {
                "round": np.full(len(alive), round_number, dtype=np.int32),
                "story": names.gather(alive),
                "smallest": np.full(len(alive), snapshot.smallest),
                "target": names.gather(np.maximum(target, 0)),
                "target_low": self.low[alive],
                "target_high": self.high[alive],
                "target_gap": self.gap[alive],
                "rest_high": self.rest[alive],
                "moves": target >= 0,
            }
        )
        moved = pl.col("target", "target_low", "target_high", "target_gap")
        return frame.with_columns(pl.when("moves").then(moved)).drop("moves").cast(STORY_ROUNDS)


BLOCK_PAIRS = 4_000_000
"""Candidate pairs of story attachment made and decided at once, at most (by their postings,
an upper bound): a few hundred MB with what `_Snapshot.best` makes of them."""


class _Snapshot:
    """One round's stories: their keyword counts, sizes, IDF weights and inverted index."""

    def __init__(self, story_of: np.ndarray, member_incidence: sparse.csr_matrix, idf: np.ndarray,
                 document_frequency: np.ndarray, stories: int, config: Config):
        self.config = config
        self.size = np.bincount(story_of, minlength=stories).astype(np.float64)
        self.alive = self.size > 0
        membership = sparse.csr_matrix((np.ones(len(story_of)), (story_of, np.arange(len(story_of)))), shape=(stories, len(story_of)))
        counts = (membership @ member_incidence).tocsr()  # story x keyword: how many of its headlines carry it
        counts.sort_indices()
        self.counts = counts
        self.smallest = self.size[self.alive].min()
        # Only stories big enough to be attached to are indexed. Keeping the many singletons off
        # the postings of common words: cluster stories at 30,000 docs 59.1 s -> 17.8 s, same
        # stories (`benchmarks/speed.py scaling`, busy machine)
        indexed = self.size >= config.story_attach_size_ratio * self.smallest
        self.rows = np.repeat(np.arange(stories), np.diff(counts.indptr))
        in_index = indexed[self.rows] & (counts.data >= config.story_profile_share * self.size[self.rows])
        # the inverted index: each keyword's indexed stories, largest first (`compiled.candidate_pairs`)
        posted, keyword = self.rows[in_index], counts.indices[in_index]
        order = np.lexsort((posted, -self.size[posted], keyword))
        self.posting, self.posting_keyword = posted[order].astype(np.int64), keyword[order].astype(np.int64)
        self.weighted = sparse.csr_matrix((idf[counts.indices] * counts.data, counts.indices, counts.indptr), shape=counts.shape)
        self.weight = np.bincount(self.rows, weights=self.weighted.data, minlength=stories)  # summed in keyword order
        # each keyword of a story over the day's other headlines that carry it, for `claims`
        elsewhere = document_frequency[counts.indices] - counts.data
        claimed = np.divide(counts.data, elsewhere, out=np.zeros(len(counts.data)), where=elsewhere > 0)
        self.claimed = sparse.csr_matrix((claimed, counts.indices, counts.indptr), shape=counts.shape)
        self.occurrences = np.bincount(self.rows, weights=counts.data, minlength=stories)
        # the matrices as the compiled loops read them, made once: made in every block's call, these
        # copies were most of numpy's astype, 3.3 s of a 1M day's last chunk's cluster stories
        # (`speed.py profile --cprofile "cluster stories"`, benchmarks/README.md, session 20)
        indptr, indices = counts.indptr.astype(np.int64), counts.indices.astype(np.int64)  # `weighted` and `claimed` share them
        self.arrays = {name: (indptr, indices, matrix.data) for name, matrix in
                       (("counts", counts), ("weighted", self.weighted), ("claimed", self.claimed))}

    def pairs(self, stories: np.ndarray, others: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs (story, larger story) with the story in the mask `stories` and the
        larger one in the mask `others` (None: any), all at once (`pair_blocks`)."""
        story, other = zip(*self.pair_blocks(stories, others))
        return np.concatenate(story), np.concatenate(other)

    def pair_blocks(self, stories: np.ndarray, others: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`pairs`, a block of stories at a time (at least one block): at most about
        `BLOCK_PAIRS` pairs each, by the stories' postings (an upper bound of their pairs).
        Read from the postings, largest story first, down to the size asked: the sparse product
        of the stories and the index it replaced made every pair sharing a keyword and dropped
        most (0.64 of the 1.86 CPU s of the attachment in the third chunk of a 90k run in chunks
        of 30k; 0.12-0.16 s then, benchmarks/README.md, session 12)."""
        from dedupe import compiled  # numba's import, only when stories are attached

        rows = np.flatnonzero(stories & (self.weight > 0))
        posted = slice(None) if others is None else others[self.posting]  # a few others: their postings alone
        posting, keyword = self.posting[posted], self.posting_keyword[posted]
        posting_length = np.bincount(keyword, minlength=self.counts.shape[1])
        start = np.concatenate([[0], np.cumsum(posting_length)]).astype(np.int64)
        bound = np.cumsum(np.bincount(self.rows, weights=posting_length[self.counts.indices], minlength=len(self.size))[rows])
        cuts = np.searchsorted(bound, np.arange(BLOCK_PAIRS, bound[-1] if rows.size else 0, BLOCK_PAIRS), side="right")
        indptr, indices, _ = self.arrays["counts"]
        for block in np.split(rows, cuts):
            ratio = float(self.config.story_attach_size_ratio)
            yield minhash.per_item_on_threads(lambda rows: compiled.candidate_pairs(indptr, indices, start, posting, rows, self.size, ratio), block)

    def best_of(self, stories: np.ndarray, others: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`best` of `pairs(stories, others)`, decided a block of pairs at a time
        (`pair_blocks`): a story's best depends on its own pairs alone, and the pairs of a round 0
        over a whole 1M day at once (a run in chunks matches its stories in its last chunk), with
        what `best` makes of them, took several GB."""
        parts = [self.best(story, other) for story, other in self.pair_blocks(stories, others)]
        if len(parts) == 1:  # the usual case below a 1M day: nothing to join
            return parts[0]
        return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]

    def claims(self, story: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Per pair: the share of the day's headlines carrying the story's keywords (outside the
        story, each keyword counted as often as the story carries it) that the other story holds.

        What a fit does not see: how many other headlines of the day carry the keyword. A story
        picked at random holds its own share of them (its size over the day's), so a keyword that
        grows common as the day grows ("Apple", or a chain walk's "new") claims less and less,
        while a name that one story holds most of ("Titanfall") keeps claiming it."""
        return np.round(_shared_weight(self.arrays["claimed"], self.arrays["counts"], story, other) / self.occurrences[story], 12)

    def best(self, story: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per story of the pairs: its best other among those that claim it
        (`story_attach_claim`; best fit, then larger, then smaller name) and that fit (-inf: none
        claims it), and the best fit among all its other others (-inf: none), a bound for the
        next round and run."""
        # rounded: fits equal in exact arithmetic (5 of 6 and 6 of 7 headlines...) differ in their
        # last bits, and a tie must go to the larger story, not to the rounding
        fit = np.round(
            _shared_weight(self.arrays["weighted"], self.arrays["counts"], story, other) / (self.weight[story] * self.size[other]), 12
        )
        least = self.config.story_attach_claim
        claimed = self.claims(story, other) >= least if least > 0 else np.ones(len(story), dtype=bool)
        from dedupe import compiled  # numba's import, only when stories are attached

        chosen, rest, stories = compiled.best_of_stories(len(self.size), story, other, fit, claimed, self.size)
        first = chosen[stories]  # the best that claims it: claimed first, then by fit
        return stories, other[first], np.where(claimed[first], fit[first], -np.inf), rest[stories]

    def decide(self, stories: np.ndarray) -> _Decisions:
        """The decisions of the stories in the mask `stories`, computed from this snapshot."""
        best_story, best_other, best_fit, rest = self.best_of(stories)
        moves = best_fit >= self.config.story_attach_fit
        size = len(self.size)
        target, fit, gap, others = np.full(size, -1), np.full(size, np.nan), np.full(size, np.nan), np.full(size, -np.inf)
        target[best_story[moves]] = best_other[moves]
        fit[best_story[moves]] = best_fit[moves]
        gap[best_story[moves]] = (best_fit - rest)[moves]
        others[best_story] = np.where(moves, rest, np.maximum(best_fit, rest))
        return _Decisions(target, fit, fit.copy(), gap, others, int(stories.sum()), self.smallest)


@np.errstate(invalid="ignore")  # -inf - -inf where a story has no candidate
def _after_moves(snapshot: _Snapshot, before: _Decisions, grown: np.ndarray) -> tuple[_Decisions, np.ndarray]:
    """The decisions of the stories that neither moved nor grew in the last round, and that mask.

    Such a story stayed: every fit it had was below the threshold (`before.rest` bounds them),
    and its fits to the stories that did not change are the same floats now (the same counts,
    sizes and IDF). Only its fits to the stories that grew are new: it moves to the best of
    those if that fits, else stays. (A changed smallest story changes the index: then none.)"""
    still = snapshot.alive & ~grown & (snapshot.smallest == before.smallest)
    story, other, fit, rest = snapshot.best_of(still, grown)
    size = len(snapshot.size)
    grown_fit, grown_other, grown_rest = np.full(size, -np.inf), np.full(size, -1), np.full(size, -np.inf)
    grown_fit[story], grown_other[story], grown_rest[story] = fit, other, rest
    moves = grown_fit >= snapshot.config.story_attach_fit
    beaten = np.maximum(before.rest, grown_rest)
    decided = _Decisions(
        np.where(moves, grown_other, -1), np.where(moves, grown_fit, np.nan), np.where(moves, grown_fit, np.nan),
        np.where(moves, grown_fit - beaten, np.nan), np.where(moves, beaten, np.maximum(beaten, grown_fit)), 0, snapshot.smallest,
    )
    return decided, still


class _Replay:
    """The last run's rounds, to replay against this run's stories.

    A story keeps its last decision in a round when it holds the same articles with the same
    keywords as then (so its counts, size and candidates are the same), the smallest story is
    the same size (so the index is), and the IDF change cannot alter the decision. For that, each
    story keeps an interval around its fit to its target, a lower bound on the gap between that
    fit and its fit to any other candidate, and an upper bound on the latter. With
    W = sum_k idf_k c_s(k) and fit = A / W, A = sum_k idf_k c_s(k) p_o(k), p_o(k) in [0, 1] the
    share of o's headlines with keyword k: if |idf'_k - idf_k| <= eta_k and E = sum_k eta_k c_s(k),
    then |A' - A| <= E and |W' - W| <= E, so |fit' - fit| = |(A' - A) - fit (W' - W)| / W'
    <= e (1 + fit) with e = E / (W - E), for W > E and IDF >= 0 (then 0 <= fit <= 1). The same
    steps with p_t - p_r in [-1, 1] bound a gap g = fit_t - fit_r: |g' - g| <= e (1 + g). The
    bounds widen so (plus `ATTACH_SLACK`) each run until they decide nothing; then the story's
    fits are computed again. Fits to stories whose articles changed are computed, exactly: the
    decision is the best of those and of the bounds, or, where they overlap, computed. With
    `story_attach_claim`, the bounds on the other fits cover every candidate, claiming or not,
    and a kept target's claim, which moves with every document frequency, is computed again."""

    def __init__(self, previous: Previous, members: pl.DataFrame, keywords: pl.DataFrame, names: pl.Series,
                 words: pl.Series, document_frequency: np.ndarray, idf: np.ndarray):
        check(previous.rounds, STORY_ROUNDS, "previous story rounds")
        old_names = previous.members["story"].unique()
        self.union = pl.concat([names, old_names]).unique().sort()  # first-round stories of both runs
        self.new_in_union = self.union.search_sorted(names).to_numpy().astype(np.int64)
        # first-round stories whose articles or their keywords changed
        rewritten = _rewritten(keywords, previous)
        placed = members.join(previous.members, on="article_id", how="full", coalesce=True, suffix="_old")
        moved = placed.filter(
            pl.col("story").ne_missing(pl.col("story_old")) | pl.col("article_id").is_in(rewritten["article_id"].implode())
        )
        changed = pl.concat([moved["story"], moved["story_old"].alias("story")]).drop_nulls().unique()
        self.changed_roots = np.zeros(len(self.union), dtype=bool)
        self.changed_roots[self.union.search_sorted(changed).to_numpy()] = True
        # the last run's IDF: this run's document frequencies less what the rewritten records changed
        counted = [
            rewritten.select(word=column).explode("word").drop_nulls().group_by("word").len().cast({"len": pl.Int64})
            for column in ("keywords", "keywords_old")
        ]
        delta = pl.concat([counted[0], counted[1].with_columns(-pl.col("len"))]).group_by("word").agg(pl.col("len").sum())
        delta = delta.join(words.to_frame("word").with_row_index("column"), on="word")  # words now gone: in no story
        old_frequency = document_frequency.copy()
        old_frequency[delta["column"].to_numpy()] -= delta["len"].to_numpy()
        self.idf_before = _idf(previous.keywords.height, old_frequency)
        self.eta = np.abs(idf - self.idf_before) * (1 + 1e-9) + 1e-12  # float error of the two logs, generously
        self.provable = bool(idf.size == 0 or min(idf.min(), self.idf_before.min()) >= 0)
        # the last run's rounds over the union of names, and its stories as they were, round by round
        self.last_round = int(previous.rounds["round"].max())
        self.rounds = {}
        for (number,), frame in previous.rounds.partition_by("round", as_dict=True).items():
            story = self.union.search_sorted(frame["story"]).to_numpy().astype(np.int64)
            moves = frame["target"].is_not_null().to_numpy()
            target = np.where(moves, self.union.search_sorted(frame["target"].fill_null(self.union[0])).to_numpy().astype(np.int64), -1)
            bounds = [frame[name].fill_null(np.nan).to_numpy() for name in ("target_low", "target_high", "target_gap", "rest_high")]
            self.rounds[int(number)] = (story, target, *bounds, float(frame["smallest"][0]))
        self.old_story = np.full(len(self.union), -1)
        old_in_union = self.union.search_sorted(old_names).to_numpy().astype(np.int64)
        self.old_story[old_in_union] = old_in_union

    @np.errstate(invalid="ignore")  # bounds of stories without a target are nan, and -inf - -inf is too
    def decide(self, round_number: int, snapshot: _Snapshot, parent: np.ndarray, among: np.ndarray) -> _Decisions:
        """This round's decisions of the stories in the mask `among`: the last run's where they
        are proven to hold, else computed. `parent` maps each first-round story to its story in
        this round; call once per round, in order."""
        stories, config = len(snapshot.size), snapshot.config
        story_u, target_u, low_u, high_u, gap_u, rest_u, smallest = self.rounds[min(round_number, self.last_round)]
        new_story = np.full(len(self.union), -1)
        new_story[self.new_in_union] = self.new_in_union[parent]
        # a story changed when a first-round story moved in or out of it, or changed itself
        flagged = (new_story != self.old_story) | self.changed_roots
        changed_u = np.zeros(len(self.union), dtype=bool)
        for side in (self.old_story[flagged], new_story[flagged]):
            changed_u[side[side >= 0]] = True
        changed = changed_u[self.new_in_union]
        # the last run's decision for each story of this run, where it had one
        row_of = np.full(len(self.union), -1)
        row_of[story_u] = np.arange(len(story_u))
        row = row_of[self.new_in_union]
        has = row >= 0
        row = np.maximum(row, 0)
        index_of = np.full(len(self.union), -1)
        index_of[self.new_in_union] = np.arange(stories)
        target_old = np.where(has, target_u[row], -1)
        target = np.where(target_old >= 0, index_of[np.maximum(target_old, 0)], -1)
        # kept: its target is the same story as then (else its fit there is computed, among the changed)
        kept = (target_old >= 0) & ~changed_u[np.maximum(target_old, 0)]
        # how far the IDF change can move each story's fits: e (1 + fit)
        counts, rows = snapshot.counts, snapshot.rows
        weight_before = np.bincount(rows, weights=self.idf_before[counts.indices] * counts.data, minlength=stories)
        error = np.bincount(rows, weights=self.eta[counts.indices] * counts.data, minlength=stories)
        keywordless = np.diff(counts.indptr) == 0  # never in a candidate pair
        room = weight_before - error
        bounded = keywordless | ((room > 0) & (error < room))
        e = np.where(keywordless, 0.0, error / np.where(room > 0, room, 1.0)) * (1 + 1e-9)
        high_before = np.minimum(np.where(has, high_u[row], 0.0), 1.0)
        low = np.where(kept, low_u[row] - e * (1 + high_before) - ATTACH_SLACK, np.nan)
        high = np.where(kept, high_u[row] + e * (1 + high_before) + ATTACH_SLACK, np.nan)
        gap = np.where(kept, gap_u[row] * (1 - e) - e - ATTACH_SLACK, np.nan)
        rest = np.where(has, rest_u[row], -np.inf)
        finite = np.isfinite(rest)
        rest = np.where(finite, rest + e * (1 + np.minimum(np.where(finite, rest, 0), 1)) + ATTACH_SLACK, -np.inf)
        fit = config.story_attach_fit
        provable = among & has & ~changed & bounded & (snapshot.smallest == smallest) & self.provable
        provable &= ~kept | ((low >= fit) & (gap > 0))  # a kept target still fits and beats every unchanged candidate
        if config.story_attach_claim > 0:  # and still claims it (the claim moves with every document frequency)
            held = np.flatnonzero(provable & kept)
            provable[held] = snapshot.claims(held, target[held]) >= config.story_attach_claim
        # the fits to changed stories, exactly; the decision is the best of those and of the bounds
        best_story, best_other, best_fit, other_fits = snapshot.best_of(provable, changed)
        changed_fit, changed_other, changed_rest = np.full(stories, -np.inf), np.full(stories, -1), np.full(stories, -np.inf)
        changed_fit[best_story], changed_other[best_story], changed_rest[best_story] = best_fit, best_other, other_fits
        keeps = kept & (changed_fit < low)
        wins = (changed_fit > np.where(kept, high, -np.inf)) & (changed_fit > rest) & (changed_fit >= fit)
        stays = ~kept & (changed_fit < fit) & (rest < fit)
        certain = provable & (keeps | wins | stays)
        beaten = np.maximum.reduce([rest, np.where(kept, high, -np.inf), changed_rest])
        gap = np.where(keeps, np.minimum(gap, low - changed_fit), np.where(wins, changed_fit - beaten, np.nan))
        rest = np.where(wins, beaten, np.maximum.reduce([rest, changed_fit, changed_rest]))
        target = np.where(wins, changed_other, np.where(keeps, target, -1))
        low, high = np.where(wins, changed_fit, np.where(keeps, low, np.nan)), np.where(wins, changed_fit, np.where(keeps, high, np.nan))
        carried = _Decisions(target, low, high, gap, rest, 0, snapshot.smallest)
        # the last run's stories, moved as it moved them, for the next round
        if round_number <= self.last_round:
            moving = target_u >= 0
            end = np.arange(len(self.union))
            end[story_u[moving]] = target_u[moving]
            while not np.array_equal(end[end], end):
                end = end[end]
            self.old_story = np.where(self.old_story >= 0, end[np.maximum(self.old_story, 0)], -1)
        return carried.where(certain, snapshot.decide(among & ~certain))


def _rewritten(keywords: pl.DataFrame, previous: Previous) -> pl.DataFrame:
    """article_id, keywords, keywords_old of the articles whose keywords (STORY_KEYWORDS) are not
    the `previous` run's, new and gone ones included. Where the caller names the articles whose
    keywords were made again (`Previous.remade`), only those are compared, and gone articles are
    looked for only if the counts say some are: comparing every list, the replay of a batch of 100
    against 200,000 records took 1.44 s, against 1.20 s (`benchmarks/incremental.py`, session 24)."""
    if previous.remade is None:
        with_words = keywords.join(previous.keywords, on="article_id", how="full", coalesce=True, suffix="_old")
    else:
        old = previous.keywords.rename({"keywords": "keywords_old"})
        made = keywords.filter(pl.col("article_id").is_in(previous.remade.implode())).join(old, on="article_id", how="left")
        if old.height + made["keywords_old"].null_count() == keywords.height:  # each other article kept its stored list
            with_words = made
        else:
            gone = old.join(keywords, on="article_id", how="anti").select(
                "article_id", pl.lit(None, keywords.schema["keywords"]).alias("keywords"), "keywords_old"
            )
            with_words = pl.concat([made, gone])
    return with_words.filter(pl.col("keywords").ne_missing(pl.col("keywords_old")))


def _keyword_incidence(keywords: pl.DataFrame) -> tuple[sparse.csr_matrix, pl.Series]:
    """A 0/1 CSR matrix, a row per STORY_KEYWORDS row and a column per distinct keyword in
    sorted order (the byte order `sorted` gave the sets of bytes this replaced)."""
    pairs = keywords.select(row=pl.int_range(pl.len(), dtype=pl.Int64), word="keywords").explode("word").drop_nulls("word")
    words = pairs["word"].unique().sort()
    columns = pairs.join(words.to_frame().with_row_index("column"), on="word", maintain_order="left")["column"].to_numpy()
    lengths = np.bincount(pairs["row"].to_numpy(), minlength=keywords.height)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    matrix = sparse.csr_matrix((np.ones(len(columns)), columns.astype(np.int64), indptr), shape=(keywords.height, len(words)))
    matrix.sort_indices()
    return matrix, words


LoopArrays = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A CSR matrix as the compiled loops read it: indptr and indices as int64, and its data."""


def _shared_weight(weighted: LoopArrays, counts: LoopArrays, story: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each pair: the sum over the story's keywords of their IDF-weighted count in the story
    times their count in the other story, summed in keyword order (the same sum every run, and the
    one the sparse product of the stories in pairs and the larger ones gave, entry by entry).
    Per pair (`compiled.pair_products`): the product also made every entry between a story and
    the larger stories of other pairs, then a sort and a lookup, most of the attachment's time."""
    from dedupe import compiled  # numba's import, only when stories are attached

    loop = partial(compiled.pair_products, *weighted, *counts)
    return minhash.per_item_on_threads(loop, story.astype(np.int64, copy=False), other.astype(np.int64, copy=False))
