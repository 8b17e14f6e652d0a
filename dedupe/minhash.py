"""MinHash signatures and LSH candidate pairs (datasketch).

Candidate generation is what keeps the work near-linear: an article is compared only with the
articles that share an LSH band bucket with it, never with all others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

from dedupe.config import Config
from dedupe.schema import BAND_KEYS, CANDIDATES, CLEANED, GROUP_HEADLINES, check

_WORD = re.compile(r"\w+")
# Function words say nothing about which event a headline covers; leaving them out keeps two
# unrelated headlines from looking alike through "the", "to" and "of".
STOP_WORDS = frozenset(
    """a an and are as at be by for from has have he her his in is it its of on or she that the their
    this to was were will with after over new says said s""".split()
)


def words(text: str | None) -> list[str]:
    """Lower case word tokens: punctuation, quotes and case never make two copies differ."""
    return _WORD.findall(text.casefold()) if text else []


def shingles(text: str | None, size: int, tokens: list[str] | None = None) -> set[bytes]:
    """Word `size`-grams (of `tokens` when the caller has them); a text shorter than `size` words
    is one shingle."""
    tokens = words(text) if tokens is None else tokens
    if len(tokens) <= size:
        return {" ".join(tokens).encode()} if tokens else set()
    return {" ".join(tokens[i : i + size]).encode() for i in range(len(tokens) - size + 1)}


def keywords(text: str | None) -> set[bytes]:
    """The content words of a headline, as a set."""
    return {word.encode() for word in words(text) if word not in STOP_WORDS}


def duplicate_candidates(cleaned: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, dict[str, set[bytes]]]:
    """Candidate duplicate pairs among the records not rejected, and the shingle set of each.

    Articles are matched on their text's word n-grams (level "text"); records with little or no
    text (a headline-only feed) on the words of their headline (level "headline"), at a higher
    threshold since a few shared words are common between unrelated headlines."""
    by_level = duplicate_shingles(cleaned, config)
    pairs = pl.concat(
        [candidates(sets, DUPLICATE_THRESHOLDS[level](config), level, config) for level, sets in by_level.items()]
    )
    return pairs, by_level["text"] | by_level["headline"]


DUPLICATE_THRESHOLDS = {
    "text": lambda config: config.duplicate_lsh_threshold,
    "headline": lambda config: config.headline_duplicate_lsh_threshold,
}
"""LSH threshold of each duplicate level."""


def duplicate_shingles(cleaned: pl.DataFrame, config: Config) -> dict[str, dict[str, set[bytes]]]:
    """level ("text" or "headline") -> article_id -> shingle set, for the records not rejected:
    word n-grams of a text of at least `min_text_words` words, else the words of the text or headline."""
    check(cleaned, CLEANED, "duplicate candidates input")
    matched = cleaned.filter(pl.col("status") == "ok")
    by_level: dict[str, dict[str, set[bytes]]] = {"text": {}, "headline": {}}
    for article_id, headline, text in matched.select("article_id", "headline", "body").iter_rows():
        tokens = words(text)
        if len(tokens) >= config.min_text_words:
            by_level["text"][article_id] = shingles(text, config.shingle_words, tokens)
        else:
            by_level["headline"][article_id] = shingles(text or headline, 1)
    return by_level


def story_candidates(headlines: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, dict[str, set[bytes]]]:
    """Candidate story pairs between duplicate groups (`stories.group_headlines`), matched on
    the keywords of each group's story text: by LSH for the keyword story model, by shared
    keywords (an inverted index) for the semantic one, which must also see pairs worded apart."""
    check(headlines, GROUP_HEADLINES, "story candidates input")
    sets = {group: keywords(text) for group, text in headlines.select("duplicate_group", "story_text").iter_rows()}
    if config.story_model == "keywords":
        return candidates(sets, config.story_lsh_threshold, "story", config), sets
    return shared_keyword_pairs(sets, config.story_keyword_posting_cap), sets


def shared_keyword_pairs(keyword_sets: Mapping[str, set[bytes]], posting_cap: int) -> pl.DataFrame:
    """Pairs (a < b) that share a keyword carried by at most `posting_cap` sets. Each set meets
    at most `posting_cap` others per keyword, so the pairs are linear in the sets; a keyword
    more common than that ("Google" on a busy day) says little about the event."""
    postings = (
        pl.DataFrame(
            {"id": list(keyword_sets), "word": [sorted(words) for words in keyword_sets.values()]},
            schema={"id": pl.String, "word": pl.List(pl.Binary)},
        )
        .explode("word")
        .drop_nulls()
        .group_by("word")
        .agg("id")
        .filter(pl.col("id").list.len().is_between(2, posting_cap))
    )
    pairs = (
        _pairs_within(postings, "id")
        .filter(pl.col("a") < pl.col("b"))
        .unique()
        .sort("a", "b")
        .select(article_id_a="a", article_id_b="b", level=pl.lit("story"))
    )
    return check(pairs, CANDIDATES, "story candidates")


def _pairs_within(buckets: pl.DataFrame, column: str) -> pl.DataFrame:
    """Every ordered pair (a, b) of members of each bucket's list `column`, self-pairs included."""
    return buckets.select(a=pl.col(column), b=pl.col(column)).explode("a").explode("b")


def signatures(shingle_sets: Sequence[set[bytes]], config: Config) -> list[LeanMinHash]:
    """One MinHash per set (an empty set gets an empty signature and matches nothing)."""
    hashed = MinHash.bulk(shingle_sets, num_perm=config.num_perm, seed=config.seed, hashfunc=xxhash.xxh32_intdigest)
    return [LeanMinHash(minhash) for minhash in hashed]


def candidates(shingle_sets: Mapping[str, set[bytes]], threshold: float, level: str, config: Config) -> pl.DataFrame:
    """Pairs (a < b) whose signatures share at least one LSH band at `threshold`. Empty sets
    match nothing (see `band_keys` and `bucket_pairs`)."""
    return bucket_pairs(band_keys(shingle_sets, threshold, config), level, config)


def band_keys(shingle_sets: Mapping[str, set[bytes]], threshold: float, config: Config) -> pl.DataFrame:
    """BAND_KEYS: one row per (article, LSH band) with the band's bucket key; empty sets have none.

    datasketch's MinHashLSH chooses the bands (b bands of r rows) for the threshold; the bucketing
    itself is a polars group-by over (band, bucket key), because querying MinHashLSH for every
    article cost 11 s on the dev data where this takes well under one. The keys are kept apart
    from the bucketing so that a later run can match new articles against stored keys."""
    ids = sorted(article_id for article_id, shingle_set in shingle_sets.items() if shingle_set)
    if not ids:
        return pl.DataFrame(schema=BAND_KEYS)
    minhashes = signatures([shingle_sets[article_id] for article_id in ids], config)
    lsh = MinHashLSH(threshold=threshold, num_perm=config.num_perm)
    bands, rows = lsh.b, lsh.r
    values = np.vstack([minhash.hashvalues[: bands * rows] for minhash in minhashes]).astype(np.uint64)
    mixers = np.random.default_rng(config.seed).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    keys = (values.reshape(len(ids), bands, rows) * mixers).sum(axis=2, dtype=np.uint64)  # wraps mod 2^64
    frame = pl.DataFrame(
        {
            "article_id": pl.Series(ids, dtype=pl.String).gather(np.repeat(np.arange(len(ids)), bands)),
            "band": np.tile(np.arange(bands, dtype=np.uint16), len(ids)),
            "key": keys.ravel(),
        }
    )
    return check(frame, BAND_KEYS, "band keys")


def bucket_pairs(keys: pl.DataFrame, level: str, config: Config) -> pl.DataFrame:
    """CANDIDATES: pairs (a < b) sharing a bucket. Work is linear in articles plus candidate
    pairs: a bucket of more than `lsh_max_bucket` articles (a story copied thousands of times)
    links each member to its smallest id instead of to every other."""
    check(keys, BAND_KEYS, "bucket input")
    buckets = keys.group_by("band", "key").agg("article_id").filter(pl.col("article_id").list.len() > 1)
    small = buckets.filter(pl.col("article_id").list.len() <= config.lsh_max_bucket)
    large = buckets.filter(pl.col("article_id").list.len() > config.lsh_max_bucket)
    pairs = pl.concat(
        [
            _pairs_within(small, "article_id"),
            large.select(a="article_id", b=pl.col("article_id").list.min()).explode("a"),
        ]
    ).filter(pl.col("a") != pl.col("b"))
    frame = (
        pairs.select(article_id_a=pl.min_horizontal("a", "b"), article_id_b=pl.max_horizontal("a", "b"))
        .unique()
        .sort("article_id_a", "article_id_b")
    )
    return check(frame.with_columns(level=pl.lit(level)), CANDIDATES, f"{level} candidates")
