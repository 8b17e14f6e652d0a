"""Persistent state of incremental runs: what was seen, how it matched, which ids stories have.

A state folder holds generations; `current` is a symlink to the one in use:

    STATE/lock                      fcntl lock file: one run at a time (holds the holder's pid)
    STATE/current -> generations/000003
    STATE/generations/000003/
        records/part-*.parquet      every record ever seen, after the first cleaning pass (RECORDS
                                    less their texts, RECORD_TEXTS)
        record_texts/part-*.arrow   their texts (STORED_TEXTS), row for row beside the records part
                                    of the same name: Arrow IPC, uncompressed, read memory-mapped
                                    by position (`History.record_rows`)
        record_sketches/part-*.npy  their sketches (`minhash.sketches`: shingle set size and MinHash
                                    signature, 129 uint32), row for row likewise: a numpy array read
                                    memory-mapped by position (`History.sketches_at`), so that
                                    candidates are filtered before any text is read
        band_keys/part-*.parquet    LSH band keys of those records, the index new ones are matched
                                    against (LEVEL_BAND_KEYS; Parquet reloads faster than Arrow IPC,
                                    see benchmarks/incremental.py)
        duplicate_pairs/part-*.parquet  confirmed duplicate pairs (PAIRS)
        articles/, article_texts/, group_headlines/, story_band_keys/, story_candidates/,
        story_keywords/, story_roots/, story_rounds/, bare_titles/, headline_pieces/,
        title_pieces/, group_bare_titles/, central_headlines/
                                    keyed tables (KEYED): the state's own copy of the articles, less
                                    their texts (LIGHT_ARTICLES) and their texts (ARTICLE_TEXTS), and
                                    what the last run's group-level steps found, so the next one
                                    redoes only what its batch changes. Each is a base and one part
                                    per run (per chunk) with the rows it changed, plus a `deleted` column
                                    (keys gone): the latest row of a key wins. When the parts
                                    outgrow COMPACT_SHARE of the base they are folded into a new
                                    base-*.parquet, so what a run writes follows its batch
                                    (amortized) and what a load reads stays within 1.5x the table
                                    (article_texts, read by key alone: when their dead rows do too).
                                    The story band keys and candidates (STORY_TABLES) are not
                                    loaded: story matching reads their rows by bucket, group, pair.
        articles.parquet, article_texts.parquet/part-*.parquet, stories.parquet, pairs.parquet,
        report.md                   the outputs over all history (the texts as parts,
                                    `write.ParquetParts`)
        story_registry.parquet      every story id ever given, when, and where it merged (STORY_REGISTRY)
        story_merges.parquet        one row per merge (STORY_MERGES)
        runs.parquet                one row of counts per run that added records (RUNS)
        files.parquet               input files read, with size and mtime: unchanged ones are skipped
        meta.json                   format version, the configuration the keys were made with,
                                    the generation the run started from (`run_after`: publishing
                                    reads the run's parts of `PUBLISHED` tables after it) and the
                                    rows of the story candidates (`story_candidates`, for the report)

What only grows (records, keys, pairs) is written once, as one part per run; a new generation
hard-links the parts it keeps, so a run writes what it adds and changes. A run writes its
generation under a temporary name, renames it, then swaps `current` with a rename: killed at any
point, the state is the one before the run or the one after it, never a mix. The texts a run
adds and its parts of the story tables are written as soon as they are made, in a temporary
folder in the generations folder (`write_ahead`, `generations/.ahead-*`), and the commit links
them in and removes it: they are not held through the story steps. The next chunk's first pass
waits there too (`shards.FirstPass`, `generations/.first-pass-*`). A killed run's are removed by
the next load.

A load reads the light tables whole and the texts of records and articles not at all: a run reads
them for the rows it touches (`History.record_rows`, `History.article_texts`), so its memory
follows the batch and the light tables; a record's texts are read by position, so their time
too. The published articles are two tables (`write.read_articles`): articles.parquet, the light
rows of every article, which the commit writes; and article_texts.parquet, the texts, in parts,
made after the commit ("publish outputs", `_published_texts`) from the last one's parts, linked
where this run changed none of their texts and rewritten where it did, and the run's new texts
after them. The outputs are then published to the output folder (hard links: the files each
renamed into place, the texts' parts as a folder a symlink points to, `write.publish_folder`) from
`current` at the end of every run, so outputs left stale by a kill are replaced by the next run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import polars_hash as plh
import pyarrow as pa
import pyarrow.compute
import pyarrow.ipc

from dedupe import clean, cluster, minhash, read, stories, verify, write
from dedupe.config import Config
from dedupe.schema import (
    ARTICLE_TEXTS,
    ARTICLES,
    BAND_KEYS,
    BARE_TITLES,
    BUCKET_PAIRS,
    CANDIDATES,
    CENTRAL_HEADLINES,
    CLEANED,
    EMBEDDINGS,
    FILES,
    GROUP_BARE_TITLES,
    GROUP_HEADLINES,
    GROUPS,
    HEADLINE_PIECES,
    LEVEL_BAND_KEYS,
    LIGHT_ARTICLES,
    PAIRS,
    READ,
    RECORD_TEXTS,
    RECORDS,
    RUNS,
    STORIES,
    STORY_KEYWORDS,
    STORY_MERGES,
    STORY_REGISTRY,
    STORY_ROOTS,
    STORY_ROUNDS,
    TITLE_PIECES,
    check,
    empty,
)

FORMAT_VERSION = 15  # 2: headline embeddings; 3: the story index (REPLACED), column-wise content hashes;
# 4: story keywords as a list column; 5: keyed tables as a base and parts per run, texts apart;
# 6: the story attachment's rounds; 7: the totals of the central headlines' candidates;
# 8: story buckets capped by `story_lsh_max_bucket` (a format 7 state's story candidates came from cap 50);
# 9: story roots follow supported story pairs (`story_pair_support`; a format 8 state's followed every pair)
# 10: story roots split where chained (`story_split_min_groups`; a format 9 state's roots were not)
# 11: records' texts apart, in Arrow IPC files read by position (record_texts/)
# 12: a run in chunks writes a part per chunk, meta.json names the generation the run started from
# 13: records' sketches (shingle set size and signature) in record_sketches/, candidates filtered by them
# 14: meta.json counts the story candidates (the story tables are read by bucket and pair, not loaded)
# 15: articles.parquet without the texts, article_texts.parquet parts rewritten where a run changed a text
GROWING = {"records": RECORDS, "band_keys": LEVEL_BAND_KEYS, "duplicate_pairs": PAIRS, "embeddings": EMBEDDINGS}
"""Tables that only grow: one part file per run, hard-linked into later generations."""
REPLACED = {
    "group_headlines": GROUP_HEADLINES, "bare_titles": BARE_TITLES, "headline_pieces": HEADLINE_PIECES, "story_keywords": STORY_KEYWORDS,
    "story_roots": STORY_ROOTS, "story_rounds": STORY_ROUNDS, "title_pieces": TITLE_PIECES, "group_bare_titles": GROUP_BARE_TITLES,
    "central_headlines": CENTRAL_HEADLINES,
}
"""Tables of the last run, loaded whole, that the next one compares its own with: what each
duplicate group says in story matching, the story attachment's rounds, what the titles taught
about decoration, and the totals of each story's central headline candidates."""
STORY_TABLES = {"story_band_keys": BAND_KEYS, "story_candidates": BUCKET_PAIRS}
"""Keyed tables not loaded: the LSH band keys of each group's keywords and every story candidate
pair with its bucket count (the confirmed ones are the `same_story` rows of pairs), read by
bucket, group and pair (`History.story_band_keys_in`, `story_band_keys_of`, `story_candidates_of`)
and written as the parts story matching gives (`write_ahead`): in a chunk of 30,000
records of 90,000 the stored band keys were 2.2M rows, of which the buckets it touched held 1.0M."""
KEYED = {
    "articles": (LIGHT_ARTICLES, ["article_id"]),
    "article_texts": (ARTICLE_TEXTS, ["article_id"]),
    "group_headlines": (GROUP_HEADLINES, ["duplicate_group"]),
    "story_band_keys": (BAND_KEYS, ["article_id", "band"]),
    "story_candidates": (BUCKET_PAIRS, ["article_id_a", "article_id_b"]),
    "bare_titles": (BARE_TITLES, ["article_id"]),
    "headline_pieces": (HEADLINE_PIECES, ["piece"]),
    "story_keywords": (STORY_KEYWORDS, ["article_id"]),
    "story_roots": (STORY_ROOTS, ["duplicate_group"]),
    "story_rounds": (STORY_ROUNDS, ["round", "story"]),
    "title_pieces": (TITLE_PIECES, ["title"]),
    "group_bare_titles": (GROUP_BARE_TITLES, ["duplicate_group", "title"]),
    "central_headlines": (CENTRAL_HEADLINES, ["story_id", "headline"]),
}
"""Tables stored as a base and one part per run with the rows it changed (schema, key)."""
assert set(REPLACED) | set(STORY_TABLES) <= set(KEYED) and not set(REPLACED) & set(STORY_TABLES)
PUBLISHED = ("articles", "article_texts")
"""Keyed tables whose rows a run changed give the published article_texts.parquet its new and
changed texts (`_published_texts`): a run in chunks keeps each chunk's part of them apart until
the run ends, and publishing reads them all."""
COMPACT_SHARE = 0.5
"""Parts are folded into a new base once their rows exceed this share of the base's: a run then
rewrites (1 + share) / share rows per row it changed, amortized, and a load reads at most
(1 + share) rows per row of the table."""
READ_BY_KEY = ("article_texts",)
"""Keyed tables never read whole: only for some keys (`History.article_texts`) and as a run's own
parts (`_run_changes`). Such a read scans the keys of every part, one file or many, so their parts
are folded only when they also hold more dead rows (earlier rows of a key, deleted keys) than
COMPACT_SHARE of the live ones: a chunk's texts are mostly its new articles', and folding
the 200,024 texts of the 1M corpus's first two chunks (24 dead) rewrote them all, 7.8 s of CPU."""
PART_COMPRESSION = {"article_texts": "lz4"}
"""Of a keyed table's Parquet parts and bases where it is not zstd: the article texts, which every
chunk writes and publishing reads, are lz4, as `write.PUBLISHED_COMPRESSION` for about twice zstd's
bytes. Over a 1M run in chunks of 100k, write texts took 37.1 s against 42.7 s and publishing
18.7 s against 20.8 s (with frames passed to the workers in shared memory; `benchmarks/speed.py
profile`, benchmarks/README.md, session 20)."""


def _compression(table: str) -> str:
    """How a part or base of `table` is compressed (`PART_COMPRESSION`)."""
    return PART_COMPRESSION.get(table, "zstd")
STORED_TEXTS = [name for name in RECORD_TEXTS if name != "text_raw"]
"""The texts of a record kept in record_texts/: `text_raw` is not, no step reads it once a record
is normalized. They are read for a run's candidate partners, 1-5% of the history spread evenly
over it, so every row group of any Parquet layout holds one: memory-mapped Arrow IPC, gathered by
row with pyarrow, reads the pages of those rows alone (1,132 of 50,000 records: `record_rows` took
20 ms, a filtered scan of the lz4 Parquet of format 9 351 ms; `benchmarks/incremental.py` prints
both). Uncompressed, as a memory map needs: 1.3x the bytes of the lz4 Parquet it replaces."""
TEXTS, SKETCHES = ("record_texts", "arrow"), ("record_sketches", "npy")
"""(folder, suffix) of the files kept row for row beside each records part."""
RUN_COUNTS = [name for name in RUNS if name not in ("generation", "run_at")]
READ_COUNTS = (
    "duplicate candidates", "dropped by signatures", "sketches read",
    "candidate partners read", "partner blocks", "largest partner block", "record reads", "records read",
    "record text files read", "record text bytes read", "cleaned again", "headline only", "story tables read whole",
    "story groups split again",
)
"""`History.counts`: the LSH candidates of new records, those their sketches ruled out and the
history sketches read for it (`plausible_candidates`); the history records read as candidate
partners, in how many blocks, the largest block (`verify_candidates`); the reads of stored texts,
the records they read, the texts files they opened and the bytes of the rows they gathered
(what follows the rows read, not the history); the records cleaned again with their texts, and
those whose headline alone was made again; the story tables read whole (`History.story_band_keys`,
`story_candidates`: never in an update, which reads them by bucket, group and pair); the
duplicate groups whose story components were split again (`story_components`)."""
UNSTORED_SETTINGS = {"top_stories", "workers", "chunk_records", "partner_block_records"}
"""Settings a state may be continued with changed; every other one shaped what it stores."""
OUTPUT_FILES = ("articles.parquet", "stories.parquet", "pairs.parquet", "report.md")
PAIR = ["article_id_a", "article_id_b"]


class StateError(RuntimeError):
    """The state folder cannot be used as asked (locked, or made with other settings)."""


@dataclass(frozen=True, kw_only=True)
class _Replaced:
    """The REPLACED tables, as fields of both `History` (the last run's) and `Update` (this run's)."""

    group_headlines: pl.DataFrame = field(default_factory=lambda: empty(GROUP_HEADLINES))
    bare_titles: pl.DataFrame = field(default_factory=lambda: empty(BARE_TITLES))
    headline_pieces: pl.DataFrame = field(default_factory=lambda: empty(HEADLINE_PIECES))
    story_keywords: pl.DataFrame = field(default_factory=lambda: empty(STORY_KEYWORDS))
    story_roots: pl.DataFrame = field(default_factory=lambda: empty(STORY_ROOTS))
    story_rounds: pl.DataFrame = field(default_factory=lambda: empty(STORY_ROUNDS))
    title_pieces: pl.DataFrame = field(default_factory=lambda: empty(TITLE_PIECES))
    group_bare_titles: pl.DataFrame = field(default_factory=lambda: empty(GROUP_BARE_TITLES))
    central_headlines: pl.DataFrame = field(default_factory=lambda: empty(CENTRAL_HEADLINES))


assert set(REPLACED) == {f.name for f in fields(_Replaced)}


@dataclass(frozen=True)
class History(_Replaced):
    """Everything earlier runs left: the growing tables, the light tables and the latest outputs.
    Texts are not loaded: `records` has its RECORD_TEXTS null and `articles` is LIGHT_ARTICLES;
    `record_rows` and `article_texts` read them for the rows a run touches."""

    records: pl.DataFrame = field(default_factory=lambda: empty(RECORDS))  # RECORD_TEXTS null
    duplicate_pairs: pl.DataFrame = field(default_factory=lambda: empty(PAIRS))
    embeddings: pl.DataFrame = field(default_factory=lambda: empty(EMBEDDINGS))  # story_model=minilm
    articles: pl.DataFrame = field(default_factory=lambda: empty(LIGHT_ARTICLES))
    stories: pl.DataFrame = field(default_factory=lambda: empty(STORIES))
    pairs: pl.DataFrame = field(default_factory=lambda: empty(PAIRS))
    registry: pl.DataFrame = field(default_factory=lambda: empty(STORY_REGISTRY))
    merges: pl.DataFrame = field(default_factory=lambda: empty(STORY_MERGES))
    runs: pl.DataFrame = field(default_factory=lambda: empty(RUNS))
    files: pl.DataFrame = field(default_factory=lambda: empty(FILES))
    report: str = ""
    generation: int = 0
    folder: Path | None = None
    """The generation the history was loaded from, where texts are read; None for no history."""
    record_part_rows: tuple[int, ...] = ()
    """The rows of each records part, in order: `records` is their rows one after the other, so a
    record's row there says which texts file holds its texts, and at which row."""
    story_candidate_count: int = 0
    """The rows of the stored story candidates (meta.json), which are not loaded to be counted."""
    counts: Counter[str] = field(default_factory=Counter, init=False, compare=False, repr=False)
    """What a run on this history read of it and cleaned again (`READ_COUNTS`), for the log of each
    chunk and the benchmarks: what follows the batch and what the history."""

    @cached_property
    def band_keys(self) -> pl.DataFrame:
        """LEVEL_BAND_KEYS of every history record, read whole when first asked for (an index
        in Redis, shards by band partition). Not loaded with the history: matching in one
        process reads only the buckets its new records fall in (`band_keys_in`)."""
        return _read_parts(self.folder / "band_keys", LEVEL_BAND_KEYS) if self.folder else empty(LEVEL_BAND_KEYS)

    @cached_property
    def story_band_keys(self) -> pl.DataFrame:
        """BAND_KEYS of every group's keywords, read whole when first asked for (tests,
        benchmarks; counted as "story tables read whole"): an update reads them by bucket and group."""
        return self._story_table("story_band_keys")

    @cached_property
    def story_candidates(self) -> pl.DataFrame:
        """BUCKET_PAIRS of every story candidate, read whole when first asked for (as `story_band_keys`)."""
        return self._story_table("story_candidates")

    def _story_table(self, name: str) -> pl.DataFrame:
        self.counts["story tables read whole"] += 1
        return _read_keyed(self.folder / name if self.folder else None, *KEYED[name])

    def story_band_keys_of(self, groups: pl.Series) -> pl.DataFrame:
        """BAND_KEYS of the `groups`, as stored (in the order of the whole table)."""
        wanted = pl.DataFrame({"article_id": groups}, schema={"article_id": pl.String})
        return _read_keyed(self.folder / "story_band_keys" if self.folder else None, *KEYED["story_band_keys"], wanted)

    def story_band_keys_in(self, buckets: pl.DataFrame) -> pl.DataFrame:
        """BAND_KEYS stored in the LSH `buckets` (band, key), as a filter of the whole table gives them."""
        folder = self.folder / "story_band_keys" if self.folder else None
        return _read_keyed(folder, *KEYED["story_band_keys"], buckets.select("band", "key"))

    def story_candidates_of(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """BUCKET_PAIRS of the stored story candidates among `pairs` (article_id_a, article_id_b)."""
        folder = self.folder / "story_candidates" if self.folder else None
        return _read_keyed(folder, *KEYED["story_candidates"], pairs.select(PAIR))

    def band_keys_in(self, level: str, buckets: pl.DataFrame) -> pl.DataFrame:
        """BAND_KEYS of the history records at `level` in the LSH `buckets` (band, key): a
        semi-join streamed over the stored parts, so the history's keys (28 a record) are never
        all in memory; in the stored order, as a filter of the whole table gives them."""
        loaded = "band_keys" in self.__dict__ or self.folder is None
        parts = [] if loaded else _parts(self.folder / "band_keys")
        stored = pl.scan_parquet(parts) if parts else self.band_keys.lazy()
        at_level = stored.filter(pl.col("level") == level).drop("level")
        touched = at_level.join(buckets.lazy(), on=["band", "key"], how="semi", maintain_order="left")
        return check(touched.collect(engine="streaming"), BAND_KEYS, "state band keys")

    def record_rows(self, ids: pl.Series, texts: Sequence[str] = STORED_TEXTS) -> pl.DataFrame:
        """CLEANED rows of the history records among `ids`, in history order, with their `texts`
        read by position from the texts files (`rows_at`). Nothing read is kept: each step reads
        what it needs (a touched record's body to group it, its texts to clean it again), which
        costs less than holding a chunk's reads (~13 ms per 1,000 rows, `benchmarks/incremental.py`)."""
        wanted = self.records.select("article_id").with_row_index("position").join(
            pl.DataFrame({"article_id": ids}, schema={"article_id": pl.String}).unique(), on="article_id", how="semi",
            maintain_order="left",
        )
        if wanted.is_empty() or self.folder is None:
            return empty(CLEANED)
        return self.rows_at(wanted["position"].to_numpy(), texts)

    def rows_at(self, positions: np.ndarray, texts: Sequence[str] = STORED_TEXTS) -> pl.DataFrame:
        """CLEANED rows of the history records at `positions` (ascending), with their `texts` read
        from the texts files and the others null."""
        stored, files = _gather_record_texts(self.folder, self.record_part_rows, positions, texts)  # type: ignore[arg-type]
        light = self.records[positions].select(name for name in CLEANED if name not in texts)
        read = pl.concat([light, stored], how="horizontal").with_columns(
            pl.lit(None, CLEANED[name]).alias(name) for name in STORED_TEXTS if name not in texts
        )
        self.counts.update({"record reads": 1, "records read": read.height, "record text files read": files,
                            "record text bytes read": int(stored.estimated_size())})
        return check(read.select(list(CLEANED)), CLEANED, "state records")

    def sketches_at(self, positions: np.ndarray, width: int) -> np.ndarray:
        """The sketches (`minhash.sketches`, `width` values a row) of the history records at
        `positions` (ascending), gathered from the memory-mapped sketch files: the pages of
        other records are not read."""
        starts = np.concatenate([[0], np.cumsum(self.record_part_rows)]).astype(np.int64)
        pieces = [np.empty((0, width), dtype=np.uint32)]
        for number, path in enumerate(_record_files(self.folder, SKETCHES) if self.folder else []):
            low, high = np.searchsorted(positions, starts[number : number + 2])
            if low < high:
                pieces.append(np.load(path, mmap_mode="r")[positions[low:high] - starts[number]])
        self.counts["sketches read"] += len(positions)
        return np.concatenate(pieces)

    def article_texts(self, ids: pl.Series) -> pl.DataFrame:
        """ARTICLE_TEXTS of the history articles among `ids`, as the last run left them."""
        if ids.is_empty():
            return empty(ARTICLE_TEXTS)
        folder = self.folder / "article_texts" if self.folder else None
        return _read_keyed(folder, *KEYED["article_texts"], pl.col("article_id").is_in(ids.implode()))

    def with_record_texts(self, frame: pl.DataFrame, texts: Sequence[str] = STORED_TEXTS) -> pl.DataFrame:
        """`frame` (CLEANED rows, texts null where they come from the history) with the stored
        `texts` of its history records; new records keep their own."""
        stored = self.record_rows(frame["article_id"], texts).select("article_id", *texts)
        joined = frame.join(stored, on="article_id", how="left", maintain_order="left", suffix="_stored")
        has_stored = pl.col("article_id").is_in(stored["article_id"].implode())
        read = [pl.when(has_stored).then(f"{name}_stored").otherwise(name).alias(name) for name in texts]
        return joined.with_columns(read).select(frame.columns)


@dataclass(frozen=True)
class Update(_Replaced):
    """What one run adds to the growing tables, and the keyed tables as they stand after it."""

    records: pl.DataFrame  # their texts null: written ahead
    sketches: np.ndarray  # of `records`, row for row (`minhash.sketches`)
    band_keys: pl.DataFrame
    duplicate_pairs: pl.DataFrame
    embeddings: pl.DataFrame
    articles: pl.DataFrame  # LIGHT_ARTICLES of every article
    ahead: Ahead  # the texts of `records` and of the articles cleaned this run (new ones among them), story matching's parts
    stories: pl.DataFrame
    pairs: pl.DataFrame
    registry: pl.DataFrame
    merges: pl.DataFrame
    run: dict[str, object]
    report: str
    files: pl.DataFrame
    story_candidate_count: int = 0


# --- reading the input against the history ---------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """The input files to read this run: new ones and those changed since they were read."""

    found: list[tuple[Path, str]]  # (file, key) as `read.discover` gives them
    files: pl.DataFrame  # FILES as they will stand after this run
    unchanged: int


def changed_files(paths: Sequence[str | Path], history: History) -> Batch:
    """The files under `paths` not read before with their current size and modification time:
    a folder where batches arrive is read for its new files only. A changed file is read whole;
    its records seen before are then skipped by `new_records`."""
    found = read.discover(paths)
    stats = [(key, (info := path.stat()).st_size, info.st_mtime_ns) for path, key in found]
    current = pl.DataFrame(stats, schema=FILES, orient="row")
    changed = current.join(history.files, on=list(FILES), how="anti")
    changed_keys = set(changed["key"])
    files = pl.concat([history.files.join(changed, on="key", how="anti"), changed]).sort("key")
    selected = [(path, key) for path, key in found if key in changed_keys]
    return Batch(selected, check(files, FILES, "files"), len(found) - len(selected))


def content_hash(records: pl.DataFrame) -> pl.Series:
    """A stable hash of each raw record: XXH3 (the polars-hash plugin; polars' own hash may change
    between versions, and these hashes are stored) of its fields, each written as its length in
    bytes and its text, or "-" when null, so that no two records write the same string. Column
    by column, not a json.dumps and an xxhash call per record."""
    # not `reason`: it names the path as given, and a record read by another path is the same record
    columns = ["title_raw", "text_raw", "url", "source", "published_at", "status"]
    fields = [pl.col(name).cast(pl.String) for name in columns]
    written = pl.concat_str(
        [pl.when(field.is_null()).then(pl.lit("-")).otherwise(pl.format("+{}:{}", field.str.len_bytes(), field)) for field in fields]
    )
    hashed = records.select(written=written).select(content_hash=plh.col("written").nchash.xxh3_64().cast(pl.String))
    return hashed.to_series()


RECORD_KEYS = ("article_id", "input_id", "content_hash")
"""What tells a record seen before (`new_records`)."""


def new_records(read: pl.DataFrame, seen: pl.DataFrame) -> pl.DataFrame:
    """READ rows plus input_id and content_hash, for the records not `seen` before (RECORD_KEYS of
    the history's records, and of a run's earlier chunks), by id and content hash. A seen id with
    other content is a new record under the id with the first free `~N` suffix, as a repeated id
    within one read."""
    check(read, READ, "new records input")
    keyed = read.with_columns(input_id=pl.col("article_id"), content_hash=content_hash(read))
    fresh = keyed.join(seen.select("input_id", "content_hash"), on=["input_id", "content_hash"], how="anti", maintain_order="left")
    clashing = fresh.join(seen.select("article_id"), on="article_id", how="semi")["article_id"]
    if clashing.is_empty():
        return fresh
    taken = set(seen["article_id"]) | set(fresh["article_id"])  # only when ids clash: rare
    renamed = {}
    for article_id in clashing:
        suffix = 2
        while f"{article_id}~{suffix}" in taken:
            suffix += 1
        renamed[article_id] = f"{article_id}~{suffix}"
        taken.add(renamed[article_id])
    return fresh.with_columns(pl.col("article_id").replace(renamed))


def with_keys(cleaned: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """RECORDS: first-pass CLEANED rows with their input_id and content_hash (from `keys`, as
    `new_records` gives them)."""
    check(cleaned, CLEANED, "records input")
    keys = keys.select(RECORD_KEYS)
    return check(cleaned.join(keys, on="article_id", how="left", maintain_order="left"), RECORDS, "records")


def all_records(history: History, records: pl.DataFrame) -> pl.DataFrame:
    """CLEANED: every record, old then new, as the first cleaning pass left it; the texts of the
    old ones null (`History.with_record_texts` reads those a step needs)."""
    return pl.concat([history.records, records]).select(list(CLEANED))


# --- matching new records against old ones --------------------------------------------------


@dataclass(frozen=True)
class Candidates:
    candidates: pl.DataFrame  # CANDIDATES with at least one new article, less those their sketches rule out
    band_keys: pl.DataFrame  # LEVEL_BAND_KEYS of the new records
    shingles: minhash.ShingleSets  # of the new records (none: made where they are verified, `shards.new_candidates`)
    involved: pl.DataFrame  # CLEANED rows of the new records in a candidate pair
    sketches: np.ndarray  # of the new records, row for row (`minhash.sketches`), to store
    partners: pl.DataFrame  # article_id, position: the history records in a candidate pair, ascending


def new_candidates(records: pl.DataFrame, history: History, config: Config) -> Candidates:
    """Duplicate candidates between new records and all records, from the stored band keys: the
    buckets a new record falls in are joined with the stored keys on (band, key), and only those
    buckets are paired, so the work follows the batch and its matches, not the history. Pairs
    whose sketches rule out verification are dropped (`plausible_candidates`); the history
    partners of the others are read when their pairs are verified (`verify_candidates`)."""
    new = records.select(list(CLEANED))
    keys, sets, sketched = minhash.duplicate_keys(new, config)
    pairs = []
    for level in minhash.DUPLICATE_THRESHOLDS:
        level_keys = keys.filter(pl.col("level") == level).drop("level")
        touched = history.band_keys_in(level, level_keys.select("band", "key").unique())
        pairs.append(minhash.new_bucket_pairs(touched, level_keys, level, config))
    candidates, partners = plausible_candidates(pl.concat(pairs), new["article_id"], sketched, history, config)
    return Candidates(candidates, keys, sets, in_pairs(new, candidates), sketched, partners)


def plausible_candidates(
    candidates: pl.DataFrame, new_ids: pl.Series, sketched: np.ndarray, history: History, config: Config
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`minhash.plausible` of candidate pairs of new records (`sketched`, row for row with
    `new_ids`) with new and history records: the history partners' sketches are read by position
    (`History.sketches_at`), never their texts, so the partners of dropped pairs are not read.
    Also the positions of the history records in the kept pairs (`Candidates.partners`), found
    here once for `verify_candidates` too: each join with the history's ids costs its length."""
    positions = history.records.select("article_id").with_row_index("position")
    ids = pl.concat([candidates["article_id_a"], candidates["article_id_b"]]).unique().to_frame("article_id")
    old = positions.join(ids, on="article_id", how="semi", maintain_order="left")  # ascending positions
    old_sketches = history.sketches_at(old["position"].to_numpy(), sketched.shape[1])
    kept = minhash.plausible(
        candidates, pl.concat([old["article_id"], new_ids]), np.concatenate([old_sketches, sketched]), config
    )
    history.counts.update({"duplicate candidates": candidates.height, "dropped by signatures": candidates.height - kept.height})
    in_kept = pl.concat([kept["article_id_a"], kept["article_id_b"]]).implode()
    return kept, old.filter(pl.col("article_id").is_in(in_kept)).select("article_id", "position")


def in_pairs(rows: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """The `rows` whose article is in one of `pairs`."""
    return rows.filter(pl.col("article_id").is_in(pl.concat([pairs["article_id_a"], pairs["article_id_b"]]).implode()))


Verifier = Callable[[pl.DataFrame, pl.DataFrame, minhash.ShingleSets, Config], pl.DataFrame]
"""verify(CLEANED rows, CANDIDATES, their shingle sets or none, config) -> PAIRS, as
`verify.verify_duplicates` (`shards.verify_duplicates` makes the sets where none are given)."""


def verify_candidates(
    matched: Candidates, history: History, config: Config, verifier: Verifier = verify.verify_duplicates
) -> pl.DataFrame:
    """PAIRS of the confirmed `matched` candidates. Their history partners are read, shingled and
    verified in blocks of at most `config.partner_block_records`, in the order of their rows in
    the history (a block's texts lie together), and only each block's verdicts are kept: a chunk
    of copies has nearly the whole history for partners (190,583 of 200,000 in the third 100k
    chunk of 300k), whose texts and shingles held at once were most of its peak. Only the body
    is read of a partner (the headline is a light column). A pair's verdict is its two records'
    alone, so the blocks give what verifying all pairs at once gives (tests/test_state.py)."""
    new = matched.involved
    new_ids = new["article_id"].implode()
    partner = pl.when(pl.col("article_id_a").is_in(new_ids)).then("article_id_b").otherwise("article_id_a")
    located = matched.candidates.join(  # a pair has one history record at most: the other is new
        matched.partners, left_on=partner, right_on="article_id", how="left", maintain_order="left"
    )
    block = (pl.col("position").rank("dense") - 1) // config.partner_block_records
    blocks = located.with_columns(block=block).sort("position").partition_by("block", as_dict=True)  # new pairs: null
    verdicts = [empty(PAIRS)]
    new_sets = matched.shingles  # sorted once (`minhash.duplicate_shingles`): a new record's pairs are in many blocks
    for (number,), pairs in blocks.items():
        at = pairs["position"].unique(maintain_order=True).drop_nulls().to_numpy()  # ascending
        old = history.rows_at(at, ["body"]) if at.size else empty(CLEANED)
        rows = pl.concat([old, in_pairs(new, pairs)])
        sets = new_sets
        if len(sets):  # else the verifier makes them
            made = minhash.duplicate_shingles(old, config)
            old_sets = minhash.ShingleSets.concat([made["text"], made["headline"]])
            sets = minhash.ShingleSets.concat([sets.of(rows["article_id"].to_list()), old_sets])
        history.counts.update({"candidate partners read": old.height, "partner blocks": int(number is not None)})
        history.counts["largest partner block"] = max(history.counts["largest partner block"], old.height)
        verdicts.append(verifier(rows, pairs.select(list(CANDIDATES)), sets, config))
        del old, rows, sets
    return check(pl.concat(verdicts).sort("article_id_a", "article_id_b"), PAIRS, "duplicate pairs")


@dataclass(frozen=True)
class Groups:
    groups: pl.DataFrame  # article_id, duplicate_group, duplicate_of of every record not rejected
    changed: pl.DataFrame  # the rows of the groups that are not exactly one of the last run's


def duplicate_groups(records: pl.DataFrame, pairs: pl.DataFrame, new: pl.DataFrame, history: History, config: Config) -> Groups:
    """`cluster.duplicate_groups` over the connected components of the duplicate-pair graph
    that hold a new record; every other record keeps the last run's group. Everything a group
    depends on lies inside its component (weak bridges, the medoid's sums over its pairs), so
    this is what one run over all records gives. The components come from one compiled pass
    over all pairs as integer arrays (`cluster.smallest_of_components`)."""
    ok = records.filter(pl.col("status") == "ok").select("article_id").with_row_index("node")
    component = cluster.smallest_of_components(ok.height, *cluster.numbered_pairs(ok["article_id"], pairs.select(PAIR)))
    new_nodes = ok.join(new.select("article_id"), on="article_id", how="semi")["node"].to_numpy()
    touched_ids = ok.filter(pl.Series(np.isin(component, component[new_nodes])))["article_id"]
    touched = touched_ids.implode()
    regrouped = cluster.duplicate_groups(  # of the texts, a group's medoid reads the body's length alone
        history.with_record_texts(records.filter(pl.col("article_id").is_in(touched)), ["body"]),
        pairs.filter(pl.col("article_id_a").is_in(touched)),
        config,
    )
    kept = history.articles.filter(pl.col("duplicate_group").is_not_null() & ~pl.col("article_id").is_in(touched))
    groups = pl.concat([kept.select(regrouped.columns), regrouped])
    before = history.articles.filter(pl.col("duplicate_group").is_not_null() & pl.col("article_id").is_in(touched))
    return Groups(groups, changed_groups(regrouped, before))


def changed_groups(groups: pl.DataFrame, before: pl.DataFrame) -> pl.DataFrame:
    """The rows of `groups` whose duplicate group is not exactly one of the groups in `before`
    (the last run's articles): new members, lost members, or new altogether. Only those are
    cleaned again with copies."""

    def membership(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.group_by("duplicate_group").agg(members=pl.col("article_id").sort().str.join("\n"))

    known = membership(before.filter(pl.col("duplicate_group").is_not_null()))
    changed = membership(groups).join(known.select("members"), on="members", how="anti")
    return groups.filter(pl.col("duplicate_group").is_in(changed["duplicate_group"].implode()))


def with_kept_cleaning(records: pl.DataFrame, changed: pl.DataFrame, history: History) -> pl.DataFrame:
    """CLEANED: `records` (with their first-pass texts) whose group did not change carry the body
    and removed lines the last run gave them (what their copies share has not changed); the
    others their first-pass cleaning."""
    grouped = history.articles.filter(pl.col("duplicate_group").is_not_null()).select("article_id")
    ids = records.join(changed.select("article_id"), on="article_id", how="anti").join(grouped, on="article_id", how="semi")
    unchanged = history.article_texts(ids["article_id"]).select(
        "article_id", kept_body="text", kept_removed="removed_lines", has_kept=pl.lit(True)
    )
    joined = records.join(unchanged, on="article_id", how="left", maintain_order="left")
    has_kept = pl.col("has_kept").fill_null(False)  # even a body the copies emptied (kept_body null)
    out = joined.with_columns(
        body=pl.when(has_kept).then("kept_body").otherwise("body"),
        removed_lines=pl.when(has_kept).then("kept_removed").otherwise("removed_lines"),
    ).select(list(CLEANED))
    return check(out, CLEANED, "records with kept cleaning")


# --- story matching against the last run ----------------------------------------------------


@dataclass(frozen=True)
class StoryCandidates:
    count: int  # candidate pairs between all groups, as a single run finds them
    to_score: pl.DataFrame  # CANDIDATES the last run did not score with both story texts as now
    dropped: pl.DataFrame  # article_id_a, article_id_b: the last run's candidates that are no more
    band_keys: pl.DataFrame  # this run's part of the stored story band keys (written ahead, `write_ahead`)
    bucket_pairs: pl.DataFrame  # and of the stored story candidates
    changed: pl.Series  # groups whose story text is not the one the last run matched
    keywords: minhash.ShingleSets  # of the changed groups, hashed: not 700k Python sets through verifying (a 1M day)


def story_candidates(headlines: pl.DataFrame, history: History, config: Config) -> StoryCandidates:
    """`minhash.story_candidates` (keyword model) for a run after others: band keys are made
    only for the groups whose story text changed (new groups, renamed ones, or a new speaking
    headline), and only the LSH buckets their old or new keys fall in are paired again: the
    last run's count of buckets per pair loses what those buckets gave then and gains what they
    give now (`minhash.bucket_pair_changes`). Every other bucket holds the same groups as before,
    so the candidates are those of a single run over everything. Only pairs in touched buckets
    can be new, gone, or hold a changed group: the others stay as stored. What is read of the
    stored tables follows the changed groups: their old keys by group, the keys in the touched
    buckets by bucket, the counts of the pairs that changed by pair; what is written, the rows
    that differ (written ahead, `write_ahead`)."""
    check(headlines, GROUP_HEADLINES, "story candidates input")
    changed = headlines.join(history.group_headlines, on=list(GROUP_HEADLINES), how="anti", nulls_equal=True)
    keywords = minhash.ShingleSets.from_sets(
        {group: minhash.keywords(text) for group, text in changed.select("duplicate_group", "story_text").iter_rows()}
    )
    new_keys = minhash.band_keys(keywords, config.story_lsh_threshold, config)
    gone = history.group_headlines.join(headlines, on="duplicate_group", how="anti")["duplicate_group"]
    moved = pl.concat([changed["duplicate_group"], gone])  # the groups whose stored keys can differ or go
    old_keys = history.story_band_keys_of(moved)
    keys_part = _changes(new_keys, old_keys, KEYED["story_band_keys"][1])
    before = history.story_band_keys_in(pl.concat([new_keys, old_keys]).select("band", "key"))
    after = pl.concat([before.filter(~pl.col("article_id").is_in(moved.implode())), new_keys])
    # a pair of unchanged groups whose count stays keeps its row and its verdict: left out
    delta = minhash.bucket_pair_changes(before, after, "story", config, keep=changed["duplicate_group"])
    was = history.story_candidates_of(delta)
    if was.is_empty():  # nothing stored to add to (a first run): the pairs as they are, not a joined copy
        now = delta.with_columns(existed=pl.lit(False))
    else:
        now = delta.join(was, on=PAIR, how="left", suffix="_before", maintain_order="left").select(
            *PAIR, buckets=pl.col("buckets") + pl.col("buckets_before").fill_null(0), existed=pl.col("buckets_before").is_not_null()
        )
    # sorted (as `delta`): the state's files are the same bytes for the same batches (benchmarks/faults.py)
    touched_counts = now.filter(pl.col("buckets") > 0).select(*PAIR, "buckets")
    changed_groups = changed["duplicate_group"].implode()
    is_changed = pl.col("article_id_a").is_in(changed_groups) | pl.col("article_id_b").is_in(changed_groups)
    to_score = now.filter((pl.col("buckets") > 0) & (is_changed | ~pl.col("existed"))).select(*PAIR, level=pl.lit("story"))
    dropped = now.filter((pl.col("buckets") == 0) & pl.col("existed")).select(PAIR)
    return StoryCandidates(
        history.story_candidate_count + touched_counts.height - was.height,
        check(to_score, CANDIDATES, "story candidates to score"), dropped, keys_part,
        _changes(touched_counts, was, PAIR), changed["duplicate_group"], keywords,
    )


def verify_story_candidates(
    headlines: pl.DataFrame, found: StoryCandidates, history: History, config: Config
) -> pl.DataFrame:
    """`verify.verify_stories` for the candidate pairs not scored by the last run with both
    groups' story texts as they are now; the others keep the last run's verdict (a pair's
    score depends on its two story texts alone). Keywords are made for the groups of the pairs
    found similar only (`verify.story_pairs`): most candidates of a late chunk pair a new group
    with a history group, whose keywords are not kept."""
    similar = verify.similar_stories(headlines, found.to_score, config)
    involved = pl.concat([similar["article_id_a"], similar["article_id_b"]]).unique().implode()
    texts = headlines.filter(pl.col("duplicate_group").is_in(involved))
    made = {  # the history groups': the changed ones' were made to find candidates
        group: minhash.keywords(text)
        for group, text in texts.select("duplicate_group", "story_text").iter_rows()
        if group not in found.keywords
    }
    keywords = minhash.ShingleSets.concat([found.keywords.of(texts["duplicate_group"].to_list()), minhash.ShingleSets.from_sets(made)])
    confirmed = verify.story_pairs(similar, keywords)
    changed = found.changed.implode()
    still = (
        history.pairs.filter(pl.col("relation") == "same_story")
        .filter(~pl.col("article_id_a").is_in(changed) & ~pl.col("article_id_b").is_in(changed))
        .join(found.dropped, on=PAIR, how="anti")
    )
    return check(pl.concat([still, confirmed]).sort(PAIR), PAIRS, "story pairs")


def story_keywords(cleaned: pl.DataFrame, history: History) -> tuple[pl.DataFrame, pl.Series]:
    """STORY_KEYWORDS of every record, to use and to keep: `cluster.story_keywords` made again
    only for the records whose headline is not the last run's (a record's URL never changes);
    the others' are the stored lists, read as a column without a Python object per record. And
    the article ids of those made again, for `previous_attachment`."""
    check(cleaned, CLEANED, "story keywords input")
    same = cleaned.select("article_id", "headline").join(
        history.articles.select("article_id", "headline"), on=["article_id", "headline"], how="semi", nulls_equal=True
    )
    kept = history.story_keywords.join(same, on="article_id", how="semi")
    made = cluster.story_keywords(cleaned.join(kept, on="article_id", how="anti"))
    return check(pl.concat([kept, made]).sort("article_id"), STORY_KEYWORDS, "story keywords"), made["article_id"]


def story_components(groups: pl.DataFrame, story_pairs: pl.DataFrame, history: History, config: Config) -> pl.DataFrame:
    """STORY_ROOTS: `cluster.story_components` for the components of the story-pair graph that
    hold a new group or a pair that is new or gone since the last run; every other component has
    the same groups and pairs as then, so the same weak bridges, splits and names, and keeps them."""
    canonical = groups.select("duplicate_group").unique().sort("duplicate_group").with_row_index("node")
    pairs = story_pairs.select("article_id_a", "article_id_b")
    before = history.pairs.filter(pl.col("relation") == "same_story").select("article_id_a", "article_id_b")
    moved = pl.concat([pairs.join(before, on=list(pairs.columns), how="anti"), before.join(pairs, on=list(pairs.columns), how="anti")])
    new_groups = canonical.join(history.story_roots, on="duplicate_group", how="anti")["duplicate_group"]
    touched_groups = pl.concat([moved["article_id_a"], moved["article_id_b"], new_groups]).implode()
    a, b = cluster.numbered_pairs(canonical["duplicate_group"], pairs)
    component = cluster.smallest_of_components(canonical.height, a, b)
    seeds = canonical.filter(pl.col("duplicate_group").is_in(touched_groups))["node"].to_numpy()
    inside = np.isin(component, component[seeds])
    touched = canonical.filter(pl.Series(inside))["duplicate_group"]
    history.counts["story groups split again"] += touched.len()
    # the touched components' pairs, numbered among the touched groups (both ends lie in one component)
    position, pair_inside = np.cumsum(inside) - 1, inside[a]
    redone = cluster.story_roots(touched, position[a[pair_inside]], position[b[pair_inside]], config)
    kept = history.story_roots.join(canonical, on="duplicate_group", how="semi").filter(~pl.col("duplicate_group").is_in(touched.implode()))
    roots = pl.concat([kept, redone]).sort("duplicate_group")
    return check(roots, STORY_ROOTS, "story roots")


def previous_attachment(history: History, remade: pl.Series | None = None) -> cluster.Previous:
    """What the last run's story attachment saw and decided, for `cluster.attach_stories` to
    replay; `remade`: the articles whose keywords this run made again (`story_keywords`)."""
    members = history.articles.filter(pl.col("duplicate_group").is_not_null()).select("article_id", "duplicate_group")
    placed = members.join(history.story_roots, on="duplicate_group").select("article_id", story="root")
    return cluster.Previous(placed, history.story_keywords, history.story_rounds, remade)


def headline_decorations(
    records: pl.DataFrame, groups: pl.DataFrame, changed: pl.DataFrame, history: History
) -> tuple[clean.Decorations, dict[str, pl.DataFrame]]:
    """`clean.headline_decorations` learnt from what changed since the last run, and the tables
    to store (BARE_TITLES, HEADLINE_PIECES, TITLE_PIECES, GROUP_BARE_TITLES).

    A title's pieces depend on the title alone: made for titles not seen before. A group's bare
    titles depend on its titles and on which titles exist: found again for the changed groups
    and for the groups holding a title that extends a new title; the others keep theirs. The
    decoration pieces are then counted over all titles with joins, and a record's bare title is
    checked against its URL again only where its title's bare title changed. Same steps as one
    run, so the same decorations (tests/test_state.py)."""
    titles = clean.decoration_titles(records, groups.select("article_id", "duplicate_group"))
    distinct = titles.select("title").unique()
    seen = distinct.join(history.title_pieces.select("title"), on="title", how="semi")
    new_titles = distinct.join(seen, on="title", how="anti")["title"]
    pieces = pl.concat([history.title_pieces.join(seen, on="title", how="semi"), clean.title_pieces(new_titles.sort().to_list())])
    extending = pieces.explode("prefixes").filter(pl.col("prefixes").is_in(new_titles.implode())).select("title")
    regrouped = pl.concat([changed["duplicate_group"], titles.join(extending, on="title", how="semi")["duplicate_group"]]).unique()
    affected = titles.filter(pl.col("duplicate_group").is_in(regrouped.implode()))
    titles_of_group = dict(affected.group_by("duplicate_group").agg(pl.col("title").unique()).iter_rows())
    existing = titles.select("duplicate_group").unique()
    bare = pl.concat([
        history.group_bare_titles.join(existing, on="duplicate_group", how="semi").filter(~pl.col("duplicate_group").is_in(regrouped.implode())),
        clean.bare_titles_in_groups(titles_of_group, set(distinct["title"])),
    ]).sort("duplicate_group", "title")
    found = clean.decoration_pieces(titles, bare, pieces)

    def bare_of(table: pl.DataFrame) -> pl.DataFrame:
        return table.select("title", "bare_title").unique("title")

    moved = bare_of(bare).join(bare_of(history.group_bare_titles), on="title", how="full", coalesce=True, suffix="_before").filter(
        pl.col("bare_title").ne_missing(pl.col("bare_title_before"))
    )
    new = titles.join(history.articles.select("article_id"), on="article_id", how="anti")
    redo = pl.concat([new, titles.join(moved.select("title"), on="title", how="semi")]).unique("article_id")
    kept = history.bare_titles.join(titles.select("article_id"), on="article_id", how="semi").join(redo, on="article_id", how="anti")
    redone = pl.DataFrame(list(clean.record_bare_titles(redo, bare).items()), schema=BARE_TITLES, orient="row")
    bare_titles = pl.concat([kept, redone]).sort("article_id")
    tables = {
        "bare_titles": check(bare_titles, BARE_TITLES, "bare titles"),
        "headline_pieces": pl.DataFrame({"piece": sorted(found)}, schema=HEADLINE_PIECES),
        "title_pieces": check(pieces.sort("title"), TITLE_PIECES, "title pieces"),
        "group_bare_titles": check(bare, GROUP_BARE_TITLES, "group bare titles"),
    }
    return clean.Decorations(found, dict(bare_titles.iter_rows())), tables


def to_clean_again(
    records: pl.DataFrame, changed: pl.DataFrame, decorations: dict[str, pl.DataFrame], history: History
) -> pl.DataFrame:
    """The `records` whose second cleaning pass can differ from the last run's: new ones, the
    members of changed groups (what their copies share changed), and those whose headline
    decoration changed (another bare title, or a decoration piece gained or lost that could
    be one of their title's pieces); `decorations` as `headline_decorations` gives them. Any other record keeps the last run's headline and body:
    `clean.clean` is a function of the record, what its copies share and the decorations alone."""
    new = records.join(history.articles.select("article_id"), on="article_id", how="anti")["article_id"]
    bare = decorations["bare_titles"]
    moved = bare.join(history.bare_titles, on="article_id", how="full", coalesce=True, suffix="_before").filter(
        pl.col("bare_title").ne_missing(pl.col("bare_title_before"))
    )["article_id"]
    pieces = set(history.headline_pieces["piece"]) ^ set(decorations["headline_pieces"]["piece"])
    decorated = pl.Series("article_id", [], dtype=pl.String)
    if pieces:  # a title's pieces are whole runs of its folded words, so this finds every title a piece can touch
        # each distinct title folded once (copies share theirs) and searched for all pieces at once
        # (polars' Aho-Corasick), where a Python loop tested each piece in each title: with dozens of
        # pieces that was most of the step on a big state (cProfile of the 1M corpus's third chunk)
        titles = records["title"].drop_nulls().unique()
        titles = titles.filter(may_hold_a_piece(titles, pieces))
        folded = pl.Series([f" {clean.fold(title)} " for title in titles.to_list()], dtype=pl.String)
        touched = titles.filter(folded.str.contains_any([f" {piece} " for piece in pieces]))
        decorated = records.filter(pl.col("title").is_in(touched.implode()))["article_id"]
    again = pl.concat([new, changed["article_id"], moved, decorated])
    return records.filter(pl.col("article_id").is_in(again.implode()))


def may_hold_a_piece(titles: pl.Series, pieces: set[str]) -> pl.Series:
    """Whether each title may hold one of the folded `pieces` (`clean.fold`): an ASCII title
    folds to its lower-cased words, so it holds a piece only if it holds the piece's longest
    word, case aside; other titles fold their own way and are always kept. Folding every title
    in Python, to find those few, was most of the lookup: 4.5 of 5.3 s in a 1M day's last chunk
    (`speed.py profile --cprofile "clean with copies"`)."""
    longest = sorted({max(words, key=len) for words in (piece.split() for piece in pieces) if words})
    other = minhash.beyond_ascii(titles)
    return other | titles.str.contains_any(longest, ascii_case_insensitive=True) if longest else other


def headline_only(again: pl.DataFrame, changed: pl.DataFrame, history: History, config: Config) -> pl.DataFrame:
    """The rows of `again` (`to_clean_again`) that only need their headline made again: history
    records whose body and removed lines cannot change, so their texts need not be read
    (`headlines_again`), nor stored again. Those are the records in a group that did not change,
    whose headline decoration did (`with_kept_cleaning` would give them the last run's body), and
    the records of a changed group too small to clean against its copies
    (`consensus_min_copies`, `clean.with_copies`) whose group was too small in the last run too:
    both runs leave them their first pass's body. A new copy that made a pair had the old member
    read and stored again for the same body: the texts cleaned again in a 1M day's last chunk
    were 825 MiB, now 586 (`speed.py profile --chunk 100000`)."""
    grouped = history.articles.filter(pl.col("duplicate_group").is_not_null()).select("article_id", "duplicate_group")
    unchanged = grouped.join(changed.select("article_id"), on="article_id", how="anti")
    small = pl.len().over("duplicate_group") < config.consensus_min_copies
    small_both = grouped.filter(small).join(changed.filter(small), on="article_id", how="semi")
    kept = pl.concat([unchanged.select("article_id"), small_both.select("article_id")])
    return again.join(kept, on="article_id", how="semi", maintain_order="left")


def headlines_again(rows: pl.DataFrame, decorations: clean.Decorations, history: History) -> pl.DataFrame:
    """CLEANED of `headline_only` rows (texts null, as the history gives them): the headline and
    status `clean.clean` gives them with `decorations`, and their texts left unread (null), as
    for a record not cleaned again: the articles keep the last run's body and removed lines. Of
    the body, the second pass reads whether there is one (a record with neither headline nor
    body is rejected): the last run's `text_chars` tell, and stand in for it as an empty string."""
    check(rows, CLEANED, "headlines again input")
    has_body = history.articles.select("article_id", has_body=pl.col("text_chars").is_not_null())
    stand_in = rows.join(has_body, on="article_id", how="left", maintain_order="left").select(
        *(pl.when("has_body").then(pl.lit("")).alias(name) if name == "body" else pl.col(name) for name in CLEANED)
    )
    out = clean.clean(stand_in, {}, decorations).with_columns(body=pl.lit(None, pl.String))
    return check(out, CLEANED, "headlines again")


def with_kept_headlines(records: pl.DataFrame, cleaned_again: pl.DataFrame, history: History) -> pl.DataFrame:
    """CLEANED in the order of `records`: the rows of `cleaned_again`, and for every other
    record the headline and status (rejected when cleaning left nothing) of the last run."""
    check(cleaned_again, CLEANED, "cleaned again")
    before = history.articles.select(
        "article_id", "headline", status=pl.when(pl.col("status") == "rejected").then(pl.lit("rejected")).otherwise(pl.lit("ok")), reason="reason"
    )
    rest = (
        records.join(cleaned_again.select("article_id"), on="article_id", how="anti")
        .drop("headline", "status", "reason")
        .join(before, on="article_id", how="left")
        .select(list(CLEANED))
    )
    merged = pl.concat([cleaned_again, rest])
    out = records.select("article_id").join(merged, on="article_id", how="left", maintain_order="left")
    return check(out, CLEANED, "cleaned with kept headlines")


def light_articles(articles: pl.DataFrame, figures: pl.DataFrame, history: History) -> pl.DataFrame:
    """LIGHT_ARTICLES of `articles` (ARTICLES, their texts unread): the length of the text and
    the removed rules of those cleaned this run from their `figures` (`write_texts`), the others'
    the last run's."""
    check(articles, ARTICLES, "light articles input")
    made = figures.with_columns(made=pl.lit(True))
    stored = history.articles.select("article_id", stored_chars="text_chars", stored_rules="removed_rules")
    out = articles.join(made, on="article_id", how="left", maintain_order="left").join(
        stored, on="article_id", how="left", maintain_order="left"
    ).with_columns(
        text_chars=pl.when("made").then("made_chars").otherwise("stored_chars"),
        removed_rules=pl.when("made").then("made_rules").otherwise("stored_rules"),
    )
    return check(out.select(list(LIGHT_ARTICLES)), LIGHT_ARTICLES, "light articles")


@dataclass(frozen=True)
class Ahead:
    """Parts of a run's generation written before its commit, which links them in (`commit`):
    the new records' texts, the texts of the articles cleaned this run, and story matching's
    parts of the story tables. Held in memory through the story steps instead, they were ~2.5 GiB
    of a 1M run's last chunk, where it peaked (benchmarks/README.md, *A chunk's texts written ahead*)."""

    folder: tempfile.TemporaryDirectory[str]  # removed by the commit, or with the last reference to it
    rows: Mapping[str, int] = field(default_factory=dict)  # a table's part written: its rows

    def file(self, table: str) -> Path:
        return Path(self.folder.name) / f"{table}.{TEXTS[1] if table == TEXTS[0] else 'parquet'}"

    def remove(self) -> None:
        self.folder.cleanup()


AHEAD_SCHEMAS = {
    TEXTS[0]: {name: RECORDS[name] for name in STORED_TEXTS},
    "article_texts": {**ARTICLE_TEXTS, "deleted": pl.Boolean},
    **{name: {**schema, "deleted": pl.Boolean} for name, schema in STORY_TABLES.items()},
}
"""The parts a run writes ahead, as its generation stores them."""


def write_ahead(ahead: Ahead | None, parts: Mapping[str, pl.DataFrame], near: Path | None = None) -> Ahead:
    """`ahead` with `parts` (table -> its part, as AHEAD_SCHEMAS) written in its folder: a new
    temporary folder in `near` for None (a state's generations folder, so that the commit links
    the files; None, the system's). Record texts as `_write_records` keeps them: Arrow IPC,
    uncompressed, at the oldest compatibility level; the others as `_compression` says."""
    if ahead is None:
        if near is not None:
            near.mkdir(parents=True, exist_ok=True)
        ahead = Ahead(tempfile.TemporaryDirectory(prefix=".ahead-", dir=near, ignore_cleanup_errors=True))
    for table, part in parts.items():
        check(part, AHEAD_SCHEMAS[table], f"{table} written ahead")
        if table == TEXTS[0]:
            part.write_ipc(ahead.file(table), compression="uncompressed", compat_level=pl.CompatLevel.oldest())
        else:
            part.write_parquet(ahead.file(table), compression=_compression(table))
    return replace(ahead, rows={**ahead.rows, **{table: part.height for table, part in parts.items()}})


def write_texts(records: pl.DataFrame, texts: pl.DataFrame, near: Path | None) -> tuple[pl.DataFrame, pl.DataFrame, Ahead]:
    """The texts the commit stores, written ahead (`write_ahead`): of the new `records` (RECORDS)
    and of the articles cleaned this run (`texts`, ARTICLE_TEXTS). Returns `records` with their
    texts null, what LIGHT_ARTICLES keeps of the articles' texts (article_id, made_chars,
    made_rules: `light_articles`) and the parts written."""
    check(texts, ARTICLE_TEXTS, "article texts to write")
    parts = {TEXTS[0]: check(records, RECORDS, "records to write").select(STORED_TEXTS), "article_texts": _with_deleted(texts, False)}
    figures = write.text_figures(texts).rename({"text_chars": "made_chars", "removed_rules": "made_rules"})
    ahead = write_ahead(None, parts, near)
    return records.with_columns(pl.lit(None, RECORDS[name]).alias(name) for name in RECORD_TEXTS), figures, ahead


# --- stable story ids ------------------------------------------------------------------------


@dataclass(frozen=True)
class StoryIds:
    groups: pl.DataFrame  # GROUPS with stable story ids
    registry: pl.DataFrame  # STORY_REGISTRY after this run
    merges: pl.DataFrame  # STORY_MERGES of this run


def stable_story_ids(groups: pl.DataFrame, history: History, run_at: datetime) -> StoryIds:
    """Map this run's stories (fresh ids from clustering) to ids that never change.

    Each old story passes its id to the new story holding most of its articles (ties: the
    smaller fresh id). A new story given several old ids keeps the oldest (then the smallest)
    and the others are recorded as merged into it; a new story given none gets its fresh id,
    suffixed if that id was ever given before, so an id never means two stories.

    Joins and group-bys over every article; only the new stories' names are found in Python.
    Python dictionaries over every article made this step 0.29 s of a 1.36 s batch against
    50,000 records (benchmarks/README.md, *Published texts in parts, an arrival order, stable
    story ids in polars*)."""
    check(groups, GROUPS, "stable ids input")
    before = history.articles.select("article_id", old="story_id").drop_nulls()
    created = history.registry.select(old="story_id", created_at="created_at")
    shares = groups.select("article_id", fresh="story_id").join(before, on="article_id").group_by("old", "fresh").len()
    heirs = (  # old, fresh (its heir), created_at, into (the heir's oldest old id), by fresh, then age
        shares.sort("old", "len", "fresh", descending=[False, True, False])
        .unique("old", keep="first")
        .join(created, on="old", how="left")
        .sort("fresh", "created_at", "old")
        .with_columns(into=pl.col("old").first().over("fresh"))
    )
    if heirs["created_at"].null_count():
        raise StateError(f"story ids: {heirs.filter(pl.col('created_at').is_null())['old'][0]} has no creation time in the story registry")
    claimed = heirs.select("fresh", name="into").unique("fresh")
    unclaimed = groups.select(fresh="story_id").unique().join(claimed, on="fresh", how="anti")["fresh"].sort()
    opened = _new_story_names(unclaimed, history.registry["story_id"])
    merges = heirs.filter(pl.col("old") != pl.col("into"))
    new_entries = pl.DataFrame(
        {"story_id": opened["name"].sort(), "created_at": [run_at] * opened.height, "merged_into": [None] * opened.height},
        schema=STORY_REGISTRY,
    )
    merged_into = pl.col("story_id").replace_strict(merges["old"], merges["into"], default=None, return_dtype=pl.String)
    registry = pl.concat(
        [history.registry.with_columns(merged_into=pl.coalesce("merged_into", merged_into)), new_entries]
    )
    merges_frame = merges.select(story_id="old", merged_into="into", merged_at=pl.lit(run_at, dtype=STORY_MERGES["merged_at"]))
    out = (
        groups.join(pl.concat([claimed, opened]), left_on="story_id", right_on="fresh", how="left", maintain_order="left")
        .with_columns(story_id=pl.col("name"))
        .drop("name")
    )
    return StoryIds(check(out, GROUPS, "stable groups"), check(registry, STORY_REGISTRY, "registry"), check(merges_frame, STORY_MERGES, "merges"))


def _new_story_names(fresh: pl.Series, given: pl.Series) -> pl.DataFrame:
    """fresh, name: each of the sorted `fresh` ids of new stories with its name, the id itself
    or, where it was ever `given` (or named before it here), the id suffixed -2, -3, ..."""
    taken = set(given.filter(given.is_in(fresh.implode()) | given.str.replace(r"-\d+$", "").is_in(fresh.implode())))
    names = []
    for name in fresh:
        suffix, candidate = 1, name
        while candidate in taken:
            suffix += 1
            candidate = f"{name}-{suffix}"
        taken.add(candidate)
        names.append(candidate)
    return pl.DataFrame({"fresh": fresh, "name": names}, schema={"fresh": pl.String, "name": pl.String})


def run_counts(batch: Batch, records_in: int, records: pl.DataFrame, articles: pl.DataFrame,
               stories: pl.DataFrame, story_ids: StoryIds, history: History) -> dict[str, int]:
    """The counts of RUNS (less generation and time) for a run that added `records`."""
    new = articles.join(records.select("article_id"), on="article_id", how="semi")
    before = history.stories.select("story_id", before="article_ids")
    compared = stories.select("story_id", "article_ids").join(before, on="story_id")
    return {
        "files_read": len(batch.found),
        "files_unchanged": batch.unchanged,
        "records_in": records_in,
        "already_seen": records_in - records.height,
        "new": records.height,
        "new_duplicates": new.filter(pl.col("status") == "duplicate").height,
        "new_rejected": new.filter(pl.col("status") == "rejected").height,
        "stories_opened": stories.height - compared.height,
        "stories_updated": compared.filter(pl.col("article_ids") != pl.col("before")).height,
        "stories_merged": story_ids.merges.height,
    }


def build_changed_stories(articles: pl.DataFrame, history: History) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`stories.build_stories` for the stories whose member rows (LIGHT_ARTICLES: the length of
    a text, not the text) changed since the last run; the others as it built them then. A
    story's row depends on its members' rows alone, so a batch rebuilds the stories it touches,
    not all of them; their central headlines are found from the totals the last run kept
    (`stories.headline_totals`), so a story that gained an article scores its new headlines
    only. Returns the stories and the totals to keep (CENTRAL_HEADLINES)."""
    check(articles, LIGHT_ARTICLES, "changed stories input")

    def members(frame: pl.DataFrame) -> pl.DataFrame:
        in_stories = frame.filter(pl.col("story_id").is_not_null())
        hashed = in_stories.select("story_id", row=in_stories.hash_rows())
        return hashed.group_by("story_id").agg(pl.col("row").sort())

    same = members(articles).join(members(history.articles), on="story_id", suffix="_before")
    unchanged = same.filter(pl.col("row") == pl.col("row_before"))["story_id"].implode()
    changed = articles.filter(~pl.col("story_id").is_in(unchanged))
    candidates = stories.central_candidates(changed.filter(pl.col("story_id").is_not_null()))
    totals = stories.headline_totals(candidates, history.central_headlines)
    rebuilt = stories.build_stories(changed, stories.central_headlines(totals))
    kept = history.stories.filter(pl.col("story_id").is_in(unchanged))
    out = pl.concat([rebuilt, kept]).sort(["n_articles", "story_id"], descending=[True, False])  # as `build` sorts
    kept_totals = history.central_headlines.filter(pl.col("story_id").is_in(unchanged))
    exact = totals.filter("exact").drop("exact")
    totals_to_keep = check(pl.concat([kept_totals, exact]), CENTRAL_HEADLINES, "central headlines")
    return check(out, STORIES, "stories"), totals_to_keep


def story_overview(stories: pl.DataFrame, registry: pl.DataFrame, top: int) -> pl.DataFrame:
    """The `top` largest and the `top` newest stories (by when their id was given), one table."""
    dated = stories.join(registry.select("story_id", "created_at"), on="story_id", how="left")
    columns = ["story_id", "n_articles", "first_seen", "last_seen", "created_at", "headline"]
    largest = dated.head(top).select(pl.lit("largest").alias("list"), *columns)
    newest = dated.sort(["created_at", "last_seen", "story_id"], descending=[True, True, False], nulls_last=True)
    both = pl.concat([largest, newest.head(top).select(pl.lit("newest").alias("list"), *columns)])
    return both.with_columns(pl.col("first_seen", "last_seen", "created_at").dt.strftime("%Y-%m-%d %H:%M"))


# --- the state folder ------------------------------------------------------------------------


@contextmanager
def locked(state: Path, wait: bool = True, notify: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the state's lock for one run. A second run waits for it (or, with `wait=False`,
    stops with a StateError naming the holder). The kernel drops the lock when its holder dies,
    so a killed run never leaves the state locked."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (state / "lock").read_text().strip() or "another process"
            if not wait:
                raise StateError(f"state {state} is in use by another run ({holder}); try again when it ends") from None
            notify(f"state {state} is in use by another run ({holder}); waiting for it to end")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(state: Path, config: Config) -> History:
    """The current generation of `state`, or an empty history. Leftovers of a killed run
    (temporary or unused generations) are removed; call under `locked`."""
    current = _current(state)
    _remove_unused_generations(state, current)
    return History() if current is None else load_generation(current, config)


def load_generation(current: Path, config: Config) -> History:
    """The history a generation holds: the current one (`load`), or one a run in chunks
    committed for its last chunk and not yet made current (`commit`)."""
    state = current.parent.parent
    meta = json.loads((current / "meta.json").read_text())
    if meta["format"] != FORMAT_VERSION:
        raise StateError(
            f"state {state} has format {meta['format']}, this version reads {FORMAT_VERSION}: "
            "run on the same inputs with a new --state folder to build it again"
        )
    differing = {
        name: value
        for name, value in meta["config"].items()
        if getattr(config, name, None) != value and name not in UNSTORED_SETTINGS
    }
    if differing:
        settings = ", ".join(f"{name}={value}" for name, value in differing.items())
        raise StateError(
            f"state {state} was made with {settings} (this run: "
            f"{', '.join(f'{name}={getattr(config, name, None)}' for name in differing)}); "
            "use the same settings or another --state folder"
        )
    loaded_whole = [name for name in GROWING if name not in ("records", "band_keys")]  # both read by row or bucket
    growing = {name: _read_parts(current / name, GROWING[name]) for name in loaded_whole}
    tables = {
        name: pl.read_parquet(current / f"{name}.parquet")
        for name in ("stories", "pairs", "story_registry", "story_merges", "runs", "files")
    }
    keyed = {name: _read_keyed(current / name, *KEYED[name]) for name in ("articles", *REPLACED)}
    records, part_rows = _read_light_records(current / "records")
    return History(
        **growing,
        **keyed,
        records=records,
        record_part_rows=part_rows,
        story_candidate_count=meta["story_candidates"],
        stories=check(tables["stories"], STORIES, "state stories"),
        pairs=check(tables["pairs"], PAIRS, "state pairs"),
        registry=check(tables["story_registry"], STORY_REGISTRY, "state registry"),
        merges=check(tables["story_merges"], STORY_MERGES, "state merges"),
        runs=check(tables["runs"], RUNS, "state runs"),
        files=check(tables["files"], FILES, "state files"),
        report=(current / "report.md").read_text(),
        generation=int(current.name),
        folder=current,
    )


def commit(
    state: Path,
    history: History,
    update: Update,
    config: Config,
    run_from: History | None = None,
    make_current: bool = True,
) -> Path:
    """Write the next generation beside the current one and make it current with one rename.
    What it writes follows the batch: the growing tables' new part, and a part per keyed table
    with the rows this run changed (compacted now and then, see COMPACT_SHARE), and the light
    articles.parquet whole; the published texts (article_texts.parquet) come after, in `publish`.

    A run in chunks commits each chunk on top of the last one's generation (`history`), made
    current with the last chunk alone (`make_current`), so a run killed half-way leaves the
    state as it was: `run_from` is the history the run started from. Each chunk writes its own
    part of each keyed table; the parts of `PUBLISHED` tables stay apart until the run ends
    (`_compact_if_grown` leaves them), so that publishing finds all of them (`_run_changes`);
    its runs row and merges replace the last chunk's."""
    generation = history.generation + 1
    generations = state / "generations"
    temporary = generations / f".tmp-{generation:06d}-{os.getpid()}"
    previous = history.folder if run_from is not None else _current(state)
    started = run_from.folder if run_from is not None else previous  # its article_texts.parquet is the published one
    run_after = (run_from or history).generation  # this run's parts are those of later generations
    if started is not None:
        _published_texts(started)  # a run killed before publishing left it to do
    temporary.mkdir(parents=True)
    for folder in (TEXTS, SKETCHES):
        (temporary / folder[0]).mkdir()
        for part in _record_files(previous, folder) if previous is not None else []:
            _link(part, temporary / folder[0] / part.name)
    for name, schema in GROWING.items():
        (temporary / name).mkdir()
        if previous is not None:
            for part in _parts(previous / name):
                _link(part, temporary / name / part.name)
        rows = check(getattr(update, name), schema, f"new {name}")
        if rows.height and name == "records":
            _write_records(rows, update.sketches, update.ahead, temporary, f"part-{generation:06d}")
        elif rows.height:
            rows.write_parquet(temporary / name / f"part-{generation:06d}.parquet")
    for name, (schema, key) in KEYED.items():
        (temporary / name).mkdir()
        if previous is not None:
            for part in _parts(previous / name):
                _link(part, temporary / name / part.name)
        part = temporary / name / f"part-{generation:06d}.parquet"
        if name in AHEAD_SCHEMAS:  # story matching's parts and the texts: written ahead as they are
            if update.ahead.rows.get(name):
                _link(update.ahead.file(name), part)
        elif (changes := _changes(check(getattr(update, name), schema, f"new {name}"), getattr(history, name), key)).height:
            changes.write_parquet(part)
        _compact_if_grown(temporary / name, key, generation, run_after if name in PUBLISHED else generation - 1)
    if started is not None:
        (temporary / "article_texts.previous").mkdir()
        for part in _parts(started / write.TEXTS_OUTPUT):
            _link(part, temporary / "article_texts.previous" / part.name)
    if make_current:  # a run in chunks: its last chunk's generation, the one that becomes current
        check(update.articles, LIGHT_ARTICLES, "articles to publish").write_parquet(temporary / "articles.parquet")
    update.stories.write_parquet(temporary / "stories.parquet")
    update.pairs.write_parquet(temporary / "pairs.parquet")
    update.registry.write_parquet(temporary / "story_registry.parquet")
    update.files.write_parquet(temporary / "files.parquet")
    before = run_from or history
    pl.concat([before.merges, update.merges]).write_parquet(temporary / "story_merges.parquet")
    run = pl.DataFrame([{"generation": generation, **update.run}], schema=RUNS)
    pl.concat([before.runs, run]).write_parquet(temporary / "runs.parquet")
    (temporary / "report.md").write_text(update.report)
    meta = {"format": FORMAT_VERSION, "config": asdict(config), "run_after": run_after, "story_candidates": update.story_candidate_count}
    (temporary / "meta.json").write_text(json.dumps(meta))
    final = generations / f"{generation:06d}"
    os.rename(temporary, final)
    update.ahead.remove()  # linked in
    if make_current:
        make_current_generation(state, final)
    return final


def amend_run(generation: Path, run: dict[str, object], report: str) -> None:
    """Give a committed generation, not yet current, other counts for its run (the last row of
    runs.parquet) and another report.md."""
    runs = pl.read_parquet(generation / "runs.parquet")
    last = runs.tail(1).with_columns(pl.lit(value, RUNS[name]).alias(name) for name, value in run.items())
    pl.concat([runs.head(-1), last]).write_parquet(generation / "runs.parquet")
    (generation / "report.md").write_text(report)


def make_current_generation(state: Path, final: Path) -> None:
    """Swap `current` to the committed generation `final` with one rename (the commit point)
    and remove the others."""
    link = state / f".current-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(final.relative_to(state))
    os.replace(link, state / "current")  # the commit point
    _remove_unused_generations(state, final)


def publish(state: Path, out: Path) -> list[Path]:
    """Put the current generation's outputs in `out`, each by a hard link renamed into place (the
    texts' parts as a folder, `_publish_texts`); a file already linked to the current output stays
    untouched. The generation's article_texts.parquet is made first when the commit left it to do
    (`_published_texts`)."""
    current = _current(state)
    if current is None:
        return []
    parts = _parts(_published_texts(current))
    out.mkdir(parents=True, exist_ok=True)
    published = [_publish_texts(parts, out / write.TEXTS_OUTPUT, current.name)]
    for name in OUTPUT_FILES:
        source, target = current / name, out / name
        if not (target.exists() and os.path.samefile(source, target)):
            temporary = out / f".{name}.tmp"
            temporary.unlink(missing_ok=True)
            _link(source, temporary)
            os.replace(temporary, target)
        published.append(target)
    return published


def _publish_texts(parts: list[Path], target: Path, generation: str) -> Path:
    """`target` (out/article_texts.parquet) made the generation's texts: a new version of hard
    links to its `parts` (`write.publish_folder`), unless it already links to the same files (then
    versions older than the one before, left by a publish killed after its swap, go)."""
    if target.is_symlink() and target.is_dir():
        linked = _parts(target)
        if [part.name for part in linked] == [part.name for part in parts] and all(map(os.path.samefile, linked, parts)):
            write.remove_versions(target)
            return target
    version = f"{generation}-{time.time_ns()}"
    folder = write.versions_of(target) / f".{version}.tmp"
    folder.mkdir(parents=True)
    for part in parts:
        _link(part, folder / part.name)
    return write.publish_folder(folder, target, version)


def _published_texts(generation: Path) -> Path:
    """The generation's article_texts.parquet, made if missing: ARTICLE_TEXTS, each article once,
    in the order of the records, as parts of `write.PUBLISHED_PART_ROWS` rows
    (`write.ParquetParts`). The last one's parts (article_texts.previous/, linked by the commit)
    are linked as they are unless they hold a text this run changed; those are rewritten with it,
    and the last part, when not full, is rewritten with the run's first new texts after it. The
    run's new texts follow chunk by chunk (the run's parts of `articles` and `article_texts`, one
    per chunk). Time follows the batch and the parts it touched (and the ids of every part, read to
    find them); memory the texts of one chunk and those read out of their chunk's turn (old
    articles' cleaned again, and earlier chunks' cleaned again by a later one). One file streamed
    through the changed rows every run took most of a batch's time against a history of 50,000
    (benchmarks/README.md, *Published texts in parts*)."""
    target = generation / write.TEXTS_OUTPUT
    if target.exists():
        return target
    run_after = json.loads((generation / "meta.json").read_text())["run_after"]
    text_parts = {_part_generation(part): part for part in _run_parts(generation / "article_texts", run_after)}
    light = _run_changes(generation / "articles", run_after, LIGHT_ARTICLES).select("article_id", chunk="part")
    previous_parts = _parts(generation / "article_texts.previous")
    old_ids = [pl.read_parquet(part, columns=["article_id"])["article_id"] for part in previous_parts]
    old = pl.DataFrame({"article_id": pl.concat(old_ids) if old_ids else pl.Series([], dtype=pl.String)})
    new = light.join(old, on="article_id", how="anti", maintain_order="left")
    texts_at = _keys_of_parts(list(text_parts.values())).unique("article_id", keep="last").join(  # the part of each latest text
        new, on="article_id", how="left"
    )
    held = pl.concat([  # the texts not read in their own chunk's turn, with that chunk (null: an old article)
        _rows_of(path, texts_at.filter(pl.col("part") == part, pl.col("chunk").ne_missing(part))).join(
            texts_at.select("article_id", "chunk"), on="article_id", how="left", maintain_order="left"
        )
        for part, path in text_parts.items()
    ] or [empty(ARTICLE_TEXTS | {"chunk": pl.Int64})])
    changed = held.filter(pl.col("chunk").is_null()).drop("chunk")
    open_last = bool(previous_parts) and new.height > 0 and len(old_ids[-1]) < write.PUBLISHED_PART_ROWS
    temporary = generation / f".{write.TEXTS_OUTPUT}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for part, ids in zip(previous_parts[:-1] if open_last else previous_parts, old_ids, strict=False):
        if ids.is_in(changed["article_id"].implode()).any():
            with write.ParquetParts(temporary, ARTICLE_TEXTS, write.part_index(part), part_rows=len(ids)) as one:  # never spills
                one.write(_updated(pl.read_parquet(part), changed))
        else:
            _link(part, temporary / part.name)
    first = write.part_index(previous_parts[-1]) + (0 if open_last else 1) if previous_parts else 0
    with write.ParquetParts(temporary, ARTICLE_TEXTS, first) as writer:
        if open_last:
            writer.write(_updated(pl.read_parquet(previous_parts[-1]), changed))
        for (chunk,), rows in new.partition_by("chunk", as_dict=True, maintain_order=True).items():
            own = texts_at.filter(pl.col("part") == chunk, pl.col("chunk") == chunk)
            texts = pl.concat([
                _rows_of(text_parts[chunk], own) if chunk in text_parts else empty(ARTICLE_TEXTS),
                held.filter(pl.col("chunk") == chunk).drop("chunk"),
            ])
            writer.write(rows.select("article_id").join(texts, on="article_id", how="left", maintain_order="left"))
    os.replace(temporary, target)
    shutil.rmtree(generation / "article_texts.previous", ignore_errors=True)
    return target


def _updated(previous: pl.DataFrame, texts: pl.DataFrame) -> pl.DataFrame:
    """ARTICLE_TEXTS `previous` rows with the `texts` this run changed in their place."""
    joined = previous.join(texts.with_columns(changed=pl.lit(True)), on="article_id", how="left", maintain_order="left", suffix="_now")
    return joined.select(
        "article_id",
        *(pl.when("changed").then(f"{name}_now").otherwise(name).alias(name) for name in ARTICLE_TEXTS if name != "article_id"),
    )


def _run_parts(folder: Path, run_after: int) -> list[Path]:
    """A keyed table's parts written by one run (one per chunk): those of generations after `run_after`."""
    return [part for part in _parts(folder) if _part_generation(part) > run_after]


def _keys_of_parts(parts: Sequence[Path]) -> pl.DataFrame:
    """article_id, part: each key of each of the `parts` with the generation that wrote the part, in order."""
    keys = [pl.read_parquet(path, columns=["article_id"]).with_columns(part=pl.lit(_part_generation(path), pl.Int64)) for path in parts]
    return pl.concat(keys) if keys else empty({"article_id": pl.String, "part": pl.Int64})


def _rows_of(part: Path, keys: pl.DataFrame) -> pl.DataFrame:
    """ARTICLE_TEXTS rows of a part for the `keys` (article_id), streamed: the others are not held."""
    if keys.is_empty():
        return empty(ARTICLE_TEXTS)
    wanted = pl.scan_parquet(part).join(keys.select("article_id").lazy(), on="article_id", how="semi", maintain_order="left")
    return wanted.select(list(ARTICLE_TEXTS)).collect(engine="streaming")


def _current(state: Path) -> Path | None:
    link = state / "current"
    return link.resolve() if link.is_symlink() else None


def _remove_unused_generations(state: Path, current: Path | None) -> None:
    """Remove every generation but `current` (both sides resolved: a relative state folder such
    as the default out/state must not make the current generation look unused)."""
    for leftover in state.glob(".current-*"):
        leftover.unlink()
    generations = state / "generations"
    keep = current.resolve() if current is not None else None
    if generations.is_dir():
        for generation in generations.iterdir():
            if generation.resolve() != keep:  # a killed run's workers write in its dot-folders for up to
                # `lifetime.POLL_SECONDS` after it: what they add then goes with the next load
                shutil.rmtree(generation, ignore_errors=generation.name.startswith("."))


def _parts(folder: Path) -> list[Path]:
    """The Parquet parts of a stored table, in order: a keyed table's base, then one per run."""
    return sorted(folder.glob("*.parquet"))


def _read_parts(folder: Path, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    parts = _parts(folder)
    if not parts:
        return empty(dict(schema))
    return check(pl.concat([pl.read_parquet(part) for part in parts]), dict(schema), f"state {folder.name}")


def _read_light_records(folder: Path) -> tuple[pl.DataFrame, tuple[int, ...]]:
    """RECORDS with their texts (RECORD_TEXTS) null, and the rows of each part."""
    parts = _parts(folder)
    if not parts:
        return empty(RECORDS), ()
    light = [pl.read_parquet(part, columns=[name for name in RECORDS if name not in RECORD_TEXTS]) for part in parts]
    nulls = [pl.lit(None, RECORDS[name]).alias(name) for name in RECORD_TEXTS]
    records = pl.concat(light).with_columns(nulls).select(list(RECORDS))
    return check(records, RECORDS, "state records"), tuple(part.height for part in light)


def _write_records(records: pl.DataFrame, sketched: np.ndarray, ahead: Ahead, generation: Path, name: str) -> None:
    """A records part: the light columns in records/NAME.parquet, the texts (STORED_TEXTS) row for
    row in record_texts/NAME.arrow, uncompressed (a memory map reads it in place) and at the oldest
    compatibility level (plain and large strings, which pyarrow gathers; not polars' string views),
    as `write_texts` wrote them ahead, and the sketches row for row in record_sketches/NAME.npy."""
    texts = ahead.rows.get(TEXTS[0], 0)
    if len(sketched) != records.height or texts != records.height:
        raise ValueError(f"{len(sketched)} sketches and {texts} texts for {records.height} records")
    records.drop(RECORD_TEXTS).write_parquet(generation / "records" / f"{name}.parquet")
    _link(ahead.file(TEXTS[0]), generation / TEXTS[0] / f"{name}.{TEXTS[1]}")
    np.save(generation / SKETCHES[0] / f"{name}.{SKETCHES[1]}", np.ascontiguousarray(sketched, dtype=np.uint32))



def _record_files(generation: Path, kind: tuple[str, str]) -> list[Path]:
    """The files of `kind` (TEXTS or SKETCHES) of a generation's records parts, in the parts' order."""
    folder, suffix = kind
    return [generation / folder / f"{part.stem}.{suffix}" for part in _parts(generation / "records")]


def _gather_record_texts(
    generation: Path, part_rows: Sequence[int], positions: np.ndarray, columns: Sequence[str] = STORED_TEXTS
) -> tuple[pl.DataFrame, int]:
    """The texts `columns` (of STORED_TEXTS) of the records at `positions` (rows of the history's
    records, ascending), and the number of texts files read. Each file is memory-mapped and only the rows asked for are
    gathered (pyarrow's take, batch by batch): the pages of other records are not read. Taken
    into the system allocator, which gives the copy back once polars has made its own: pyarrow's
    default pool (mimalloc) keeps it resident after it is let go, and a chunk's partners are most
    of the history (`speed.py profile --chunk`: the memory after each commit)."""
    starts = np.concatenate([[0], np.cumsum(part_rows)])
    pieces, files = [], 0
    for number, path in enumerate(_record_files(generation, TEXTS)):
        low, high = np.searchsorted(positions, starts[number : number + 2])
        if low == high:
            continue
        rows, files = positions[low:high] - starts[number], files + 1
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            batches = [reader.get_batch(index) for index in range(reader.num_record_batches)]
            batch_starts = np.concatenate([[0], np.cumsum([batch.num_rows for batch in batches])])
            for index, batch in enumerate(batches):
                first, last = np.searchsorted(rows, batch_starts[index : index + 2])
                if first < last:
                    wanted = pa.array(rows[first:last] - batch_starts[index])
                    taken = pa.compute.take(batch.select(list(columns)), wanted, memory_pool=pa.system_memory_pool())
                    pieces.append(pl.from_arrow(taken))  # take wrote new buffers: none refers to the map
    texts = pl.concat(pieces) if pieces else empty(RECORDS).select(columns)
    return texts.cast({name: RECORDS[name] for name in columns}), files


def stored_records(generation: Path) -> pl.DataFrame:
    """RECORDS of a generation with their stored texts (`text_raw` null): the whole table, for
    benchmarks and tests; a run reads texts by position (`History.record_rows`)."""
    records, _ = _read_light_records(generation / "records")
    texts = [pl.read_ipc(path) for path in _record_files(generation, TEXTS)]
    if texts:
        stored = pl.concat(texts).cast({name: RECORDS[name] for name in STORED_TEXTS})
        records = pl.concat([records.drop(STORED_TEXTS), stored], how="horizontal").select(list(RECORDS))
    return check(records, RECORDS, "state records")


def _read_keyed(
    folder: Path | None, schema: Mapping[str, pl.DataType], key: list[str], rows: pl.Expr | pl.DataFrame | None = None
) -> pl.DataFrame:
    """A keyed table (`KEYED`): the latest row of each key over its parts, less the deleted keys,
    in the order of those rows; only the `rows` asked for when given (read lazily): a filter on
    the key columns, or a frame of columns to semi-join with (streamed over the base). A
    semi-join on columns other than the key's (a story bucket) reads the later parts whole and
    filters their latest rows: an earlier row of a key may match where its latest does not.
    A frame's distinct rows are made here, once, and only where there are parts: the one story
    pass of the first 300k made those of its 11M bucket keys for nothing, ~1 GiB."""
    parts = _parts(folder) if folder is not None else []
    if not parts:
        return empty(dict(schema))
    if isinstance(rows, pl.DataFrame):
        rows = rows.unique()
    scans = [pl.scan_parquet(part) for part in parts]
    by_key = not isinstance(rows, pl.DataFrame) or set(rows.columns) <= set(key)

    def wanted(scan: pl.LazyFrame) -> pl.LazyFrame:
        if isinstance(rows, pl.DataFrame):
            return scan.join(rows.lazy(), on=rows.columns, how="semi", maintain_order="left")
        return scan if rows is None else scan.filter(rows)

    engine = "auto" if rows is None else "streaming"  # a few rows of a big table
    base, *later = scans
    if later:  # as `unique(key, keep="last", maintain_order=True)` over all parts, without hashing the base
        changes = pl.concat([wanted(part) if by_key else part for part in later]).collect(engine=engine)
        if len(later) > 1:  # each part holds a key once (`_changes`, `_compact_if_grown`)
            changes = changes.unique(key, keep="last", maintain_order=True)
        kept = wanted(base).join(changes.select(key).lazy(), on=key, how="anti", maintain_order="left")
        latest = pl.concat([kept.collect(engine=engine), changes if by_key else wanted(changes.lazy()).collect()])
    else:
        latest = wanted(base).collect(engine=engine)
    latest = latest.filter(~pl.col("deleted")).drop("deleted")
    return check(latest, dict(schema), f"state {folder.name if folder else ''}")


def _with_deleted(rows: pl.DataFrame, deleted: bool) -> pl.DataFrame:
    return rows.with_columns(deleted=pl.lit(deleted))


def _changes(now: pl.DataFrame, before: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """The part of a keyed table for one run: the rows of `now` not in `before` as they are (an
    anti-join on every column; on a hash of the row where a column is a list, which polars does
    not join on), then the keys of `before` gone from `now`, marked deleted. Against nothing
    before (a first run), `now` as it is: the anti-join on every column of a 1M run's story band
    keys and candidates against no rows took 6.6 s."""
    if before.is_empty():
        return _with_deleted(now, False)
    if any(isinstance(dtype, pl.List) for dtype in now.schema.values()):
        hashed = now.with_columns(row_hash=now.hash_rows())
        known = before.select(*key, row_hash=before.hash_rows())
        upserts = hashed.join(known, on=[*key, "row_hash"], how="anti", maintain_order="left").drop("row_hash")
    else:
        upserts = now.join(before, on=now.columns, how="anti", maintain_order="left", nulls_equal=True)
    gone = before.select(key).join(now.select(key), on=key, how="anti", maintain_order="left")
    gone_rows = gone.select(
        *(pl.col(name) if name in key else pl.lit(None, dtype).alias(name) for name, dtype in now.schema.items())
    )
    return pl.concat([_with_deleted(upserts, False), _with_deleted(gone_rows, True)])


def _part_generation(part: Path) -> int:
    """The generation that wrote a keyed table's part (part-N.parquet); -1 for a base, which
    holds what earlier generations left."""
    return int(part.stem.removeprefix("part-")) if part.name.startswith("part-") else -1


def _run_changes(folder: Path, run_after: int, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """The rows a run changed in a keyed table that never deletes: its parts (one per chunk, those
    of generations after `run_after`) as one, each key at its first row with its latest values
    (so the articles a run adds stay in the order of its records, chunk after chunk), and in
    `part` the generation of that first row's part (the chunk that added an article)."""
    parts = _run_parts(folder, run_after)
    if not parts:
        return empty(dict(schema) | {"part": pl.Int64})
    rows = pl.concat([pl.read_parquet(part).with_columns(part=pl.lit(_part_generation(part), pl.Int64)) for part in parts])
    rows = rows.drop("deleted")
    if len(parts) == 1:
        return rows
    key = KEYED[folder.name][1]
    first = rows.select(*key, "part").unique(key, keep="first", maintain_order=True)
    return first.join(rows.unique(key, keep="last").drop("part"), on=key, how="left", maintain_order="left")


def _compact_if_grown(folder: Path, key: list[str], generation: int, keep_after: int) -> None:
    """Fold the base and the parts of generations up to `keep_after` into a new base
    (base-GENERATION.parquet) when the parts after the base hold more rows than COMPACT_SHARE of
    it (for `READ_BY_KEY` tables, and more dead rows than COMPACT_SHARE of the live ones). Later
    parts stay on their own: this generation's, and for `PUBLISHED` tables every
    chunk's of this run, which publishing reads as the rows the run changed. Streamed: each part
    passes into the new base through an anti-join with the keys of the parts after it, not a
    unique of all keys and a semi-join by row: story_band_keys of the 1M corpus's first 200k
    (7.4M rows in two parts) in 1.3-1.4 s of CPU, not 4.2-10.2 (load 8, the same base)."""
    older = [part for part in _parts(folder) if _part_generation(part) <= keep_after]
    if len(older) < 2:
        return
    sizes = [pl.scan_parquet(part).select(pl.len()).collect().item() for part in older]
    if sum(sizes[1:]) <= COMPACT_SHARE * sizes[0]:
        return
    if folder.name in READ_BY_KEY:
        keys = pl.concat([pl.scan_parquet(part).select(*key, "deleted") for part in older]).collect()
        live = keys.unique(key, keep="last").filter(~pl.col("deleted")).height
        if keys.height - live <= COMPACT_SHARE * live:
            return
    # a row is the latest of its key when no later part holds the key (each part holds a key once)
    kept = [
        pl.scan_parquet(part).filter(~pl.col("deleted")).join(
            pl.concat([pl.scan_parquet(later).select(key) for later in older[n + 1 :]]), on=key, how="anti", maintain_order="left"
        ) if n + 1 < len(older) else pl.scan_parquet(part).filter(~pl.col("deleted"))
        for n, part in enumerate(older)
    ]
    temporary = folder / ".base.tmp"
    pl.concat(kept).sink_parquet(temporary, compression=_compression(folder.name))
    os.replace(temporary, folder / f"base-{generation:06d}.parquet")
    for part in older:
        part.unlink()


def _link(source: Path, target: Path) -> None:
    """A hard link (no copy: parts never change once written); a copy where links fail (another
    file system, too many links), never over a file already there."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        shutil.copy2(source, target)

