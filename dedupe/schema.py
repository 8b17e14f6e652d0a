"""The frame schemas that pass between stages, written once and checked at every boundary."""

from __future__ import annotations

import polars as pl

REMOVED_LINE = pl.Struct({"line": pl.Int32, "text": pl.String, "rule": pl.String})
TIMESTAMP = pl.Datetime("us", "UTC")

READ = {
    "article_id": pl.String,
    "source_file": pl.String,
    "line": pl.Int64,  # 1-based line (or record number) of the record in its file
    "title_raw": pl.String,
    "text_raw": pl.String,
    "url": pl.String,
    "source": pl.String,
    "published_at": TIMESTAMP,
    "status": pl.String,  # "ok" until grouped; "rejected" with a reason
    "reason": pl.String,
    "note": pl.String,  # what reading did that is worth knowing: a guessed encoding, a renamed id
}

NORMALIZED = READ | {"title": pl.String, "text": pl.String}

# `text` stays the normalized text (what `removed_lines` numbers refer to); `body` is the cleaned text.
CLEANED = NORMALIZED | {"headline": pl.String, "body": pl.String, "removed_lines": pl.List(REMOVED_LINE)}

CANDIDATES = {"article_id_a": pl.String, "article_id_b": pl.String, "level": pl.String}

# One row per duplicate group with a headline: what story matching reads of it.
GROUP_HEADLINES = {"duplicate_group": pl.String, "headline": pl.String, "story_text": pl.String}

# A headline's sentence embedding (story_model=minilm: all-MiniLM-L6-v2 has 384 dimensions).
EMBEDDINGS = {"headline": pl.String, "vector": pl.Array(pl.Float32, 384)}

BAND_KEYS = {"article_id": pl.String, "band": pl.UInt16, "key": pl.UInt64}  # one LSH band of one article
BUCKET_PAIRS = {"article_id_a": pl.String, "article_id_b": pl.String, "buckets": pl.Int64}  # LSH buckets shared

PAIRS = {
    "article_id_a": pl.String,
    "article_id_b": pl.String,
    "jaccard": pl.Float64,
    "similarity": pl.Float64,
    "relation": pl.String,  # "duplicate" or "same_story"
}

GROUPS = {
    "article_id": pl.String,
    "duplicate_group": pl.String,
    "duplicate_of": pl.String,
    "story_id": pl.String,
}

ARTICLES = {
    "article_id": pl.String,
    "source_file": pl.String,
    "line": pl.Int64,
    "title_raw": pl.String,
    "headline": pl.String,
    "text": pl.String,
    "url": pl.String,
    "source": pl.String,
    "published_at": TIMESTAMP,
    "status": pl.String,  # "kept", "duplicate" or "rejected"
    "reason": pl.String,
    "note": pl.String,
    "duplicate_of": pl.String,
    "duplicate_group": pl.String,
    "story_id": pl.String,
    "removed_lines": pl.List(REMOVED_LINE),
}

STORIES = {
    "story_id": pl.String,
    "headline": pl.String,
    "representative_id": pl.String,
    "article_ids": pl.List(pl.String),
    "n_articles": pl.UInt32,
    "sources": pl.List(pl.String),
    "first_seen": TIMESTAMP,
    "last_seen": TIMESTAMP,
}

# --- persistent state of incremental runs (dedupe/state.py) -----------------------------------

# Every record ever seen, as the first cleaning pass left it (which depends on the record alone).
RECORDS = CLEANED | {
    "input_id": pl.String,  # the id as read; `article_id` differs when an id came back with other content
    "content_hash": pl.String,  # of the raw record: the same id with the same content is not new
}

RECORD_TEXTS = ("title_raw", "text_raw", "text", "body", "removed_lines")
"""The heavy columns of RECORDS: a state reads them only for the records a run touches."""
ARTICLE_TEXTS = {"article_id": pl.String, "title_raw": pl.String, "text": pl.String, "removed_lines": pl.List(REMOVED_LINE)}
"""The heavy columns of ARTICLES, which a state keeps apart from the others (LIGHT_ARTICLES)."""
# ARTICLES less their texts, plus what later runs need of the texts: the length of `text` (the
# story's representative is the longest) and the rules of the removed lines (the report counts them).
LIGHT_ARTICLES = {name: dtype for name, dtype in ARTICLES.items() if name not in ARTICLE_TEXTS or name == "article_id"} | {
    "text_chars": pl.UInt32,
    "removed_rules": pl.List(pl.String),
}

LEVEL_BAND_KEYS = {"level": pl.String} | BAND_KEYS  # level: "text" or "headline" (see minhash)

# What the titles taught about decoration (clean.Decorations), kept so a later run can tell
# which headlines a change of it touches.
BARE_TITLES = {"article_id": pl.String, "bare_title": pl.String}
HEADLINE_PIECES = {"piece": pl.String}
# What decoration learning reads of one title alone (clean.title_pieces): the text before each
# separator (the bare titles it may extend), and its last piece as a suffix candidate (folded).
TITLE_PIECES = {"title": pl.String, "prefixes": pl.List(pl.String), "suffix": pl.String, "suffix_head": pl.String}
# A title that its duplicate group says is a bare title plus decoration `piece` (folded).
GROUP_BARE_TITLES = {"duplicate_group": pl.String, "title": pl.String, "bare_title": pl.String, "piece": pl.String}
# The keywords of each record's story text (cluster.story_keywords), sorted: a list column, so the
# story attachment numbers and counts them with polars and numpy, not a Python set per record.
STORY_KEYWORDS = {"article_id": pl.String, "keywords": pl.List(pl.String)}
# Each duplicate group's component of story pairs (cluster.story_components), named by its smallest group.
STORY_ROOTS = {"duplicate_group": pl.String, "root": pl.String}
# Each round of the story attachment (cluster.attach_stories), one row per story in it: the story it
# moved to (null: it stayed), an interval holding its fit there, bounds on its fits to every other
# candidate, and the size of the round's smallest story; the next run replays the rounds.
CENTRAL_HEADLINES = {"story_id": pl.String, "headline": pl.String, "count": pl.UInt32, "total": pl.Float64}
"""A story's candidate headlines for its central one (`stories.central_candidates`) with their
weighted total similarity to the others, kept where that total is exact (`stories.headline_totals`)."""

STORY_ROUNDS = {
    "round": pl.Int32,
    "story": pl.String,
    "smallest": pl.Float64,
    "target": pl.String,
    "target_low": pl.Float64,
    "target_high": pl.Float64,
    "target_gap": pl.Float64,  # a lower bound on the fit to the target less the fit to any other candidate
    "rest_high": pl.Float64,  # -inf: no other candidate
}

STORY_REGISTRY = {
    "story_id": pl.String,
    "created_at": TIMESTAMP,  # run that gave the id; the oldest id survives a merge
    "merged_into": pl.String,  # null while the story lives
}

FILES = {"key": pl.String, "size": pl.Int64, "mtime_ns": pl.Int64}  # input files read, to skip unchanged ones

STORY_MERGES = {"story_id": pl.String, "merged_into": pl.String, "merged_at": TIMESTAMP}

RUNS = {
    "generation": pl.Int64,
    "run_at": TIMESTAMP,
    "files_read": pl.Int64,  # new or changed since the last run that read them
    "files_unchanged": pl.Int64,  # skipped
    "records_in": pl.Int64,  # in the files read
    "already_seen": pl.Int64,
    "new": pl.Int64,
    "new_duplicates": pl.Int64,
    "new_rejected": pl.Int64,
    "stories_opened": pl.Int64,
    "stories_updated": pl.Int64,
    "stories_merged": pl.Int64,
}


class SchemaError(ValueError):
    """A frame crossing a stage boundary does not have the agreed columns and types."""


def check(frame: pl.DataFrame, schema: dict[str, pl.DataType], boundary: str) -> pl.DataFrame:
    """Return `frame` unchanged if it has exactly `schema`'s columns, in order, with its dtypes."""
    actual = dict(frame.schema)
    if list(actual) != list(schema):
        raise SchemaError(f"{boundary}: columns {list(actual)} != expected {list(schema)}")
    wrong = [f"{name}: {actual[name]} != {dtype}" for name, dtype in schema.items() if actual[name] != dtype]
    if wrong:
        raise SchemaError(f"{boundary}: wrong dtypes: {'; '.join(wrong)}")
    return frame


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
