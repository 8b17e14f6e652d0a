from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from scipy import sparse
from scipy.sparse import csgraph
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupe.cluster import (
    Previous,
    _shared_weight,
    attach_stories,
    average_linkage,
    components,
    duplicate_groups,
    knit_components,
    split_chains,
    story_components,
    story_ids,
    supported_pairs,
    without_weak_bridges,
)
from dedupe.config import Config
from dedupe import cluster, compiled, minhash, stories
from dedupe.minhash import duplicate_candidates
from dedupe.schema import GROUPS, PAIRS, STORY_KEYWORDS, STORY_ROUNDS
from dedupe.verify import verify_duplicates
from tests.conftest import SEEDS, cleaned_frame


def test_components_are_named_by_their_smallest_id() -> None:
    assert components(["d", "c", "b", "a", "e"], [("c", "d"), ("b", "d"), ("a", "e")]) == {
        "a": "a", "b": "b", "c": "b", "d": "b", "e": "a"
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=60), st.randoms())
def test_components_do_not_depend_on_order(edges: list[tuple[int, int]], random) -> None:
    ids = [str(i) for i in range(31)]
    pairs = [(str(a), str(b)) for a, b in edges]
    expected = components(ids, pairs)
    random.shuffle(ids)
    random.shuffle(pairs)
    assert components(ids, [(b, a) for a, b in pairs]) == expected


def groups_of(frame: pl.DataFrame) -> pl.DataFrame:
    candidates, sets = duplicate_candidates(frame, Config())
    pairs = verify_duplicates(frame, candidates, sets, Config())
    no_stories = pl.DataFrame(schema=PAIRS)
    return story_ids(frame, duplicate_groups(frame, pairs, Config()), no_stories, Config())


def test_duplicate_groups_have_one_canonical_article() -> None:
    groups = groups_of(cleaned_frame(SEEDS / "aeb-sample.jsonl"))
    assert dict(groups.schema) == GROUPS
    canonical = groups.filter(pl.col("duplicate_of").is_null())
    assert (canonical["article_id"] == canonical["duplicate_group"]).all()
    assert set(canonical["article_id"]) == set(groups["duplicate_group"])
    members = groups.filter(pl.col("duplicate_of").is_not_null())
    assert (members["duplicate_of"] == members["duplicate_group"]).all()
    # the four pages of the sample are four groups, with few versions left on their own
    sizes = groups.group_by("duplicate_group").len().sort("len", descending=True)
    assert sizes.head(4)["len"].sum() > 0.8 * groups.height


def test_shuffled_input_gives_the_same_groups_and_story_ids() -> None:
    frame = cleaned_frame(SEEDS / "aeb-sample.jsonl", SEEDS / "headlines-sample.csv")
    expected = groups_of(frame).sort("article_id")
    shuffled = groups_of(frame.sample(fraction=1.0, shuffle=True, seed=7)).sort("article_id")
    assert shuffled.equals(expected)


def test_small_stories_attach_to_a_much_larger_one_they_fit() -> None:
    # a story of ten Titanfall headlines, and two real headlines from news-aggregator
    big = [f"Titanfall launch headline number {i}" for i in range(10)]
    members = {"big": [f"b{i}" for i in range(10)], "small": ["s1"], "other": ["o1"]}
    members |= {f"unrelated{i}": [f"u{i}"] for i in range(40)}
    texts = {f"b{i}": text for i, text in enumerate(big)} | {f"u{i}": f"unrelated event {i}" for i in range(40)}
    texts |= {"s1": "Titanfall reviewed", "o1": "Sbarro files for bankruptcy"}
    keywords = pl.DataFrame(
        {"article_id": list(texts), "keywords": [sorted(word.decode() for word in minhash.keywords(text)) for text in texts.values()]},
        schema=STORY_KEYWORDS,
    )
    ends = dict(attach_stories(member_frame(members), keywords, Config()).ends.iter_rows())
    assert (ends["big"], ends["small"], ends["other"]) == ("big", "big", "other")
    # two stories of similar size stay apart, however much they share
    members = {"a": ["b0", "b1", "b2"], "b": ["b3", "b4", "b5", "b6"]}
    assert dict(attach_stories(member_frame(members), keywords, Config()).ends.iter_rows()) == {"a": "a", "b": "b"}


def member_frame(members: dict[str, list[str]]) -> pl.DataFrame:
    return pl.DataFrame([(article, story) for story, articles in members.items() for article in articles], schema=["article_id", "story"], orient="row")


def kept_edges(edges: list[tuple[str, str]], min_group: int) -> list[tuple[str, str]]:
    """`without_weak_bridges` over edges of names, numbered in sorted order."""
    ids = sorted({node for edge in edges for node in edge})
    a, b = (np.array([ids.index(edge[side]) for edge in edges], dtype=np.int64) for side in (0, 1))
    return [edge for edge, kept in zip(edges, without_weak_bridges(len(ids), a, b, min_group)) if kept]


def test_one_pair_does_not_join_two_well_knit_groups() -> None:
    ring = [("a1", "a2"), ("a2", "a3"), ("a3", "a4"), ("a4", "a5"), ("a5", "a1")]
    other = [(a.replace("a", "b"), b.replace("a", "b")) for a, b in ring]
    tail = [("a1", "t1")]
    kept = kept_edges([*ring, *other, *tail, ("a3", "b3")], min_group=5)
    assert ("a3", "b3") not in kept and ("a1", "t1") in kept
    assert len(kept) == len(ring) + len(other) + len(tail)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), max_size=40), st.integers(1, 4))
def test_bridges_are_the_edges_whose_removal_splits_the_graph(numbers: list[tuple[int, int]], min_group: int) -> None:
    """With min_group=1 every bridge is weak: what is dropped is exactly the edges whose removal
    (every copy, either way round) leaves more components; on small graphs with repeated and
    reversed pairs and self-loops. With any min_group, `knit_components` are the components
    (`components`, a union-find) of what `without_weak_bridges` keeps, each named by its smallest id."""
    edges = [(f"n{a:02d}", f"n{b:02d}") for a, b in numbers]
    ids = sorted({node for edge in edges for node in edge} | {"n99"})  # and a node without edges

    def count(kept: list[tuple[str, str]]) -> int:
        return len(set(components(ids, kept).values()))

    def without(edge: tuple[str, str]) -> list[tuple[str, str]]:
        return [other for other in edges if frozenset(other) != frozenset(edge)]

    bridges = {frozenset(edge) for edge in edges if count(without(edge)) > count(edges)}
    assert kept_edges(edges, min_group=1) == [edge for edge in edges if frozenset(edge) not in bridges]
    pairs = pl.DataFrame(edges, schema={"a": pl.String, "b": pl.String}, orient="row")
    knit = knit_components(pl.Series(ids), pairs, min_group)
    assert dict(zip(ids, knit)) == components(ids, kept_edges(edges, min_group))


def story_roots(edges: list[tuple[str, str]], support: float) -> dict[str, str]:
    """`story_components` over story pairs given as edges of group names, at `story_pair_support`."""
    ids = pl.Series(sorted({node for edge in edges for node in edge}), dtype=pl.String)
    pairs = pl.DataFrame(edges, schema={"article_id_a": pl.String, "article_id_b": pl.String}, orient="row")
    roots = story_components(ids, pairs, Config(story_pair_support=support))
    return dict(roots.iter_rows())


def clique(prefix: str, size: int) -> list[tuple[str, str]]:
    return [(f"{prefix}{i}", f"{prefix}{j}") for i in range(size) for j in range(i + 1, size)]


def test_chance_pairs_do_not_chain_two_dense_stories() -> None:
    """Three pairs between two stories of 8 groups that all match each other: no pair is a bridge,
    so single linkage and the weak-bridge cut join them; each pair's ends share none of their
    neighbours (support 2/9), so with the guard they stay two stories."""
    edges = [*clique("a", 8), *clique("b", 8), ("a0", "b0"), ("a1", "b1"), ("a2", "b2")]
    assert len(set(story_roots(edges, support=0.0).values())) == 1
    roots = story_roots(edges, support=0.3)
    assert {roots[f"a{i}"] for i in range(8)} == {"a0"} and {roots[f"b{i}"] for i in range(8)} == {"b0"}


def test_a_group_matching_two_large_stories_joins_one_of_them() -> None:
    """A headline matching a member of each of two stories of 16 groups (two bridges, each with a
    side of one group: the weak-bridge cut keeps both; support 2/sqrt(3 x 17) = 0.28 each) follows
    its best-supported pair alone. Next to stories of 8 its pairs reach 2/sqrt(3 x 9) = 0.38 and
    join them: the guard weighs a pair against its ends' other pairs, and small stories have few."""
    edges = [*clique("a", 16), *clique("b", 16), ("x", "a0"), ("x", "b0")]
    assert len(set(story_roots(edges, support=0.0).values())) == 1
    roots = story_roots(edges, support=0.3)
    assert roots["a1"] != roots["b1"] and roots["x"] == roots["a0"]  # equal support: the smaller neighbour
    small = [*clique("a", 8), *clique("b", 8), ("x", "a0"), ("x", "b0")]
    assert len(set(story_roots(small, support=0.3).values())) == 1


def test_well_supported_stories_are_not_split() -> None:
    """Two halves whose members match across many ways (their neighbourhoods overlap), a star of
    30 headlines that each match only the central one (no pair of it reaches 0.3: each leaf follows
    its one pair), a chain of three and a lone pair all stay whole."""
    halves = [*clique("a", 8), *clique("b", 8), *[(f"a{i}", f"b{j}") for i in range(4) for j in range(4)]]
    star = [("s", f"s{i:02d}") for i in range(30)]
    edges = [*halves, *star, ("c1", "c2"), ("c2", "c3"), ("p1", "p2")]
    roots = story_roots(edges, support=0.3)
    assert {roots[node] for edge in halves for node in edge} == {"a0"}
    assert {roots[node] for edge in star for node in edge} == {"s"}
    assert roots["c1"] == roots["c2"] == roots["c3"] and roots["p1"] == roots["p2"]


def test_a_chain_of_stories_is_split_and_a_dense_story_is_not() -> None:
    """Two stories of 25 groups that all match each other, joined by four headlines that each
    match five groups of both: every pair of those shares enough neighbours (support
    6/sqrt(11 x 29) = 0.34), so the pair guard keeps one component, as chance pairs chained the
    100k day. One step up, at 0.35, it falls into the two stories of 25: it is split. A story of
    60 groups matching at random (half of all pairs) and a story of 30 with a fringe of 6 single
    headlines stay whole: raised, they shed pieces, but never two of 20."""
    chain = [*clique("a", 25), *clique("b", 25)]
    chain += [(f"x{k}", f"{side}{i}") for k in range(4) for side in "ab" for i in range(5)]
    rng = np.random.default_rng(1)
    dense = [(f"d{i:02d}", f"d{j:02d}") for i in range(60) for j in range(i + 1, 60) if rng.random() < 0.5]
    fringe = [*clique("f", 30), *[(f"f{i}", f"p{i}") for i in range(6)]]
    edges = [*chain, *dense, *fringe]
    ids = pl.Series(sorted({node for edge in edges for node in edge}), dtype=pl.String)
    pairs = pl.DataFrame(edges, schema={"article_id_a": pl.String, "article_id_b": pl.String}, orient="row")
    unsplit = dict(story_components(ids, pairs, Config(story_split_min_groups=0)).iter_rows())
    assert len({unsplit[node] for edge in chain for node in edge}) == 1
    roots = dict(story_components(ids, pairs, Config()).iter_rows())
    assert {roots[f"a{i}"] for i in range(25)} == {"a0"} and {roots[f"b{i}"] for i in range(25)} == {"b0"}
    assert {roots[f"x{k}"] for k in range(4)} <= {"a0", "b0"}
    assert {roots[node] for edge in dense for node in edge} == {"d00"}
    assert {roots[node] for edge in fringe for node in edge} == {"f0"}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 19), st.integers(0, 19)), max_size=60),
    st.floats(0.0, 0.9),
    st.integers(1, 6),
)
def test_split_stories_refine_the_knit_components(numbers: list[tuple[int, int]], support: float, piece: int) -> None:
    """Whatever the graph, splitting only cuts: each story lies inside one knit component, is named
    by its smallest node, and a component that splits leaves at least two pieces of `piece` nodes."""
    a, b = (np.array([pair[side] for pair in numbers], dtype=np.int64) for side in (0, 1))
    ids = pl.Series([f"n{i:02d}" for i in range(20)])
    pairs = pl.DataFrame({"a": ids.gather(a), "b": ids.gather(b)})
    base = knit_components(ids, pairs, 5, support).to_list()
    story = split_chains(20, a, b, 5, support, piece)
    assert all(story[node] == min(np.flatnonzero(story == story[node])) for node in range(20))
    for node in range(20):
        assert base[node] == base[story[node]]  # the story's name lies in the node's component
    for root in set(base):
        inside = [node for node in range(20) if base[node] == root]
        sizes = np.bincount(story[inside], minlength=20)
        if len(set(story[inside])) > 1:
            assert (sizes >= piece).sum() >= 2


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(3, 8), min_size=2, max_size=5),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(1, 4)), max_size=8),
    st.lists(st.tuples(st.integers(0, 47), st.integers(0, 47)), max_size=20),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 0.6),
    st.integers(1, 5),
)
def test_a_split_that_counts_again_only_where_a_level_cut_gives_the_split_counted_from_scratch(
    blocks: list[int], linkers: list[tuple[int, int, int]], numbers: list[tuple[int, int]], seed: int, support: float,
    piece: int,
) -> None:
    """`split_chains` counts each level's shared neighbours again only for edges whose ends lost a
    neighbour since the last level (`_Levels`): at every level, the counts of each edge of that
    level's graph and the pieces are those counted and knit from scratch (`_knit`), on dense
    blocks chained by linking nodes that match a few nodes of two blocks (as chance headlines
    chain stories: a level's cut takes shared neighbours from the pairs it keeps) and chance pairs
    (fails when the ends of the cut pairs are not counted again)."""
    rng, start, edges, members = np.random.default_rng(seed), 0, list(numbers), []
    for size in blocks:
        edges += [(start + i, start + j) for i in range(size) for j in range(i + 1, size) if rng.random() < 0.8]
        members.append(np.arange(start, start + size))
        start += size
    for linker, (first, second, count) in enumerate(linkers):
        for block in (first, second):
            edges += [(40 + linker, int(node)) for node in members[block % len(members)][:count]]
    a, b = (np.array([edge[side] for edge in edges], dtype=np.int64) for side in (0, 1))
    knit, levels = cluster._Levels.knit, []

    def counted_from_scratch(self: cluster._Levels, inside: np.ndarray, group: int, least: float) -> np.ndarray:
        pieces = knit(self, inside, group, least)
        low, high = self.low[inside], self.high[inside]
        scratch = cluster._shared_neighbours(cluster._closed_neighbourhoods(48, low, high), low, high)
        assert least == 0 or np.array_equal(self.shared[inside], scratch)  # without support, nothing is counted
        levels.append(np.array_equal(pieces, cluster._knit(48, low, high, group, least)))
        return pieces

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cluster._Levels, "knit", counted_from_scratch)
        split_chains(48, a, b, 3, support, piece)
    assert all(levels)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), max_size=40), st.floats(0.05, 1.0))
def test_supported_pairs_never_join_what_the_supported_pairs_keep_apart(numbers: list[tuple[int, int]], support: float) -> None:
    """Whatever the graph, the kept edges are: every distinct edge of at least `support`, and one
    edge per node with none, so the components are those of the supported edges with each
    unsupported node hung on one of them (never a node joining two)."""
    a, b = (np.array([pair[side] for pair in numbers], dtype=np.int64) for side in (0, 1))
    kept_a, kept_b = supported_pairs(15, a, b, support)
    ids = [f"n{i:02d}" for i in range(15)]
    strong = [(ids[x], ids[y]) for x, y in zip(kept_a, kept_b) if x < y]  # a node's own pick is counted below
    kept = [(ids[x], ids[y]) for x, y in zip(kept_a, kept_b)]
    given_edges = {frozenset((ids[x], ids[y])) for x, y in numbers if x != y}
    assert all(frozenset(edge) in given_edges for edge in kept)  # no new edge, no self-loop
    with_edges = {node for edge in given_edges for node in edge}
    assert {node for edge in kept for node in edge} == with_edges  # every node with a pair keeps one
    assert len(strong) <= len(kept)
    # components of the kept edges refine those of the given ones
    whole, part = components(ids, [tuple(edge) for edge in given_edges]), components(ids, kept)
    assert all(whole[x] == whole[y] for x, y in part.items())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), max_size=60), st.floats(0.05, 1.0))
def test_supported_pairs_are_those_whose_closed_neighbourhoods_overlap_enough(numbers: list[tuple[int, int]], support: float) -> None:
    """The support of each edge counted with sets, by its definition: the kept edges are those of
    at least `support`, then for each node without one its best edge (highest support, then
    smallest neighbour); in hub-heavy graphs, where the compiled count searches the longer row."""
    numbers = numbers + [(0, node) for node in range(1, 15, 2)]  # a hub: rows of very different lengths
    closed = {node: {node} for node in range(15)}
    for x, y in numbers:
        closed[x].add(y)
        closed[y].add(x)
    edges = sorted({(min(x, y), max(x, y)) for x, y in numbers if x != y})
    score = {(x, y): len(closed[x] & closed[y]) / np.sqrt(len(closed[x]) * len(closed[y])) for x, y in edges}
    strong = [edge for edge in edges if score[edge] >= support]
    with_strong = {node for edge in strong for node in edge}
    picks = []
    for node in sorted({node for edge in edges for node in edge} - with_strong):
        options = [(score[edge], edge[1] if edge[0] == node else edge[0]) for edge in edges if node in edge]
        picks.append((node, min(options, key=lambda option: (-option[0], option[1]))[1]))
    a, b = (np.array([pair[side] for pair in numbers], dtype=np.int64) for side in (0, 1))
    kept_a, kept_b = supported_pairs(15, a, b, support)
    assert list(zip(kept_a.tolist(), kept_b.tolist())) == strong + picks
    with threads_for_any_size():
        threaded = supported_pairs(15, a, b, support)
    assert np.array_equal(threaded[0], kept_a) and np.array_equal(threaded[1], kept_b)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.lists(st.tuples(st.integers(0, 39), st.integers(0, 39)), max_size=80))
def test_closed_neighbourhoods_and_smallest_nodes_of_components_are_those_of_scipy(nodes: int, numbers: list[tuple[int, int]]) -> None:
    """The compiled closed neighbourhoods (`compiled.closed_neighbourhoods`) are the rows of
    scipy's CSR matrix of the edges both ways plus the diagonal, sorted; the compiled union-find
    (`compiled.smallest_of_components`) gives each node the smallest node of its scipy connected
    component, whatever the edges' order, repeats and loops (fails with a root that is not the
    smaller node, or rows filled in another order)."""
    a, b = (np.array([pair[side] % nodes for pair in numbers], dtype=np.int64) for side in (0, 1))
    low, high = cluster._distinct_edges(nodes, a, b)
    ends, others = np.concatenate([low, high, np.arange(nodes)]), np.concatenate([high, low, np.arange(nodes)])
    expected = sparse.csr_matrix((np.ones(len(ends)), (ends, others)), shape=(nodes, nodes))
    expected.sort_indices()
    indptr, indices = compiled.closed_neighbourhoods(nodes, low, high)
    assert np.array_equal(indptr, expected.indptr) and np.array_equal(indices, expected.indices)
    label = csgraph.connected_components(sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(nodes, nodes)), directed=False)[1]
    smallest = np.array([np.flatnonzero(label == label[node]).min() for node in range(nodes)])
    assert np.array_equal(compiled.smallest_of_components(nodes, a, b), smallest)


@contextmanager
def threads_for_any_size() -> Iterator[None]:
    """The compiled loops of the story steps split over two threads whatever their size
    (`minhash.per_item_on_threads`): each thread's piece a few items, or none."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(minhash, "THREADED_ITEMS", 0)
        patch.setattr(minhash, "THREADS", 2)
        yield


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 12))
def test_the_fits_of_pairs_are_the_floats_of_the_sparse_product(seed: int, stories: int, words: int) -> None:
    """`_shared_weight` per pair is the entry of the sparse product of the two matrices, bit for
    bit (both sum in keyword order from 0.0), with IDF weights of either sign and zero entries;
    and `compiled.best_of_stories` (`_Snapshot.best`) picks, per story, what the sort by
    (claimed, fit, size, other) it replaced put first, with the best of the rest beside it, among
    many equal fits."""
    rng = np.random.default_rng(seed)
    counts = sparse.random(stories, words, density=0.4, random_state=rng, data_rvs=lambda n: rng.integers(1, 4, n).astype(float)).tocsr()
    counts.sort_indices()
    weights = rng.choice([-0.5, 0.0, 0.3, 0.7, 1.1, np.log(7 / 3)], words)
    weighted = sparse.csr_matrix((weights[counts.indices] * counts.data, counts.indices, counts.indptr), shape=counts.shape)
    story, other = (rng.integers(0, stories, 3 * stories) for _ in range(2))
    pairs = np.unique(np.stack([story, other]), axis=1)
    story, other = pairs[0], pairs[1]
    product = (weighted @ counts.T).toarray()
    arrays = [(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data) for matrix in (weighted, counts)]
    assert np.array_equal(_shared_weight(*arrays, story, other), product[story, other] + 0.0)
    with threads_for_any_size():
        assert np.array_equal(_shared_weight(*arrays, story, other), product[story, other] + 0.0)
    fit = rng.choice([0.0, 0.1, 0.25, 0.5], len(story))  # ties everywhere
    claimed = rng.random(len(story)) < 0.7
    size = rng.integers(1, 4, stories).astype(float)
    order = np.lexsort((other, -size[other], -fit, ~claimed, story))
    s, o, f, c = story[order], other[order], fit[order], claimed[order]
    first = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]])) if s.size else np.empty(0, dtype=np.int64)
    rest = np.maximum.reduceat(np.where(np.isin(np.arange(len(s)), first[c[first]]), -np.inf, f), first) if s.size else np.empty(0)
    chosen, chosen_rest, present = compiled.best_of_stories(stories, story, other, fit, claimed, size)
    assert np.array_equal(present, s[first])
    assert np.array_equal(other[chosen[present]], o[first])
    assert np.array_equal(claimed[chosen[present]], c[first])
    assert np.array_equal(chosen_rest[present], rest)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 12), st.sampled_from([1.0, 2.0, 5.0]))
def test_candidate_pairs_are_the_stories_sharing_an_indexed_keyword_with_a_larger_one(
    seed: int, members: int, words: int, ratio: float
) -> None:
    """`_Snapshot.pairs` (`compiled.candidate_pairs`, postings read largest first down to the
    size asked) gives each pair of a story and a story at least `story_attach_size_ratio` times
    its size that holds one of its keywords in its profile once, as counted here by definition,
    for any masks of stories and others, with keywordless headlines and IDF weights of 0."""
    rng = np.random.default_rng(seed)
    stories = int(rng.integers(1, members + 1))
    story_of = np.sort(rng.integers(0, stories, members))
    incidence = sparse.random(members, words, density=0.3, random_state=rng, data_rvs=lambda n: np.ones(n)).tocsr()
    incidence.sort_indices()
    frequency = np.asarray(incidence.sum(axis=0)).ravel()
    idf = rng.choice([0.0, 0.4, 1.3], words)
    config = Config(story_attach_size_ratio=ratio)
    snapshot = cluster._Snapshot(story_of, incidence, idf, frequency, stories, config)
    counts = snapshot.counts.toarray()
    size = np.bincount(story_of, minlength=stories)
    indexed = size >= ratio * size[size > 0].min()
    profile = indexed[:, None] & (counts >= config.story_profile_share * size[:, None]) & (counts > 0)
    for mask, others in [(size > 0, None), (rng.random(stories) < 0.5, rng.random(stories) < 0.5)]:
        allowed = np.ones(stories, dtype=bool) if others is None else others
        expected = {
            (s, o) for s in np.flatnonzero(mask) for o in np.flatnonzero(allowed)
            if s != o and size[o] >= ratio * size[s] and snapshot.weight[s] > 0 and (profile[o] & (counts[s] > 0)).any()
        }
        story, other = snapshot.pairs(mask, others)
        assert len(story) == len(expected) and set(zip(story.tolist(), other.tolist())) == expected
        with threads_for_any_size():
            threaded = snapshot.pairs(mask, others)
        assert np.array_equal(threaded[0], story) and np.array_equal(threaded[1], other)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cluster, "BLOCK_PAIRS", 2)  # a story or two per block
            blocks = list(snapshot.pair_blocks(mask, others))
        assert all(np.all(np.diff(block[0]) >= 0) for block in blocks)  # each block's stories together, in order
        assert np.array_equal(np.concatenate([block[0] for block in blocks]), story)
        assert np.array_equal(np.concatenate([block[1] for block in blocks]), other)
        assert len(blocks) >= len(expected) / 2  # the postings bound the pairs: blocks of two or fewer


def brute_force_average_linkage(weights: dict[str, int], similarity: dict[frozenset[str], float], threshold: float) -> dict[str, str]:
    """Textbook UPGMA over the full matrix (pairs not given count as 0), for reference."""
    clusters = {node: [node] for node in weights}

    def mean(a: str, b: str) -> float:
        total = sum(similarity.get(frozenset((x, y)), 0.0) * weights[x] * weights[y] for x in clusters[a] for y in clusters[b])
        return total / (sum(weights[x] for x in clusters[a]) * sum(weights[y] for y in clusters[b]))

    while len(clusters) > 1:
        best, a, b = max((mean(a, b), a, b) for a in clusters for b in clusters if a < b)
        ties = sorted((a, b) for a in clusters for b in clusters if a < b and mean(a, b) == best)
        if best < threshold:
            break
        a, b = ties[0]
        clusters[a] += clusters.pop(b)
    return {node: name for name, members in clusters.items() for node in members}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(1, 3), min_size=2, max_size=9),
    st.dictionaries(st.tuples(st.integers(0, 8), st.integers(0, 8)), st.integers(-2, 8), max_size=30),
    st.sampled_from([0.125, 0.25, 0.5]),
    st.randoms(),
)
def test_average_linkage_is_upgma_and_order_free(sizes: list[int], raw_edges: dict, threshold: float, random) -> None:
    weights = {f"n{i}": size for i, size in enumerate(sizes)}
    similarity = {
        frozenset((f"n{a}", f"n{b}")): value / 8  # eighths add up exactly, so ties are real ties
        for (a, b), value in raw_edges.items()
        if a != b and a < len(sizes) and b < len(sizes)
    }
    edges = [(*sorted(pair), value) for pair, value in similarity.items()]
    expected = brute_force_average_linkage(weights, similarity, threshold)
    assert average_linkage(weights, edges, threshold) == expected
    random.shuffle(edges)
    assert average_linkage(weights, [(b, a, s) for a, b, s in edges], threshold) == expected


def test_average_linkage_counts_unknown_pairs_as_unrelated() -> None:
    # a and c are close, b is close to a only: once a+c merge, b's mean link to them is 0.45
    edges = [("a", "c", 0.95), ("a", "b", 0.9)]
    assert average_linkage({"a": 1, "b": 1, "c": 1}, edges, 0.5) == {"a": "a", "b": "b", "c": "a"}
    assert average_linkage({"a": 1, "b": 1, "c": 1}, edges, 0.4) == {"a": "a", "b": "a", "c": "a"}


def keyword_frame(texts: dict[str, list[str]]) -> pl.DataFrame:
    return pl.DataFrame({"article_id": list(texts), "keywords": [sorted(set(words)) for words in texts.values()]}, schema=STORY_KEYWORDS)


def test_a_batch_that_moves_the_idf_across_the_threshold_is_caught_by_the_replay() -> None:
    """A story whose fit to a larger one is just above `story_attach_fit`; a batch of unrelated
    articles makes its one shared keyword commoner, and the fit drops below. Neither story's
    articles change, so only the IDF bound can tell the last decision no longer holds."""
    big = {f"b{i}": ["alpha", f"theme{i}"] for i in range(10)}
    small = {"s": ["alpha", *(f"rare{i}" for i in range(9))]}
    filler = {f"f{i}": [f"filler{i}", f"other{i}"] for i in range(180)}
    before_texts = big | small | filler
    members = {"big": list(big), "small": ["s"]} | {article: [article] for article in filler}
    before = attach_stories(member_frame(members), keyword_frame(before_texts), Config())
    assert dict(before.ends.iter_rows())["small"] == "big"
    batch = {f"n{i}": ["alpha", f"news{i}"] for i in range(5)}
    after_members = member_frame(members | {article: [article] for article in batch})
    after_keywords = keyword_frame(before_texts | batch)
    single = attach_stories(after_members, after_keywords, Config())
    assert dict(single.ends.iter_rows())["small"] == "small"  # the batch did flip it
    previous = Previous(member_frame(members), keyword_frame(before_texts), before.rounds)
    replayed = attach_stories(after_members, after_keywords, Config(), previous)
    assert replayed.ends.equals(single.ends)
    assert replayed.rounds.select("round", "story", "target").equals(single.rounds.select("round", "story", "target"))
    assert 0 < replayed.computed < single.computed  # the filler stories were carried over


CLAIMING = Config(story_attach_claim=0.06)


def test_a_keyword_many_stories_carry_does_not_attach_and_a_name_one_story_holds_does() -> None:
    """A story of ten headlines carries "alpha" and "titanfall"; so do 200 single headlines of
    other events ("alpha" only) in a day of 2,000. A headline sharing "alpha" fits the story (IDF
    log(2000/211) = 2.2 of its weight 2.2 + 6.9, so 0.25) and attaches without the claim; the
    story holds 10 of the 210 other headlines carrying it: claim 10/210 / 2 = 0.02, refused. A
    headline sharing "titanfall", which only the story carries, claims 10/10 / 2 = 0.5: kept."""
    texts = {f"b{i}": ["alpha", "titanfall", f"theme{i}"] for i in range(10)}
    texts |= {f"c{i}": ["alpha", f"other{i}"] for i in range(200)} | {f"f{i}": [f"filler{i}"] for i in range(1788)}
    texts |= {"chance": ["alpha", "rare"], "real": ["titanfall", "reviewed"]}
    members = {"big": [f"b{i}" for i in range(10)]} | {article: [article] for article in texts if article[0] != "b"}
    frame, keywords = member_frame(members), keyword_frame(texts)
    ends = dict(attach_stories(frame, keywords, Config()).ends.iter_rows())
    assert (ends["chance"], ends["real"]) == ("big", "big")
    ends = dict(attach_stories(frame, keywords, CLAIMING).ends.iter_rows())
    assert (ends["chance"], ends["real"]) == ("chance", "big")
    assert sum(end == "big" for story, end in ends.items() if story.startswith("c")) == 0


def test_a_batch_that_moves_a_claim_across_the_threshold_is_caught_by_the_replay() -> None:
    """A headline claimed by a story just above `story_attach_claim`; a batch of other events'
    headlines carrying its keyword takes the claim below. Neither story changes, and the batch
    barely moves the IDF: only the claim, computed again, tells the last decision no longer holds."""
    texts = {f"b{i}": ["alpha", f"theme{i}"] for i in range(10)} | {"s": ["alpha", "beta"]}
    texts |= {f"c{i}": ["alpha", f"other{i}"] for i in range(60)} | {f"f{i}": [f"filler{i}"] for i in range(3000)}
    members = {"big": [f"b{i}" for i in range(10)], "small": ["s"]}
    members |= {article: [article] for article in texts if article[0] in "cf"}
    before = attach_stories(member_frame(members), keyword_frame(texts), CLAIMING)
    assert dict(before.ends.iter_rows())["small"] == "big"  # claim 10/70 / 2 = 0.071
    batch = {f"n{i}": ["alpha", f"news{i}"] for i in range(20)}
    after_members = member_frame(members | {article: [article] for article in batch})
    after_keywords = keyword_frame(texts | batch)
    single = attach_stories(after_members, after_keywords, CLAIMING)
    assert dict(single.ends.iter_rows())["small"] == "small"  # claim 10/90 / 2 = 0.056
    previous = Previous(member_frame(members), keyword_frame(texts), before.rounds)
    replayed = attach_stories(after_members, after_keywords, CLAIMING, previous)
    assert replayed.ends.equals(single.ends)
    assert replayed.rounds.select("round", "story", "target").equals(single.rounds.select("round", "story", "target"))


def test_a_story_that_stayed_moves_once_a_story_it_fits_has_grown() -> None:
    """Round 0 attaches two single articles to a story of 8; only then is it five times the
    size of a story of 2, which fits it and moves there in round 1."""
    texts = {f"o{i}": ["gamma", f"own{i}"] for i in range(8)} | {"x1": ["gamma", "one"], "x2": ["gamma", "two"]}
    texts |= {"m1": ["gamma", "mid1"], "m2": ["gamma", "mid2"]} | {f"f{i}": [f"filler{i}"] for i in range(40)}
    members = {"a": [f"o{i}" for i in range(8)], "x1": ["x1"], "x2": ["x2"], "m": ["m1", "m2"]}
    members |= {f"f{i}": [f"f{i}"] for i in range(40)}
    attached = attach_stories(member_frame(members), keyword_frame(texts), Config())
    ends = dict(attached.ends.iter_rows())
    assert (ends["x1"], ends["x2"], ends["m"]) == ("a", "a", "a")
    moved = attached.rounds.filter(pl.col("target").is_not_null()).select("round", "story").rows()
    assert sorted(moved) == [(0, "x1"), (0, "x2"), (1, "m")]
    # and a story that grew moves on: two articles bring "delta" into a story of 5, which then fits a story of 40
    texts = {f"b{i}": ["delta", f"own{i}"] for i in range(40)} | {f"g{i}": ["epsilon", f"mine{i}"] for i in range(5)}
    texts |= {"y1": ["delta", "epsilon"], "y2": ["delta", "epsilon"]} | {f"f{i}": [f"filler{i}"] for i in range(400)}
    members = {"a": [f"b{i}" for i in range(40)], "g": [f"g{i}" for i in range(5)], "y1": ["y1"], "y2": ["y2"]}
    members |= {f"f{i}": [f"f{i}"] for i in range(400)}
    attached = attach_stories(member_frame(members), keyword_frame(texts), Config())
    moved = attached.rounds.filter(pl.col("target").is_not_null()).select("round", "story", "target").rows()
    assert sorted(moved) == [(0, "y1", "g"), (0, "y2", "g"), (1, "g", "a")]


def random_stories(seed: int, articles: int, first: int = 0) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(story -> articles, article -> keywords): a few large stories around a theme of words, some
    middle-sized ones and many single articles, over a small vocabulary so that fits crowd
    around the threshold and tie, and stories move in later rounds."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[str]] = {}
    texts: dict[str, list[str]] = {}
    for number in range(first, first + articles):
        article = f"a{number:04d}"
        draw = rng.random()
        story = f"s{rng.integers(0, 6):02d}" if draw < 0.4 else f"m{rng.integers(0, 10):02d}" if draw < 0.6 else f"t{number:04d}"
        theme = [f"w{int(story[1:]) % 6}", f"w{(int(story[1:]) + 1) % 6}"] if story[0] != "t" else []
        words = [f"w{word}" for word in rng.integers(0, 14, rng.integers(1, 5))]
        texts[article] = theme[: rng.integers(0, 3)] + words
        members.setdefault(story, []).append(article)
    return members, texts


@pytest.mark.parametrize("claim", [0.0, 0.1])
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(0, 4), st.booleans())
def test_replayed_attachment_is_the_one_of_a_single_run(
    claim: float, seed: int, added: int, rewritten: int, unattached: bool
) -> None:
    """Three runs, each replaying the last one's rounds, against one run over all articles: new
    articles in old and new stories, articles whose keywords changed, articles counted by the IDF
    but in no story (rejected records). The same ends and the same decision in every round, with
    the attachment's claim off and on (`story_attach_claim`: then the claims move with the
    document frequencies too), and with the replay told which articles' keywords were made again
    (`Previous.remade`: it compares only those)."""
    config = Config(story_attach_claim=claim)
    members, texts = random_stories(seed, 60)
    runs = []
    for step in range(3):
        made: list[str] = []
        if step:
            more_members, more_texts = random_stories(seed + step, added, first=1000 * step)
            for story, articles in more_members.items():
                members.setdefault(story, []).extend(articles if not unattached or step != 2 else articles[:-1])
            texts |= more_texts
            made = [*more_texts, *sorted(texts)[:rewritten]]
            for article in sorted(texts)[:rewritten]:
                texts[article] = [*texts[article], f"w{(step + seed) % 14}"]
        frame = member_frame({story: list(articles) for story, articles in members.items()})
        runs.append((frame, keyword_frame(dict(texts)), pl.Series(made, dtype=pl.String)))
    previous = None
    for frame, keywords, made in runs:
        single = attach_stories(frame, keywords, config)
        replayed = attach_stories(frame, keywords, config, previous)
        assert replayed.ends.sort("story").equals(single.ends.sort("story"))
        assert replayed.rounds.select("round", "story", "target").equals(single.rounds.select("round", "story", "target"))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cluster, "BLOCK_PAIRS", 3)  # a story or a few per block of pairs decided
            assert attach_stories(frame, keywords, config, previous).rounds.equals(replayed.rounds)
        if previous is not None:
            assert attach_stories(frame, keywords, config, replace(previous, remade=made)).rounds.equals(replayed.rounds)
        previous = Previous(frame, keywords, replayed.rounds)


def test_keywords_compared_where_made_again_are_the_changes_of_a_full_comparison() -> None:
    """Told which articles' keywords were made again (`Previous.remade`), the replay compares
    those alone, and finds the same changes as comparing every list: a changed list, a new
    article, and an article gone since the last run (looked for when the counts say so)."""
    before = keyword_frame({"a": ["x"], "b": ["y"], "c": ["z"], "e": ["v"]})
    now = keyword_frame({"a": ["x"], "c": ["z", "w"], "d": ["q"], "e": ["v"]})
    rounds = pl.DataFrame(schema=STORY_ROUNDS)
    whole = cluster._rewritten(now, Previous(member_frame({}), before, rounds)).sort("article_id")
    told = cluster._rewritten(now, Previous(member_frame({}), before, rounds, pl.Series(["c", "d", "e"]))).sort("article_id")
    assert told.equals(whole) and whole["article_id"].to_list() == ["b", "c", "d"]
    without_gone = keyword_frame({"a": ["x"], "b": ["y"], "c": ["z", "w"], "d": ["q"], "e": ["v"]})
    told = cluster._rewritten(without_gone, Previous(member_frame({}), before, rounds, pl.Series(["c", "d"])))
    assert told.sort("article_id")["article_id"].to_list() == ["c", "d"]


def test_an_unchanged_history_replays_without_computing_fits() -> None:
    """No article changed: every decision but the exact ties is carried over."""
    members, texts = random_stories(7, 200)
    frame, keywords = member_frame(members), keyword_frame(texts)
    first = attach_stories(frame, keywords, Config())
    again = attach_stories(frame, keywords, Config(), Previous(frame, keywords, first.rounds))
    assert again.ends.equals(first.ends) and again.rounds.equals(again.rounds)
    ties = first.rounds.filter(pl.col("target_gap") == 0).height
    assert again.computed == ties and again.carried == first.computed + first.carried - ties


HEADLINE_PIECES = st.sampled_from(
    ["Apple", "the", "THE", "iPhone6", "x_y", "’s", "Straße", "café", "ΣΟΦΙΑ", "Ünal", "co-op", "U.S.", "and", "2026", " ", "  ", "!", "\u0301"]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(HEADLINE_PIECES, max_size=9).map("".join)), max_size=12),
       st.lists(st.sampled_from([None, "https://news.example/2026/apple-unveils-new-phone-today", "https://x.example/a"]), max_size=12))
def test_story_keywords_are_each_story_text_s_keywords_sorted(headlines: list[str | None], urls: list[str | None]) -> None:
    """The keywords of ASCII story texts, found by polars, are `minhash.keywords`' (Python's
    casefold and `\\w`); texts with other characters take `minhash.keywords` itself; in the
    records' order, sorted, with the URL slug's words, and empty for a record without a headline."""
    urls = (urls + [None] * len(headlines))[: len(headlines)]
    cleaned = pl.DataFrame({"article_id": [f"a{n}" for n in range(len(headlines))], "headline": headlines, "url": urls},
                           schema={"article_id": pl.String, "headline": pl.String, "url": pl.String})
    expected = [sorted(word.decode() for word in minhash.keywords(stories.story_text(h, u))) for h, u in zip(headlines, urls)]
    found = cluster.story_keywords(cleaned)
    assert found["article_id"].to_list() == cleaned["article_id"].to_list()
    assert found["keywords"].to_list() == expected
