"""MinHash signatures and LSH candidate pairs, computed over whole batches of texts at once.

Candidate generation is what keeps the work near-linear: an article is compared only with the
articles that share an LSH band bucket with it, never with all others. With `lsh_max_bucket` = m,
a bucket of k articles yields at most k * min(k, m) pairs, so the candidates of n articles in
b bands are at most n * b * m: linear in n (benchmarks/speed.py prints the measured pairs per article).

Signatures are datasketch's "affine32" MinHash (`MinHash(num_perm, seed, hashfunc=xxh32)`, bit for
bit, see `as_minhash` for the interchange), computed for a whole batch of texts at once by two
loops compiled by numba (`dedupe.compiled`): one reads each text's bytes once and hashes its
shingles where they lie (xxh32, the same hash as always), one applies the permutations and takes
each text's minimum. The whole stage, candidates included, runs 2.75-3.11x what polars' words and
shingles and numpy's pass per permutation took, with the same output (`python
benchmarks/text_stages.py --against 3cbf413 --clock cpu`), and well over 30x datasketch's
per-shingle `update` (`python benchmarks/speed.py signatures`; both in benchmarks/README.md).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import polars as pl
import polars_hash as plh
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

from dedupe.config import Config
from dedupe.schema import BAND_KEYS, BUCKET_PAIRS, CANDIDATES, CLEANED, GROUP_HEADLINES, LEVEL_BAND_KEYS, check

_WORD = re.compile(r"\w+")
# Function words say nothing about which event a headline covers; leaving them out keeps two
# unrelated headlines from looking alike through "the", "to" and "of".
STOP_WORDS = frozenset(
    """a an and are as at be by for from has have he her his in is it its of on or she that the their
    this to was were will with after over new says said s""".split()
)
TOKEN = r"\w+"
"""A word for shingles, as polars (Rust regex, Unicode) finds it in lower-cased text."""
BATCH_TEXTS = 2_000
"""Texts tokenized and hashed at once, so memory stays flat however many texts there are: a
450-word text is ~40 KB of words, shingles and hashes in flight, and a batch per thread is in
flight at once. 20,000 (~1.6 GB for two threads) made the peak memory of a 100k run; with
2,000 the batches are no slower (polars' per-batch cost is small at this size); see the minhash
stage in `python benchmarks/speed.py profile` (benchmarks/README.md)."""
THREADS = 2
"""Batches and compiled loops run on two threads (the loops release the GIL); `python
benchmarks/speed.py signatures` prints one thread against two (the gain of the day: on the busy
shared machine there is often no free core)."""
SCHEME = "affine32"
"""datasketch 2.0's default permutation scheme, which `compiled.min_hashes` reproduces."""


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


def tokens(texts: pl.Series) -> pl.Series:
    """Each text's words (`TOKEN`), lower-cased: the columnar `words`."""
    return texts.str.to_lowercase().str.extract_all(TOKEN)


def beyond_ascii(texts: pl.Series) -> pl.Series:
    """Whether each text holds a character outside ASCII (null for null). Only on ASCII text are
    polars' lower case and `TOKEN` words Python's casefold and `\\w`: columnar steps that must
    give Python's answers (`cluster.story_keywords`, `state.may_hold_a_piece`) take the others
    the Python way."""
    return texts.str.contains(r"[^\x00-\x7F]")


def minhash_input(shingle: bytes) -> int:
    """What a shingle is hashed to before its MinHash permutations (datasketch's `hashfunc`):
    xxh32 of its UTF-8 bytes, as the pipeline always did, so signatures did not change."""
    return xxhash.xxh32_intdigest(shingle)


class ShingleSets(Mapping[str, np.ndarray]):
    """article id -> the hashes of its shingles (`minhash_input`, uint32, unsorted, possibly
    repeated), all in one flat array: 1M articles of 450 shingles are 1.8 GB, not 1M Python sets
    of bytes (~50 GB). Set overlaps on these hashes are exact but for 32-bit collisions: two
    450-shingle sets share a false shingle with probability 450 * 450 / 2^32 = 5e-5."""

    def __init__(self, ids: Sequence[str], hashes: np.ndarray, counts: np.ndarray, ordered: bool = False) -> None:
        self.ids = list(ids)
        self.hashes = hashes
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.ordered = ordered
        """Whether each set is sorted, without repeats (`sorted_sets`): `verify.overlap` then
        compares the sets as they are."""
        self._index = {article_id: i for i, article_id in enumerate(self.ids)}

    @classmethod
    def from_texts(cls, ids: Sequence[str], texts: pl.Series, size: int) -> tuple[ShingleSets, np.ndarray]:
        """Word `size`-grams of each text (a text of fewer words is one shingle), in batches;
        and the number of words of each text."""
        batch = max(1, min(BATCH_TEXTS, -(-len(texts) // THREADS)))
        # polars and the compiled loop release the GIL: both cores work
        parts = list(threads().map(lambda start: _batch_shingle_hashes(texts.slice(start, batch), size), range(0, len(texts), batch)))
        if not parts:
            return cls(ids, np.empty(0, np.uint32), np.empty(0, np.int64)), np.empty(0, np.int64)
        hashes, shingle_counts, word_counts = (np.concatenate(column) for column in zip(*parts))
        return cls(ids, hashes, shingle_counts), word_counts

    @classmethod
    def from_sets(cls, sets: Mapping[str, set[bytes]]) -> ShingleSets:
        """From Python sets of shingles: for small sets such as keywords."""
        hashed = [np.array([minhash_input(s) for s in shingle_set], dtype=np.uint32) for shingle_set in sets.values()]
        counts = np.array([len(h) for h in hashed], dtype=np.int64)
        return cls(list(sets), np.concatenate(hashed) if hashed else np.empty(0, np.uint32), counts)

    def __getitem__(self, article_id: str) -> np.ndarray:
        i = self._index[article_id]
        return self.hashes[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        """Where each of `ids` is (a KeyError names the first missing)."""
        return np.array([self._index[article_id] for article_id in ids], dtype=np.int64)

    def subset(self, keep: np.ndarray) -> ShingleSets:
        """The sets at the positions `keep` (in that order)."""
        counts = self.counts[keep]
        return ShingleSets([self.ids[i] for i in keep], _gathered(self.hashes, self.offsets[keep], counts), counts, self.ordered)

    def sorted_sets(self) -> ShingleSets:
        """These sets, each sorted and without repeats: sets that several `verify.overlap` calls
        compare (a chunk's new records, against each block of partners in
        `state.verify_candidates`) are sorted once, not in every call."""
        if self.ordered or not len(self):
            return ShingleSets(self.ids, self.hashes, self.counts, True)
        from dedupe import compiled  # numba's import, only when there are sets

        starts = self.offsets[:-1]
        values, sizes = np.empty_like(self.hashes), np.zeros(len(self), dtype=np.int64)
        on_threads(compiled.sort_sets, len(self), self.hashes, starts, self.counts, values, starts, sizes)
        return ShingleSets(self.ids, _gathered(values, starts, sizes), sizes, True)

    def of(self, ids: Sequence[str]) -> ShingleSets:
        """The sets of those of `ids` that are here, in that order."""
        return self.subset(self.positions([article_id for article_id in ids if article_id in self._index]))

    @classmethod
    def concat(cls, parts: Sequence[ShingleSets]) -> ShingleSets:
        """The sets of all `parts`, in order, copied once: merging them two at a time copied the
        first parts again at every step (on two workers, a 100k chunk's minhash duplicates went
        from 5,360 to 6,529 docs/s: `speed.py scaling`, benchmarks/README.md, 2 December)."""
        hashes = np.concatenate([part.hashes for part in parts]) if parts else np.empty(0, np.uint32)
        counts = np.concatenate([part.counts for part in parts]) if parts else np.empty(0, np.int64)
        ordered = bool(parts) and all(part.ordered for part in parts)
        return cls([article_id for part in parts for article_id in part.ids], hashes, counts, ordered)


def _gathered(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The `counts[i]` values from each `starts[i]`, one after the other: copied by a compiled
    loop (`compiled.gather_runs`), where a gather by index made two int64 arrays of every
    position (np.repeat, np.arange), whose fresh pages cost their faults: it was 4.6 of the 11.7 s
    of a 30k chunk's minhash duplicates (`speed.py profile --docs 90000 --chunk 30000 --workers 1
    --cprofile "minhash duplicates"`, second chunk, load 5-6; benchmarks/README.md)."""
    out = np.empty(int(counts.sum()), dtype=values.dtype)
    if out.size:
        from dedupe import compiled  # numba's import, only when there are values

        at = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        on_threads(compiled.gather_runs, len(counts), values, starts.astype(np.int64), counts.astype(np.int64), out, at)
    return out


def _batch_shingle_hashes(texts: pl.Series, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shingle hashes of all texts in order, shingles per text, words per text) for one batch.

    One loop compiled by numba (`compiled.utf8_shingle_hashes`) reads each text's UTF-8 bytes once:
    words by the tables of `_case_tables` (polars' own lower case and `\\w`), each shingle hashed
    where it lies. It gives `_polars_shingle_hashes`' output (tests/test_minhash.py), without a
    string made for every word and every shingle.
    Texts the tables cannot decide alone (a code point beyond the BMP, a capital sigma, whose lower
    case depends on its neighbours, or a lower case of two characters) go through polars."""
    encoded = [text.encode() if text is not None else b"" for text in texts.to_list()]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(text) for text in encoded], out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    hashes = np.empty(data.size // 2 + len(encoded), dtype=np.uint32)  # a word is a byte and a separator at least
    shingle_counts, word_counts = np.zeros(len(encoded), np.int64), np.zeros(len(encoded), np.int64)
    undecided = np.zeros(len(encoded), dtype=np.bool_)
    lower, is_word = _case_tables()
    from dedupe import compiled  # numba's import, only when there are texts

    used = compiled.utf8_shingle_hashes(
        data, offsets, lower, is_word, size, hashes, shingle_counts, word_counts, undecided
    )
    hashes = hashes[:used]
    if not undecided.any():
        return hashes, shingle_counts, word_counts
    rest = np.flatnonzero(undecided)
    rest_hashes, shingle_counts[rest], word_counts[rest] = _polars_shingle_hashes(texts.gather(rest), size)
    decided_counts = np.where(undecided, 0, shingle_counts)
    text_of = np.concatenate([np.repeat(np.arange(len(encoded)), decided_counts), np.repeat(rest, shingle_counts[rest])])
    in_order = np.argsort(text_of, kind="stable")  # each text's hashes where its text is
    return np.concatenate([hashes, rest_hashes])[in_order], shingle_counts, word_counts


def _polars_shingle_hashes(texts: pl.Series, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_batch_shingle_hashes` by polars: shingles built from shifted word columns joined by
    spaces (within a text), hashed by the polars-hash plugin's xxh32. The reference of the
    compiled loop, and its way for the texts that loop cannot decide."""
    words_of = tokens(texts)
    counts = words_of.list.len().fill_null(0).to_numpy().astype(np.int64)
    words = pl.DataFrame({"words": words_of}).with_row_index("text").explode("words").drop_nulls("words")
    full = words.select(
        "text",
        shingle=pl.concat_str([pl.col("words").shift(-offset) for offset in range(size)], separator=" "),
        inside=pl.col("text").shift(-(size - 1)) == pl.col("text"),
    ).filter("inside")
    is_short = (counts > 0) & (counts < size)  # fewer words than a shingle: one shingle of them all
    short = pl.DataFrame({"text": np.flatnonzero(is_short).astype(np.uint32), "shingle": words_of.filter(is_short).list.join(" ")})
    shingles_of = pl.concat([full.select("text", "shingle"), short]).sort("text", maintain_order=True)
    hashes = shingles_of.select(plh.col("shingle").nchash.xxhash32()).to_series().to_numpy().astype(np.uint32)
    return hashes, np.bincount(shingles_of["text"].to_numpy(), minlength=len(counts)).astype(np.int64), counts


@lru_cache(maxsize=1)
def _case_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each code point of the BMP: its lower case as polars makes it (-1 where the compiled
    loop must leave the text to polars: surrogates, a lower case of two characters, and the
    capital sigma, whose lower case depends on the letters around it), and whether that lower
    case is a `TOKEN` character. Asked of polars itself, so the two ways cannot disagree."""
    code_points = np.array([c for c in range(0x10000) if not 0xD800 <= c < 0xE000])
    lowered = pl.Series([chr(c) for c in code_points], dtype=pl.String).str.to_lowercase()
    single = lowered.str.len_chars().to_numpy() == 1
    lower = np.full(0x10000, -1, dtype=np.int32)
    lower[code_points] = np.where(single, [ord(text[0]) for text in lowered.to_list()], -1)
    lower[ord("\u03a3")] = -1
    is_word = np.zeros(0x10000, dtype=np.bool_)
    is_word[code_points] = lowered.str.contains(f"^{TOKEN}$").to_numpy()
    return lower, is_word


def on_threads(loop: Callable[..., None], items: int, *arrays: np.ndarray) -> None:
    """`loop` (a `compiled` loop over items `begin` to `end`) over `items` cut into one range per
    thread; the loops write disjoint slices of `arrays`."""
    bounds = np.linspace(0, items, THREADS + 1).astype(np.int64)
    list(threads().map(lambda part: loop(bounds[part], bounds[part + 1], *arrays), range(THREADS)))


THREADED_ITEMS = 20_000
"""Items (edges, pairs, stories) from which `per_item_on_threads` splits a loop over threads."""


def per_item_on_threads(loop: Callable[..., Any], *items: np.ndarray) -> Any:
    """`on_threads` for a compiled loop that returns its output, one per item or one run per
    item in order (`compiled.candidate_pairs`; the story steps' loops, `cluster`): `loop(*items)`
    with `items` (arrays of one length) cut into one piece per thread and the pieces' outputs
    joined in order; each item's output is its own, so the same arrays. The story steps of a 1M
    run's last chunk ran these loops on one core for ~70 s (benchmarks/README.md, session 17)."""
    length = len(items[0])
    if length < THREADED_ITEMS or THREADS < 2:
        return loop(*items)
    bounds = np.linspace(0, length, THREADS + 1).astype(np.int64)
    pieces = list(threads().map(
        lambda piece: loop(*(array[bounds[piece] : bounds[piece + 1]] for array in items)), range(THREADS)
    ))
    if isinstance(pieces[0], tuple):
        return tuple(np.concatenate(outputs) for outputs in zip(*pieces, strict=True))
    return np.concatenate(pieces)


_THREADS: dict[int, ThreadPoolExecutor] = {}
_THREADS_MADE = threading.Lock()  # two threads asking first make one pool


def threads() -> ThreadPoolExecutor:
    """The `THREADS` threads of this process for the stages' loops and batches (`on_threads`,
    `ShingleSets.from_texts`), made once and kept (a forked child makes its own). What runs on
    them must not wait for them in turn. A pool made per call ended its threads after each call,
    and a thread ending while Dask's profiler reads every thread's frame (`sys._current_frames`)
    can deadlock CPython 3.11 when a garbage collection runs inside that read: the ending thread
    holds the GIL and waits for the interpreter's thread list, the profiler holds the list and
    waits for the GIL (a Dask worker of tests/test_scale.py hung so, in `on_threads`)."""
    with _THREADS_MADE:
        if os.getpid() not in _THREADS:
            _THREADS[os.getpid()] = ThreadPoolExecutor(THREADS, thread_name_prefix="dedupe")
        return _THREADS[os.getpid()]


def permutations(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's own permutation parameters (a, b) for `num_perm` and `seed`."""
    a, b = MinHash(num_perm=config.num_perm, seed=config.seed, scheme=SCHEME).permutations
    return a, b


def signatures(sets: ShingleSets, config: Config) -> np.ndarray:
    """(articles, num_perm) uint32: each set's MinHash, equal to datasketch's
    `MinHash(num_perm, seed, hashfunc=minhash_input).update_batch(shingles).hashvalues`
    (an empty set keeps datasketch's all-maximum start value). A compiled loop
    (`compiled.min_hashes`) on `THREADS` threads, where numpy made a pass over all the hashes
    per permutation (`np.minimum.reduceat`)."""
    a, b = permutations(config)
    out = np.full((len(sets), config.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if sets.hashes.size:
        from dedupe import compiled  # numba's import, only when there are shingles

        on_threads(compiled.min_hashes, len(sets), sets.hashes, sets.offsets, a, b, out)
    return out


def as_minhash(signature: np.ndarray, config: Config) -> LeanMinHash:
    """A signature as datasketch's LeanMinHash: the interchange format (serialization, LSH, storage)."""
    return LeanMinHash(seed=config.seed, hashvalues=signature, scheme=SCHEME)


def duplicate_candidates(cleaned: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, ShingleSets]:
    """Candidate duplicate pairs among the records not rejected, and the shingle set of each.

    Articles are matched on their text's word n-grams (level "text"); records with little or no
    text (a headline-only feed) on the words of their headline (level "headline"), at a higher
    threshold since a few shared words are common between unrelated headlines. Pairs whose
    signatures rule out verification are left out (`plausible`)."""
    keys, sets, sketched = duplicate_keys(cleaned, config)
    pairs = pl.concat(
        [bucket_pairs(keys.filter(pl.col("level") == level).drop("level"), level, config) for level in DUPLICATE_THRESHOLDS]
    )
    return plausible(pairs, cleaned["article_id"], sketched, config), sets


DUPLICATE_THRESHOLDS = {
    "text": lambda config: config.duplicate_lsh_threshold,
    "headline": lambda config: config.headline_duplicate_lsh_threshold,
}
"""LSH threshold of each duplicate level."""


def duplicate_shingles(cleaned: pl.DataFrame, config: Config) -> dict[str, ShingleSets]:
    """level ("text" or "headline") -> the shingle sets of the records not rejected: word
    n-grams of a text of at least `min_text_words` words, else the words of the text or headline.
    Sorted without repeats (`ShingleSets.sorted_sets`): their sizes are those `verify.overlap`
    divides by, which `sketches` keeps."""
    check(cleaned, CLEANED, "duplicate candidates input")
    matched = cleaned.filter(pl.col("status") == "ok")
    text_sets, word_counts = ShingleSets.from_texts(matched["article_id"].to_list(), matched["body"], config.shingle_words)
    long = word_counts >= config.min_text_words
    short = matched.filter(pl.Series(~long)).select("article_id", text=pl.coalesce("body", "headline"))
    short_sets, _ = ShingleSets.from_texts(short["article_id"].to_list(), short["text"], 1)
    return {"text": text_sets.subset(np.flatnonzero(long)).sorted_sets(), "headline": short_sets.sorted_sets()}


def duplicate_keys(cleaned: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, ShingleSets, np.ndarray]:
    """LEVEL_BAND_KEYS of the records not rejected, their shingle sets (`duplicate_shingles`, text
    then headline level) and the sketch of every record, row for row with `cleaned` (a rejected
    one's: size 0, no shingle seen): each signature is computed once, for its band keys and its
    sketch."""
    rows = cleaned.select("article_id").with_row_index("row")
    sketched = np.zeros((cleaned.height, 1 + config.num_perm), dtype=np.uint32)
    sketched[:, 1:] = np.iinfo(np.uint32).max
    keys, by_level = [], duplicate_shingles(cleaned, config)
    for level, sets in by_level.items():
        made = sketches(sets, config)
        at = pl.DataFrame({"article_id": sets.ids}, schema={"article_id": pl.String}).join(
            rows, on="article_id", how="left", maintain_order="left"
        )["row"].to_numpy()
        sketched[at] = made
        level_keys = _band_keys_of(sets, made[:, 1:], DUPLICATE_THRESHOLDS[level](config), config)
        keys.append(level_keys.select(pl.lit(level).alias("level"), *level_keys.columns))
    return check(pl.concat(keys), LEVEL_BAND_KEYS, "band keys"), ShingleSets.concat(list(by_level.values())), sketched


def sketches(sets: ShingleSets, config: Config) -> np.ndarray:
    """(sets, 1 + num_perm) uint32: each set's size (distinct shingles: `sets` sorted without
    repeats), then its MinHash signature (`signatures`). A pair's two sketches bound its
    containment without its texts (`plausible`); the state keeps them beside the records."""
    assert sets.ordered or not len(sets), "sizes are of sets without repeats"
    return np.column_stack([sets.counts.astype(np.uint32), signatures(sets, config)])


def pair_rows(pairs: pl.DataFrame, ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The rows in `ids` of each pair's article_id_a and article_id_b (every one among `ids`),
    for loops over pairs that index arrays row for row with `ids` (`plausible`, `verify.overlap`)."""
    row_of = pl.DataFrame({"article_id": ids, "row": np.arange(len(ids), dtype=np.int64)})
    first, second = (
        pairs.select(article_id=side).join(row_of, on="article_id", how="left", maintain_order="left")["row"].to_numpy()
        for side in ("article_id_a", "article_id_b")
    )
    return first, second


CONFIDENCE_MISS = 1e-9
"""The chance that `plausible` drops a pair of a given containment at or above the one
verification needs: one pair in a billion such pairs (see `jaccard_bounds`)."""


@lru_cache(maxsize=4)
def jaccard_bounds(num_perm: int, miss: float = CONFIDENCE_MISS) -> np.ndarray:
    """For k = 0 to `num_perm` equal values of two signatures: an upper bound of the two sets'
    Jaccard J that is exceeded with probability at most `miss` (Clopper-Pearson). Each MinHash
    value of two sets is equal with probability J (at least: two values of the affine32
    permutations may also tie), independently over the permutations, so k is Binomial(num_perm,
    J): the bound is the J at which k or fewer equal values have probability `miss`. With 128
    permutations and a miss of 1e-9, 0 equal values bound J at 0.149, 13 (J about 0.1) at 0.34."""
    from scipy.special import betaincinv  # scipy's import, only when pairs are filtered

    equal = np.arange(num_perm, dtype=np.float64)
    return np.append(betaincinv(equal + 1, num_perm - equal, 1 - miss), 1.0)


def plausible(pairs: pl.DataFrame, ids: pl.Series, sketched: np.ndarray, config: Config) -> pl.DataFrame:
    """The candidate `pairs` that verification may confirm, from their records' sketches alone
    (`sketched`, row for row with `ids`, which hold every article of `pairs`): no text is read.

    A "text" pair is confirmed only at a containment C (shared shingles over the smaller set)
    of at least `duplicate_unsure_containment` (`verify.verify_duplicates`). Sets of sizes a <= b
    with Jaccard J share J (a + b) / (1 + J) shingles, so C = J (a + b) / ((1 + J) a), which
    grows with J; with J at its upper bound from the equal signature values (`jaccard_bounds`),
    a pair whose C still falls short is dropped, and a pair whose true C reaches the threshold is
    dropped with probability at most `CONFIDENCE_MISS`. "headline" pairs are kept: their verdict
    is a ratio of characters, which word sets do not bound. The sets' sizes are exact, so only
    J is estimated: at the default LSH threshold (0.2), most candidates of two texts of like
    length have C far below 0.6, and a short copy inside a long page keeps a C bound above 1."""
    first, second = pair_rows(pairs, ids)
    equal = np.zeros(pairs.height, dtype=np.int64)
    if pairs.height:
        from dedupe import compiled  # numba's import, only when there are pairs

        on_threads(compiled.equal_values, pairs.height, sketched, first, second, equal)
    bound = jaccard_bounds(config.num_perm)[equal]
    sizes = sketched[:, 0].astype(np.float64)
    smaller = np.maximum(np.minimum(sizes[first], sizes[second]), 1.0)
    containment = bound * (sizes[first] + sizes[second]) / ((1.0 + bound) * smaller)
    needed = min(config.duplicate_unsure_containment, config.duplicate_containment)
    keep = (pairs["level"] != "text").to_numpy() | (containment >= needed)
    return check(pairs.filter(pl.Series(keep, dtype=pl.Boolean)), CANDIDATES, "plausible candidates")


def story_candidates(headlines: pl.DataFrame, config: Config) -> tuple[pl.DataFrame, ShingleSets]:
    """Candidate story pairs between duplicate groups (`stories.group_headlines`), matched on
    the keywords of each group's story text: by LSH for the keyword story model, by shared
    keywords (an inverted index) for the semantic one, which must also see pairs worded apart."""
    check(headlines, GROUP_HEADLINES, "story candidates input")
    keyword_sets = {group: keywords(text) for group, text in headlines.select("duplicate_group", "story_text").iter_rows()}
    sets = ShingleSets.from_sets(keyword_sets)
    if config.story_model == "keywords":
        return candidates(sets, config.story_lsh_threshold, "story", config), sets
    return shared_keyword_pairs(keyword_sets, config.story_keyword_posting_cap), sets


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


def candidates(sets: ShingleSets, threshold: float, level: str, config: Config) -> pl.DataFrame:
    """Pairs (a < b) whose signatures share at least one LSH band at `threshold`. Empty sets
    match nothing (see `band_keys` and `bucket_pairs`)."""
    return bucket_pairs(band_keys(sets, threshold, config), level, config)


def band_keys(sets: ShingleSets, threshold: float, config: Config) -> pl.DataFrame:
    """BAND_KEYS: one row per (article, LSH band) with the band's bucket key; empty sets have none.

    datasketch's MinHashLSH chooses the bands (b bands of r rows) for the threshold; the bucketing
    itself is a polars group-by over (band, bucket key), because querying MinHashLSH for every
    article cost 11 s on the dev data where this takes well under one. The keys are kept apart
    from the bucketing so that a later run can match new articles against stored keys."""
    return _band_keys_of(sets, signatures(sets, config), threshold, config)


@lru_cache(maxsize=8)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH chooses for the threshold, found once
    per process: its integrals took 26 ms a call, 6% of a batch of 100 against 1,000 records
    (`incremental.py --profile`)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def _band_keys_of(sets: ShingleSets, signed: np.ndarray, threshold: float, config: Config) -> pl.DataFrame:
    """`band_keys` from the sets' signatures (`signed`, row for row with `sets`)."""
    order = np.array(sorted(np.flatnonzero(sets.counts), key=lambda i: sets.ids[i]), dtype=np.int64)
    if not order.size:
        return pl.DataFrame(schema=BAND_KEYS)
    bands, rows = lsh_bands(threshold, config.num_perm)
    values = signed[order, : bands * rows].astype(np.uint64)
    mixers = np.random.default_rng(config.seed).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    keys = (values.reshape(order.size, bands, rows) * mixers).sum(axis=2, dtype=np.uint64)  # wraps mod 2^64
    frame = pl.DataFrame(
        {
            "article_id": pl.Series([sets.ids[i] for i in order], dtype=pl.String).gather(np.repeat(np.arange(order.size), bands)),
            "band": np.tile(np.arange(bands, dtype=np.uint16), order.size),
            "key": keys.ravel(),
        }
    )
    return check(frame, BAND_KEYS, "band keys")


def bucket_pairs(keys: pl.DataFrame, level: str, config: Config) -> pl.DataFrame:
    """CANDIDATES: pairs (a < b) sharing a bucket. Work is linear in articles plus candidate
    pairs: a bucket of more than `lsh_max_bucket` articles (a story copied thousands of times;
    `story_lsh_max_bucket` for story buckets) links each member to its smallest id instead of to
    every other."""
    check(keys, BAND_KEYS, "bucket input")
    frame = _pair_per_bucket(keys, max_bucket(level, config)).unique().sort("article_id_a", "article_id_b")
    return check(frame.with_columns(level=pl.lit(level)), CANDIDATES, f"{level} candidates")


def new_bucket_pairs(old: pl.DataFrame, new: pl.DataFrame, level: str, config: Config) -> pl.DataFrame:
    """CANDIDATES: `bucket_pairs` of the `old` and `new` keys (BAND_KEYS) together, less the pairs
    of two articles without a new key: a run's candidates against what it has seen. Each bucket
    pairs its new members with all its members, not every member with every other: a late
    chunk's buckets hold many old members, and the pairs among them, made and dropped, were most
    of minhash duplicates (a sort and a unique of string pairs: 14.4 of its 28.1 s in the last
    chunk of a 1M day, `speed.py profile --cprofile`). As `bucket_pair_changes`, the ids are
    numbered in their sorted order and a pair is one 64-bit number, so the pairs sort as theirs."""
    check(old, BAND_KEYS, "bucket input")
    check(new, BAND_KEYS, "bucket input")
    keys = pl.concat([old, new])
    ids, number = _numbered(keys["article_id"])
    fresh = number.join(new.select("article_id").unique(), on="article_id", how="semi")["code"].implode()
    coded = keys.join(number, on="article_id").select("band", "key", "code", fresh=pl.col("code").is_in(fresh))
    buckets = (
        coded.group_by("band", "key")
        .agg(members="code", fresh=pl.col("code").filter("fresh"))
        .filter((pl.col("members").list.len() > 1) & (pl.col("fresh").list.len() > 0))
    )
    largest = max_bucket(level, config)
    small = buckets.filter(pl.col("members").list.len() <= largest).select(a="fresh", b="members").explode("a").explode("b")
    large = (  # as `_pair_per_bucket`: each member linked to the smallest, kept where either is new
        buckets.filter(pl.col("members").list.len() > largest)
        .select(a="members", b=pl.col("members").list.min())
        .explode("a")
        .filter(pl.col("a").is_in(fresh) | pl.col("b").is_in(fresh))
    )
    pairs = pl.concat([small, large]).filter(pl.col("a") != pl.col("b"))
    coded_pairs = pairs.select(pair=pl.min_horizontal("a", "b").cast(pl.UInt64) * 2**32 + pl.max_horizontal("a", "b")).unique().sort("pair")
    frame = pl.DataFrame({
        "article_id_a": ids.gather((coded_pairs["pair"] // 2**32).cast(pl.UInt32)),
        "article_id_b": ids.gather((coded_pairs["pair"] % 2**32).cast(pl.UInt32)),
    })
    return check(frame.with_columns(level=pl.lit(level)), CANDIDATES, f"{level} candidates")


def max_bucket(level: str, config: Config) -> int:
    """The bucket size above which a bucket of `level` links its members to one member."""
    return config.story_lsh_max_bucket if level == "story" else config.lsh_max_bucket


def bucket_pair_changes(
    before: pl.DataFrame, after: pl.DataFrame, level: str, config: Config, keep: pl.Series | None = None
) -> pl.DataFrame:
    """BUCKET_PAIRS, sorted by pair: per pair of `bucket_pairs` in `after` or `before` (BAND_KEYS of
    the same buckets, before and after a change), the buckets that pair it in `after` less those
    that did in `before`. Counts add up over buckets, so a later run can take away what the buckets it
    touches gave before and add what they give now, without pairing the untouched buckets again.
    Pairs whose count does not change are left out, unless they hold one of the ids `keep`
    (None: all kept): in a late chunk's touched buckets they are a third of the pairs (every two
    stored groups of a bucket that gained a new one), and a later join reads each pair's stored count.
    The ids are numbered in their sorted order first, so that pairs are made and counted as
    integers (0.6x the time of strings on the touched buckets of a 30,000-record chunk), each pair
    one 64-bit number (a group-by on one column: 8.7 -> 3.9 CPU s on the 11.3M bucket pairs of the
    1M corpus's third chunk), which also sorts the pairs as their ids sort."""
    check(before, BAND_KEYS, "bucket input")
    check(after, BAND_KEYS, "bucket input")
    ids, number = _numbered(pl.concat([before["article_id"], after["article_id"]]))

    def pairs(keys: pl.DataFrame, sign: int) -> Iterator[pl.DataFrame]:
        coded = keys.join(number, on="article_id").select("band", "key", article_id="code")
        for first in range(0, int(coded["band"].max() or 0) + 1, PAIRED_BANDS):  # each band's buckets pair alone
            found = _pair_per_bucket(coded.filter(pl.col("band").is_between(first, first + PAIRED_BANDS - 1)), max_bucket(level, config))
            paired = found.select(pair=pl.col("article_id_a").cast(pl.UInt64) * 2**32 + pl.col("article_id_b"))
            yield paired.group_by("pair").agg(buckets=pl.len().cast(pl.Int64) * sign)

    counts = pl.concat([*pairs(before, -1), *pairs(after, 1)]).group_by("pair").agg(pl.col("buckets").sum()).sort("pair")
    counts = counts.select(a=(pl.col("pair") // 2**32).cast(pl.UInt32), b=(pl.col("pair") % 2**32).cast(pl.UInt32), buckets="buckets")
    if keep is not None:
        kept = number.join(pl.DataFrame({"article_id": keep}, schema={"article_id": pl.String}), on="article_id", how="semi")["code"].implode()
        counts = counts.filter((pl.col("buckets") != 0) | pl.col("a").is_in(kept) | pl.col("b").is_in(kept))
    decoded = counts.select(article_id_a=ids.gather(counts["a"]), article_id_b=ids.gather(counts["b"]), buckets="buckets")
    return check(decoded, BUCKET_PAIRS, "bucket pair changes")


def _numbered(article_ids: pl.Series) -> tuple[pl.Series, pl.DataFrame]:
    """The distinct ids, sorted, and article_id -> code (UInt32, their position): pairs of codes
    sort as the pairs of ids do."""
    ids = article_ids.unique().sort()
    return ids, pl.DataFrame({"article_id": ids, "code": pl.int_range(ids.len(), dtype=pl.UInt32, eager=True)})


PAIRED_BANDS = 8
"""Bands whose buckets `bucket_pair_changes` pairs at once, each pair counted over them before
the next: all 37 story bands at once, a row per pair and bucket, made most of story matching's
peak (with the mends of `state.story_candidates` beside it, the first 300k's groups' candidates
peaked at 1.9 GiB, not 2.6-2.75, in 8.0 s, not 10.4-11.2: `benchmarks/state_steps.py`). A module
constant: the counts are sums either way (tests/test_minhash.py)."""


def _pair_per_bucket(keys: pl.DataFrame, largest: int) -> pl.DataFrame:
    """article_id_a < article_id_b, once for each bucket that pairs them (ids as strings, or as
    numbers in the order of theirs)."""
    buckets = keys.group_by("band", "key").agg("article_id").filter(pl.col("article_id").list.len() > 1)
    small = buckets.filter(pl.col("article_id").list.len() <= largest)
    large = buckets.filter(pl.col("article_id").list.len() > largest)
    pairs = pl.concat(
        [
            _pairs_within(small, "article_id").filter(pl.col("a") < pl.col("b")),
            large.select(a="article_id", b=pl.col("article_id").list.min()).explode("a").filter(pl.col("a") != pl.col("b")),
        ]
    )
    return pairs.select(article_id_a=pl.min_horizontal("a", "b"), article_id_b=pl.max_horizontal("a", "b"))
