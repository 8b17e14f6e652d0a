from __future__ import annotations

import polars as pl

from dedupe.config import Config
from dedupe.minhash import candidates, duplicate_candidates, keywords, shared_keyword_pairs, shingles
from dedupe.schema import CANDIDATES
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
    pairs = candidates(sets, 0.5, "text", Config())
    assert pairs.rows() == [("a", "b", "text")]


def test_a_huge_bucket_links_every_member_to_its_smallest_id() -> None:
    sets = {f"copy{i:03}": {b"the same wire story", b"copied many times"} for i in range(30)}
    pairs = candidates(sets, 0.5, "text", Config(lsh_max_bucket=10))
    assert pairs.height == 29
    assert set(pairs["article_id_a"]) == {"copy000"}


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
