from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz, process

from dedupe.config import Config
from dedupe.minhash import ShingleSets, duplicate_candidates
from dedupe.schema import CANDIDATES, PAIRS
from dedupe.verify import (
    overlap,
    semantic_story_pairs,
    sorted_words,
    strong_pairs,
    token_set_similarities,
    verify_duplicates,
    verify_stories,
)
from tests.conftest import SEEDS, cleaned_frame


def test_overlap_is_exact_jaccard_and_containment() -> None:
    candidates = pl.DataFrame({"article_id_a": ["a"], "article_id_b": ["b"], "level": ["text"]}, schema=CANDIDATES)
    scored = overlap(candidates, ShingleSets.from_sets({"a": {b"1", b"2"}, "b": {b"1", b"2", b"3", b"4"}}))
    assert scored.select("jaccard", "containment").row(0) == (0.5, 1.0)


hashes = st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 40), max_size=60)  # small values repeat and collide


@settings(max_examples=150, deadline=None)
@given(st.lists(hashes, min_size=2, max_size=8), st.data())
def test_overlap_counts_what_the_sets_share(sets: list[list[int]], data: st.DataObject) -> None:
    """The compiled merge against Python's set arithmetic: repeated, unsorted and empty sets, and
    ids in several pairs (each set is sorted once, then merged with each partner); sets sorted
    beforehand (`ShingleSets.sorted_sets`), also cut and put together again, give the same."""
    ids = [f"r{i}" for i in range(len(sets))]
    shingle_sets = ShingleSets(ids, np.array([h for s in sets for h in s], dtype=np.uint32), np.array([len(s) for s in sets]))
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids)).filter(lambda p: p[0] != p[1]), max_size=20))
    candidates = pl.DataFrame(
        {"article_id_a": [a for a, _ in pairs], "article_id_b": [b for _, b in pairs], "level": ["text"] * len(pairs)},
        schema=CANDIDATES,
    )
    scored = overlap(candidates, shingle_sets)
    for (a, b), (jaccard, containment) in zip(pairs, scored.select("jaccard", "containment").iter_rows()):
        first, second = set(sets[ids.index(a)]), set(sets[ids.index(b)])
        shared = len(first & second)
        assert jaccard == (shared / len(first | second) if shared else 0.0)
        assert containment == (shared / min(len(first), len(second)) if shared else 0.0)
    ordered = shingle_sets.sorted_sets()
    assert ordered.ordered and [list(ordered[i]) for i in ids] == [sorted(set(s)) for s in sets]
    assert overlap(candidates, ordered).equals(scored)
    assert overlap(candidates, ShingleSets.concat([ordered.of(ids[1:]), ordered.of(ids[:1])])).equals(scored)


def test_confirmed_duplicates_are_versions_of_one_page() -> None:
    frame = cleaned_frame(SEEDS / "aeb-sample.jsonl")
    candidates, sets = duplicate_candidates(frame, Config())
    pairs = verify_duplicates(frame, candidates, sets, Config())
    assert dict(pairs.schema) == PAIRS
    assert 0 < pairs.height <= candidates.height
    assert (pairs["article_id_a"].str.slice(0, 12) == pairs["article_id_b"].str.slice(0, 12)).all()
    unsure = pairs.filter(pl.col("similarity").is_not_null())
    assert (unsure["similarity"] >= Config().duplicate_similarity).all()


def test_headline_duplicates_need_near_identical_wording() -> None:
    frame = cleaned_frame(SEEDS / "headlines-sample.csv")
    candidates, sets = duplicate_candidates(frame, Config())
    pairs = verify_duplicates(frame, candidates, sets, Config())
    assert (candidates["level"] == "headline").all()
    assert (pairs["similarity"] >= Config().headline_duplicate_similarity).all()


def test_story_pairs_need_similar_headlines() -> None:
    headlines = pl.DataFrame(
        {
            "duplicate_group": ["a", "b", "c"],
            "headline": ["Sbarro files for bankruptcy", "Sbarro files for bankruptcy again", "Apple releases iOS 7.1"],
        }
    ).with_columns(story_text="headline")
    candidates = pl.DataFrame(
        {"article_id_a": ["a", "a"], "article_id_b": ["b", "c"], "level": ["story", "story"]}, schema=CANDIDATES
    )
    keywords = ShingleSets.from_sets({"a": {b"sbarro"}, "b": {b"sbarro", b"again"}, "c": {b"apple"}})
    pairs = verify_stories(headlines, candidates, keywords, Config())
    assert pairs.select("article_id_a", "article_id_b", "relation").rows() == [("a", "b", "same_story")]


words = st.text(st.sampled_from("aAbBßSsİi\u00e9\u0301 \t\n\u00a0\u2003\u3000\x1c\x85-1"), max_size=12)


@settings(max_examples=400, deadline=None)
@given(st.lists(words, max_size=5).map(" ".join) | st.none(), st.lists(words, max_size=5).map(" ".join) | st.none())
def test_the_ratio_of_sorted_words_is_the_token_sort_ratio(first: str | None, second: str | None) -> None:
    """Story pairs are scored by the plain ratio of texts folded and sorted once per group: it must
    be rapidfuzz's token-sort ratio of the texts as they are, whatever their case and whitespace
    (Unicode spaces, separators, characters that fold to two)."""
    expected = 0.0 if first is None or second is None else fuzz.token_sort_ratio(first, second, processor=str.casefold)
    pair = [sorted_words(first), sorted_words(second)]
    assert (0.0 if None in pair else fuzz.ratio(*pair)) == expected


word = st.text(st.sampled_from("aAbBßSsİi\u00e9\u0301-1"), min_size=1, max_size=4)
gap = st.text(st.sampled_from(" \t\n\x1c\x85\xa0\u2003\u3000"), min_size=1, max_size=2)


@st.composite
def related_texts(draw: st.DrawFn) -> list[str]:
    """Two to five texts, each most of a list of common words and a few of its own, in any order
    and case, between any whitespace (Unicode spaces, and U+0085 and U+00A0, which rapidfuzz
    splits on only in texts with a wider character): some share all, some nothing, some no words."""
    common = draw(st.lists(word, max_size=12))
    texts = []
    for _ in range(draw(st.integers(2, 5))):
        kept = draw(st.lists(st.booleans(), min_size=len(common), max_size=len(common)))
        words = draw(st.permutations([w for w, keep in zip(common, kept) if keep or len(common) < 3] + draw(st.lists(word, max_size=3))))
        gaps = draw(st.lists(gap, min_size=len(words) + 1, max_size=len(words) + 1))
        texts.append("".join(g + w for g, w in zip(gaps, words)) + gaps[-1])
    return texts


@settings(max_examples=400, deadline=None)
@given(related_texts(), st.data())
def test_token_set_similarities_are_rapidfuzz_s_where_they_reach_the_threshold(texts: list[str], data: st.DataObject) -> None:
    """The pairs scored from each text's word set, made once, and decided by length bounds where
    they can be: at or above any threshold, the same pairs and scores as rapidfuzz's token-set
    ratio of the texts as they are (in float32, as `process.cpdist` gives it); a threshold equal
    to a pair's score holds the bounds to the score itself."""
    ids = [f"t{i}" for i in range(len(texts))]
    pairs = pl.DataFrame([(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]], schema=["article_id_a", "article_id_b"], orient="row")
    expected = process.cpdist([texts[ids.index(a)] for a in pairs["article_id_a"]], [texts[ids.index(b)] for b in pairs["article_id_b"]],
                              scorer=fuzz.token_set_ratio, processor=str.casefold).astype(np.float64)  # as verify_duplicates compares it
    threshold = data.draw(st.sampled_from([float(score) for score in expected]) | st.sampled_from([0.0, 50.0, 95.0, 100.0]) | st.floats(0, 100))
    got = token_set_similarities(pairs, dict(zip(ids, texts)), threshold).to_numpy()
    assert ((got >= threshold) == (expected >= threshold)).all()
    assert (got[expected >= threshold] == expected[expected >= threshold]).all()


def test_story_pairs_are_scored_and_compared_as_before_on_real_headlines() -> None:
    """`verify_stories` (similarity first, keyword Jaccard of the similar pairs only) against
    every pair of the seed headlines scored as it was: rapidfuzz's token-sort ratio of each pair's
    texts, in float32 as `process.cpdist` gives it."""
    frame = cleaned_frame(SEEDS / "headlines-sample.csv").filter(pl.col("headline").is_not_null()).head(120)
    headlines = frame.select(duplicate_group="article_id", headline="headline", story_text="headline")
    ids = headlines["duplicate_group"].to_list()
    candidates = pl.DataFrame(
        [(a, b, "story") for i, a in enumerate(ids) for b in ids[i + 1 :]], schema=CANDIDATES, orient="row"
    )
    keywords = ShingleSets.from_sets({group: {word.encode() for word in text.casefold().split()} for group, text in headlines.select("duplicate_group", "story_text").iter_rows()})
    config = Config()
    texts = dict(headlines.select("duplicate_group", "story_text").iter_rows())
    expected = overlap(candidates, keywords).with_columns(
        similarity=pl.Series(
            process.cpdist([texts[a] for a in candidates["article_id_a"]], [texts[b] for b in candidates["article_id_b"]],
                           scorer=fuzz.token_sort_ratio, processor=str.casefold),
            dtype=pl.Float64,
        )
    ).filter(pl.col("similarity") >= config.story_similarity)
    pairs = verify_stories(headlines, candidates, keywords, config)
    assert pairs.height > 0
    assert pairs.select("article_id_a", "article_id_b", "jaccard", "similarity").equals(
        expected.select("article_id_a", "article_id_b", "jaccard", "similarity").sort("article_id_a", "article_id_b")
    )


def test_semantic_pairs_score_meaning_not_shared_words() -> None:
    headlines = pl.DataFrame(
        {
            "duplicate_group": ["a", "b", "c"],
            "headline": [
                "Men's Wearhouse buying rival Jos. A. Bank for $1.8 billion",
                "Jos. A. Bank agrees to be acquired by Men's Wearhouse",
                "Men's shoes: the best buys of the season",
            ],
        }
    ).with_columns(story_text="headline")
    candidates = pl.DataFrame(
        {"article_id_a": ["a", "a"], "article_id_b": ["b", "c"], "level": ["story", "story"]}, schema=CANDIDATES
    )
    keywords = ShingleSets.from_sets({"a": {b"wearhouse", b"bank"}, "b": {b"wearhouse", b"bank"}, "c": {b"men", b"buys"}})
    pairs, vectors = semantic_story_pairs(headlines, candidates, keywords)
    assert dict(pairs.schema) == PAIRS
    assert sorted(vectors["headline"]) == sorted(headlines["headline"])
    again, none_new = semantic_story_pairs(headlines, candidates, keywords, known=vectors)
    assert none_new.height == 0 and again.equals(pairs)  # known vectors are not embedded again
    same, other = pairs["similarity"].to_list()
    assert same > 60 > 100 * Config().story_semantic_similarity
    assert other < same - 30
    assert strong_pairs(pairs, 50.0).select("article_id_a", "article_id_b").rows() == [("a", "b")]
