from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
import polars as pl
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupe import minhash
from dedupe.config import Config
from dedupe.minhash import (
    ShingleSets,
    as_minhash,
    candidates,
    duplicate_candidates,
    keywords,
    minhash_input,
    shared_keyword_pairs,
    shingles,
    signatures,
    tokens,
    words,
)
from dedupe.schema import BAND_KEYS, CANDIDATES
from dedupe.verify import overlap
from tests.conftest import SEEDS, cleaned_frame


def test_shingles_are_word_ngrams_of_folded_text() -> None:
    assert shingles("The Fed, the FED!", 2) == {b"the fed", b"fed the"}
    assert shingles("Two words", 3) == {b"two words"}
    assert shingles("", 3) == set()
    assert keywords("Apple to release the new iPhone") == {b"apple", b"release", b"iphone"}


def test_versions_of_one_page_are_candidates_and_other_pages_mostly_not() -> None:
    frame = cleaned_frame(SEEDS / "aeb-sample.jsonl")
    pairs, sets = duplicate_candidates(frame, Config())
    assert dict(pairs.schema) == CANDIDATES
    assert set(sets) == set(frame.filter(pl.col("status") == "ok")["article_id"])
    page = pl.col("article_id_a").str.slice(0, 12) == pl.col("article_id_b").str.slice(0, 12)
    same_page = pairs.filter(page).height
    assert same_page > 0.8 * sum(n * (n - 1) // 2 for n in frame.group_by(pl.col("article_id").str.slice(0, 12)).len()["len"])
    assert pairs.filter(~page).height < 0.05 * pairs.height


def test_empty_sets_match_nothing_and_pairs_are_ordered() -> None:
    sets = {"b": {b"x y z", b"y z w"}, "a": {b"x y z", b"y z w"}, "c": set()}
    pairs = candidates(ShingleSets.from_sets(sets), 0.5, "text", Config())
    assert pairs.rows() == [("a", "b", "text")]


def test_a_huge_bucket_links_every_member_to_its_smallest_id() -> None:
    sets = {f"copy{i:03}": {b"the same wire story", b"copied many times"} for i in range(30)}
    pairs = candidates(ShingleSets.from_sets(sets), 0.5, "text", Config(lsh_max_bucket=10))
    assert pairs.height == 29
    assert set(pairs["article_id_a"]) == {"copy000"}


def test_story_buckets_have_their_own_cap() -> None:
    sets = ShingleSets.from_sets({f"group{i:02}": {b"malaysia", b"airlines", b"missing"} for i in range(20)})
    config = Config(lsh_max_bucket=50, story_lsh_max_bucket=15)
    assert candidates(sets, 0.3, "story", config).height == 19  # over 15: each group linked to the first
    assert candidates(sets, 0.3, "text", config).height == 190  # within 50: every pair


def test_shared_keyword_pairs_skip_keywords_too_common_to_tell() -> None:
    sets = {"a": {b"sbarro", b"bankruptcy"}, "b": {b"sbarro", b"files"}, "c": {b"apple"}}
    sets |= {f"g{i}": {b"google", b"bankruptcy"} for i in range(5)}  # "bankruptcy": 6 sets
    pairs = shared_keyword_pairs(sets, posting_cap=5)
    assert dict(pairs.schema) == CANDIDATES
    found = set(pairs.select("article_id_a", "article_id_b").iter_rows())
    assert ("a", "b") in found  # they share "sbarro"
    assert not any("a" in pair and pair != ("a", "b") for pair in found)  # "bankruptcy" is over the cap
    assert len(found) == 1 + 10  # a-b, and the five g sets through "google" (5 <= cap)
    assert all(a < b for a, b in found)


def _reference_shingles(words_of_text: list[str] | None, size: int) -> set[bytes]:
    return shingles(None, size, words_of_text or [])


def test_signatures_are_datasketch_minhashes_bit_for_bit_on_real_text() -> None:
    texts = cleaned_frame(SEEDS / "aeb-sample.jsonl").filter(pl.col("status") == "ok")["body"].head(40)
    config = Config()
    sets, _ = ShingleSets.from_texts([str(i) for i in range(len(texts))], texts, config.shingle_words)
    ours = signatures(sets, config)
    for row, words_of_text in zip(ours, tokens(texts).to_list()):
        reference = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=minhash_input)
        reference.update_batch(_reference_shingles(words_of_text, config.shingle_words))
        assert np.array_equal(row, reference.hashvalues)


@settings(deadline=None)  # the first example loads the compiled loops
@given(st.lists(st.text(alphabet="ab cdé.\n", max_size=40), min_size=1, max_size=8), st.integers(1, 4))
def test_batch_shingle_hashes_are_the_reference_hash_of_each_shingle(texts: list[str], size: int) -> None:
    series = pl.Series(texts, dtype=pl.String)
    sets, word_counts = ShingleSets.from_texts([str(i) for i in range(len(texts))], series, size)
    for i, words_of_text in enumerate(tokens(series).to_list()):
        assert word_counts[i] == len(words_of_text or [])
        assert set(sets[str(i)].tolist()) == {minhash_input(s) for s in _reference_shingles(words_of_text, size)}


# letters with a lower case of another byte length (Kelvin sign, U+023A), of two characters (U+0130),
# of context (capital sigma), marks, digits, "_", CJK, an astral letter and an emoji, separators
_HARD_TEXT = st.text(alphabet="aZ9_ \u00e9\u00c9\u212a\u023a\u0130\u03a3\u03c3\u0301\u4e2d\U00010400\U0001f600-.\n\t\u00a0", max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), _HARD_TEXT), min_size=1, max_size=8), st.integers(1, 4))
def test_compiled_shingle_hashes_are_polars_shingle_hashes(texts: list[str | None], size: int) -> None:
    """The compiled loop against the polars way it replaces, hash for hash in order: also for the
    texts it leaves to polars (an astral code point, a capital sigma, U+0130) amid the others."""
    series = pl.Series(texts, dtype=pl.String)
    compiled, reference = minhash._batch_shingle_hashes(series, size), minhash._polars_shingle_hashes(series, size)
    for ours, theirs in zip(compiled, reference, strict=True):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_compiled_shingle_hashes_are_polars_shingle_hashes_on_real_text() -> None:
    texts = pl.concat([cleaned_frame(SEEDS)["body"], cleaned_frame(SEEDS / "aeb-sample.jsonl")["body"]])
    for size in (1, 3):
        compiled, reference = minhash._batch_shingle_hashes(texts, size), minhash._polars_shingle_hashes(texts, size)
        assert all(np.array_equal(ours, theirs) for ours, theirs in zip(compiled, reference, strict=True))


def test_polars_tokens_are_the_python_words_on_the_seeds() -> None:
    texts = cleaned_frame(SEEDS)["body"].drop_nulls()
    assert [t or [] for t in tokens(texts).to_list()] == [words(text) for text in texts]


def test_signatures_interchange_as_datasketch_lean_minhashes() -> None:
    config = Config()
    sets = ShingleSets.from_sets({"a": {b"x y z", b"y z w", b"z w v"}, "b": {b"x y z", b"y z w", b"z w u"}, "c": set()})
    lean = [as_minhash(row, config) for row in signatures(sets, config)]
    copy = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=minhash_input)
    copy.update_batch([b"x y z", b"y z w", b"z w v"])
    assert lean[0] == LeanMinHash(copy) and lean[0].jaccard(lean[1]) > 0.2
    restored = type(lean[0]).deserialize(_serialized(lean[0]))
    assert np.array_equal(restored.hashvalues, lean[0].hashvalues)
    lsh = MinHashLSH(threshold=0.2, num_perm=config.num_perm)
    lsh.insert("a", lean[0])
    assert lsh.query(lean[1]) == ["a"]


def _serialized(minhash: object) -> bytearray:
    buffer = bytearray(minhash.bytesize())  # type: ignore[attr-defined]
    minhash.serialize(buffer)  # type: ignore[attr-defined]
    return buffer


@lru_cache(maxsize=1)
def _aeb_words() -> list[list[str]]:
    """The words of the seeds' aeb pages of at least 300 words, one version of each page."""
    frame = cleaned_frame(SEEDS / "aeb-sample.jsonl").filter(pl.col("status") == "ok")
    firsts = frame.unique(pl.col("article_id").str.slice(0, 12), keep="first", maintain_order=True)
    return [found for found in (words(body) for body in firsts["body"]) if len(found) >= 300]


def _kept_and_containment(first: list[str], second: list[str], config: Config) -> tuple[bool, float]:
    """Whether `plausible` keeps the "text" pair of two texts (given as words), and its true containment."""
    texts = pl.Series([" ".join(first), " ".join(second)])
    sets, _ = ShingleSets.from_texts(["a", "b"], texts, config.shingle_words)
    sets = sets.sorted_sets()
    pair = pl.DataFrame({"article_id_a": ["a"], "article_id_b": ["b"], "level": ["text"]})
    kept = minhash.plausible(pair, pl.Series(sets.ids), minhash.sketches(sets, config), config)
    return kept.height == 1, overlap(pair, sets)["containment"].item()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_signatures_never_rule_out_a_pair_that_verification_can_confirm(data: st.DataObject) -> None:
    """A real aeb page and a copy of a piece of it amid words of another page (a short copy inside
    a long page, a long page around a short copy, two versions that share some of a page): where
    their containment reaches `duplicate_unsure_containment`, the sketches keep the pair."""
    config, pages = Config(), _aeb_words()
    page, other = data.draw(st.sampled_from(pages)), data.draw(st.sampled_from(pages))
    start = data.draw(st.integers(0, len(page) - 30))
    piece = page[start : start + data.draw(st.integers(30, len(page) - start))]
    around = other[: data.draw(st.integers(0, len(other)))]
    cut = data.draw(st.integers(0, len(around)))
    kept, containment = _kept_and_containment(page, around[:cut] + piece + around[cut:], config)
    assert kept or containment < config.duplicate_unsure_containment


def test_signatures_rule_out_two_pages_of_like_length_that_share_little() -> None:
    """A page against one of like length that shares a sixth of its words is dropped; the same
    sixth alone, a short copy inside the page, is kept."""
    config, pages = Config(), _aeb_words()
    page, other = pages[0], pages[1]
    piece = page[: len(page) // 6]
    kept, containment = _kept_and_containment(page, piece + other[: len(page) - len(piece)], config)
    assert not kept and containment < 0.3
    kept, containment = _kept_and_containment(page, piece, config)
    assert kept and containment == 1.0


def test_jaccard_bounds_hold_with_their_miss_probability() -> None:
    """At each bound, k or fewer equal values have probability `miss` (the binomial tail)."""
    from scipy.stats import binom

    bounds = minhash.jaccard_bounds(128, 1e-6)
    assert np.allclose(binom.cdf(np.arange(128), 128, bounds[:-1]), 1e-6, rtol=1e-4) and bounds[-1] == 1.0
    assert np.all(np.diff(bounds) > 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3)), max_size=80), st.data())
def test_bucket_pair_changes_leave_out_the_pairs_that_stay_unless_asked(entries: list[tuple[int, int]], data: st.DataObject) -> None:
    """Pairs whose bucket count does not change are left out, but for those holding a kept id;
    every other count is the full recount's, in buckets within and over the cap."""
    before = pl.DataFrame(
        {"article_id": [f"g{g:02}" for g, _ in entries], "band": [0] * len(entries), "key": [k for _, k in entries]},
        schema=BAND_KEYS,
    ).unique()
    moved = data.draw(st.sets(st.sampled_from([f"g{g:02}" for g in range(13)])))
    added = data.draw(st.lists(st.tuples(st.sampled_from(sorted(moved) or ["g99"]), st.integers(0, 3)), max_size=20))
    after = pl.concat([
        before.filter(~pl.col("article_id").is_in(list(moved))),
        pl.DataFrame({"article_id": [g for g, _ in added], "band": [0] * len(added), "key": [k for _, k in added]}, schema=BAND_KEYS),
    ]).unique()
    config = Config(story_lsh_max_bucket=4)
    full = minhash.bucket_pair_changes(before, after, "story", config)
    kept = minhash.bucket_pair_changes(before, after, "story", config, keep=pl.Series(sorted(moved), dtype=pl.String))
    wanted = full.filter(
        (pl.col("buckets") != 0) | pl.col("article_id_a").is_in(list(moved)) | pl.col("article_id_b").is_in(list(moved))
    )
    assert kept.sort("article_id_a", "article_id_b").equals(wanted.sort("article_id_a", "article_id_b"))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 2)), max_size=120), st.sets(st.integers(0, 9)))
def test_bucket_pairs_counted_some_bands_at_a_time_are_those_of_all_bands_at_once(
    entries: list[tuple[int, int, int]], moved: set[int]
) -> None:
    """`bucket_pair_changes` pairs `PAIRED_BANDS` bands at a time and sums each pair's counts
    over them: the same counts as all bands paired at once, in buckets within and over the cap."""
    keys = pl.DataFrame(
        {"article_id": [f"g{g}" for g, _, _ in entries], "band": [b for _, b, _ in entries], "key": [k for _, _, k in entries]},
        schema=BAND_KEYS,
    ).unique()
    before = keys.filter(pl.col("article_id").is_in([f"g{g}" for g in moved]))
    config = Config(story_lsh_max_bucket=3)
    outcomes = []
    for bands in (1, 3, 1000):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(minhash, "PAIRED_BANDS", bands)
            outcomes.append(minhash.bucket_pair_changes(before, keys, "story", config))
    assert outcomes[0].equals(outcomes[2]) and outcomes[1].equals(outcomes[2])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 11), st.integers(0, 2), st.integers(0, 2)), max_size=80),
    st.lists(st.tuples(st.integers(8, 14), st.integers(0, 2), st.integers(0, 2)), max_size=30),
)
def test_new_bucket_pairs_are_the_bucket_pairs_with_a_new_article(
    old_entries: list[tuple[int, int, int]], new_entries: list[tuple[int, int, int]]
) -> None:
    """`new_bucket_pairs` pairs each bucket's new members alone: the pairs of `bucket_pairs` over
    all keys that hold an article with a new key, in its order, in buckets within and over the cap
    (ids 8-11 have old and new keys, as a record read again with another text)."""

    def keys(entries: list[tuple[int, int, int]]) -> pl.DataFrame:
        ids = [f"a{number:02}" for number, _, _ in entries]
        return pl.DataFrame({"article_id": ids, "band": [b for _, b, _ in entries], "key": [k for _, _, k in entries]}, schema=BAND_KEYS).unique()

    old, new = keys(old_entries), keys(new_entries)
    config = Config(lsh_max_bucket=4)
    fresh = new["article_id"].implode()
    everything = minhash.bucket_pairs(pl.concat([old, new]), "text", config)
    wanted = everything.filter(pl.col("article_id_a").is_in(fresh) | pl.col("article_id_b").is_in(fresh))
    assert minhash.new_bucket_pairs(old, new, "text", config).equals(wanted)


def test_the_loops_run_on_threads_kept_between_calls() -> None:
    """`on_threads` runs every call on the same threads and leaves them running: a pool ended
    after each call, and a thread ending while a Dask worker's profiler read every thread's frame
    deadlocked that worker (CPython 3.11; `minhash.threads`)."""
    seen: list[int] = []

    def loop(begin: int, end: int, out: np.ndarray) -> None:
        seen.append(threading.get_ident())
        out[begin:end] = 1

    out = np.zeros(10)
    for _ in range(3):
        minhash.on_threads(loop, out.size, out)
    assert out.all() and len(seen) == 3 * minhash.THREADS
    assert set(seen) <= {thread.ident for thread in threading.enumerate()}
