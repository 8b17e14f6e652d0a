"""The whole pipeline as plain calls: the one place that says which stage feeds which.

`run` takes one batch alone; `update` matches a batch against the history of earlier runs
(dedupe/state.py) and gives the same groups and stories as `run` over all batches at once.
The Prefect flow runs these same sequences with each stage as a task (its `call`); benchmarks and
tests run them directly.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from dedupe import clean, cluster, minhash, read, shards, state, stories, verify, write
from dedupe.config import Config
from dedupe.schema import CLEANED, EMBEDDINGS, READ, RECORD_TEXTS, STORY_MERGES, empty

Call = Callable[..., Any]
"""call(stage_name, function, *args) runs one stage and returns its result."""


def direct(name: str, function: Callable[..., Any], *args: object) -> Any:
    return function(*args)


@dataclass(frozen=True)
class Result:
    articles: pl.DataFrame  # ARTICLES; after `update`, LIGHT_ARTICLES (the texts are in the published article_texts.parquet)
    stories: pl.DataFrame
    pairs: pl.DataFrame
    summary: write.Summary


def run(
    paths: Sequence[str | Path], config: Config, call: Call = direct, log: Callable[[str], None] = lambda _: None
) -> Result:
    """Read, normalize, clean, match duplicates, group stories; everything but writing."""
    timings: dict[str, float] = {}
    stage = _timed(shards.on_cores(call, config), timings)

    records = stage("read", read.read, list(paths), config)
    log(f"read {records.height} records from {records['source_file'].n_unique()} files")
    # no later stage reads the raw text (a third of a record's bytes): the first pass drops it
    cleaned = stage("normalize and clean", shards.FirstPass(shards.plan_of(stage), records).result)
    del records
    duplicate_candidates, shingles = stage("minhash duplicates", minhash.duplicate_candidates, cleaned, config)
    duplicate_pairs = stage("verify duplicates", verify.verify_duplicates, cleaned, duplicate_candidates, shingles, config)
    del shingles  # 2.4 KB a document, read by verifying alone
    groups = stage("cluster duplicates", cluster.duplicate_groups, cleaned, duplicate_pairs, config)
    log(
        f"{duplicate_candidates.height} duplicate candidates, {duplicate_pairs.height} confirmed, "
        f"{groups['duplicate_group'].n_unique()} duplicate groups"
    )
    cleaned = stage("clean with copies", clean.clean_with_copies, cleaned, groups, config)
    groups, story_pairs, story_candidates, _ = _stories(stage, cleaned, groups, config)
    articles = stage("assemble", write.assemble_articles, cleaned, groups)
    story_table = stage("build stories", stories.build_stories, articles)
    log(f"{story_candidates} story candidates, {story_pairs.height} confirmed, {story_table.height} stories")

    pairs = write.concat_pairs(duplicate_pairs, story_pairs)
    candidates = {"duplicate": duplicate_candidates.height, "story": story_candidates}
    summary = write.summarize(articles, story_table, pairs, candidates, timings, config.top_stories)
    return Result(articles, story_table, pairs, summary)


def _timed(call: Call, timings: dict[str, float]) -> Call:
    """`call`, recording each stage's seconds in `timings` for the report."""

    def stage(name: str, function: Callable[..., Any], *args: object) -> Any:
        started = time.perf_counter()
        result = call(name, function, *args)
        shards.release_free_memory()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started  # summed over a run's chunks
        return result

    stage.plan = shards.plan_of(call)  # type: ignore[attr-defined]
    return stage


def _stories(
    stage: Call, cleaned: pl.DataFrame, groups: pl.DataFrame, config: Config, known: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, int, pl.DataFrame]:
    """Duplicate groups joined into stories by `config.story_model`: (GROUPS with story ids, the
    story pairs a reader sees, the number of story candidates, the headline embeddings made
    this run, beside the `known` ones of earlier runs)."""
    headlines = stage("group headlines", stories.group_headlines, cleaned, groups)
    candidates, keywords = stage("minhash stories", minhash.story_candidates, headlines, config)
    if config.story_model == "keywords":
        story_pairs = stage("verify stories", verify.verify_stories, headlines, candidates, keywords, config)
        groups = stage("cluster stories", cluster.story_ids, cleaned, groups, story_pairs, config)
        return groups, story_pairs, candidates.height, empty(EMBEDDINGS)
    scored, vectors = stage("verify stories", verify.semantic_story_pairs, headlines, candidates, keywords, known)
    groups = stage("cluster stories", cluster.semantic_story_ids, cleaned, groups, scored, config)
    return groups, verify.strong_pairs(scored, 100.0 * config.story_semantic_similarity), candidates.height, vectors


UPDATE_STAGES = (
    "changed files", "read", "new records", "normalize and clean", "minhash duplicates", "verify duplicates",
    "cluster duplicates", "clean with copies", "write texts", "group headlines", "minhash stories", "verify stories",
    "write story parts", "cluster stories", "stable story ids", "assemble", "build stories",
)
"""The stages of `update`, in order (a run with nothing new stops after the fourth, its first
pass over no records)."""


def update(
    paths: Sequence[str | Path],
    history: state.History,
    config: Config,
    run_at: datetime,
    call: Call = direct,
    log: Callable[[str], None] = lambda _: None,
    texts_to: Path | None = None,
) -> tuple[Result, state.Update | None]:
    """`run` for the records of `paths` not in `history`, matched against all of it; None for
    the update when nothing is new (the history and its outputs stand as they are). What the
    commit stores of its texts and story parts waits in a temporary folder in `texts_to` (the
    state's generations folder, where a load removes what a killed run left; None: the system's).

    The result is the one a single run over everything would give (tests/test_state.py), and the
    work follows the batch wherever that is provably the same:
    - per record (normalize, first cleaning, shingles, band keys, verifying candidates): the new
      records only;
    - duplicate groups: the components of the pair graph that hold a new record;
    - cleaning with copies: new records and the members of changed groups large enough to
      clean against their copies (now or in the last run), read with their texts; other records
      whose headline decoration changed or whose group changed, their headline alone without
      their texts (decoration is learnt for new titles and the groups they or a change of group touch);
    - story matching (keyword model): band keys and verification for groups whose story text
      changed, bucketing for the LSH buckets they touch, components and weak bridges for the
      story-pair components that changed, keywords for records whose headline changed;
    - story attachment: the last run's rounds replayed; fits computed for pairs with a story
      whose articles changed and for stories whose kept fit intervals cannot prove that the
      IDF change leaves their decision as it was (`cluster.attach_stories`);
    - the story table: stories whose members changed.
    Global, as columnar steps over stored tables: the pair-graph components (scipy), the
    attachment's keyword counts per story and round (sparse products), and the published
    articles.parquet (light rows, written whole by the commit; the texts' parts are rewritten
    only where a text changed, `state.publish`).
    story_model=minilm runs its story steps over all groups (average linkage is global), embedding only headlines not seen before."""
    timings: dict[str, float] = {}
    stage = _timed(shards.on_cores(call, config), timings)

    batch = stage("changed files", state.changed_files, list(paths), history)
    chunk = _new_records(stage, stage("read", read.read_found, batch.found, config), history.records)
    return _update(batch, chunk, history, config, run_at, stage, timings, log, Earlier(history), texts_to=texts_to)


@dataclass(frozen=True)
class Chunk:
    """Records read (a run's, or a chunk's of it), their new ones on their way through the first
    pass (`shards.FirstPass`)."""

    rows: int  # records read
    keys: pl.DataFrame  # state.RECORD_KEYS of the new ones, in their order
    first_pass: shards.FirstPass
    last: bool = True


def _new_records(stage: Call, records_read: pl.DataFrame, seen: pl.DataFrame, ahead_in: Path | None = None) -> Chunk:
    """The `Chunk` of `records_read`: the new ones among them (not `seen`) on their way through
    the first pass, from now on where `ahead_in` names a folder for its results (a state's
    generations folder), else when it is asked for (`_first_pass`). The raw text goes with it."""
    fresh = stage("new records", state.new_records, records_read, seen)
    first_pass = shards.FirstPass(shards.plan_of(stage), fresh.select(list(READ)), ahead_in)
    return Chunk(records_read.height, fresh.select(state.RECORD_KEYS), first_pass)


def _first_pass(stage: Call, chunk: Chunk) -> pl.DataFrame:
    """The chunk's new records normalized and cleaned (first pass), with their keys. A stage of
    every chunk, also one with nothing new: the flow's progress counts chunks by it."""
    return state.with_keys(stage("normalize and clean", chunk.first_pass.result), chunk.keys)


@dataclass(frozen=True)
class Earlier:
    """What the earlier chunks of a run read and added: the counts and story ids of each chunk
    are those of the whole run so far, so the last chunk's are the run's."""

    history: state.History  # as the run found it: story ids pass on from its stories
    records_in: int = 0
    stories_pending: bool = False  # a chunk committed without its story steps (`_update`'s `match_stories`)
    new: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"article_id": pl.String}))
    candidates: tuple[int, int] = (0, 0)  # duplicate and story candidate pairs, summed over the chunks


def _update(
    batch: state.Batch,
    chunk: Chunk,
    history: state.History,
    config: Config,
    run_at: datetime,
    stage: Call,
    timings: dict[str, float],
    log: Callable[[str], None],
    earlier: Earlier,
    match_stories: bool = True,
    texts_to: Path | None = None,
    after_first_pass: Callable[[], object] = lambda: None,
) -> tuple[Result, state.Update | None]:
    """`update` from the records read on (`chunk`); `history` holds the earlier chunks of the
    run. `after_first_pass` is called once the chunk's first pass is taken (`_first_pass`): a run
    in chunks starts the next chunk's there.

    Without `match_stories` (a chunk of a run that more chunks follow, keyword story model), the
    story steps are left to the run's last chunk, which matches the stories of every chunk's
    groups at once against the stories the run started from (`earlier.history`), as one update
    over all the records does: each chunk's story steps worked over most of the story graph
    (every chunk touches most stories), so their time grew with every chunk. The chunk's
    articles keep the story ids they had (null for new ones) and its story tables stay the
    run's start's, so the last chunk's story steps read a consistent last run.

    The texts the commit stores are written once cleaned, and story matching's parts once
    verified, in a temporary folder in `texts_to` (None: the system's), not held through the
    story steps (`state.write_ahead`)."""
    log(
        f"{len(batch.found)} new or changed files ({batch.unchanged} unchanged, skipped): "
        f"{chunk.rows} records, {chunk.keys.height} new, {chunk.rows - chunk.keys.height} seen before"
    )
    records_in = earlier.records_in + chunk.rows
    records = _first_pass(stage, chunk)
    after_first_pass()
    if records.height == 0 and not (match_stories and earlier.stories_pending):
        summary = _unchanged(history, batch, records_in, timings, config)
        return Result(history.articles, history.stories, history.pairs, summary), None
    matched = stage("minhash duplicates", state.new_candidates, records, history, config)
    new_pairs = stage("verify duplicates", state.verify_candidates, matched, history, config)
    band_keys, sketches, duplicate_candidates = matched.band_keys, matched.sketches, matched.candidates.height
    del matched  # the new records' shingles (2.4 KB a record), read by verifying alone
    everything = state.all_records(history, records)
    # in the order a single run gives them: group centralities are float sums, summed in this order
    duplicate_pairs = pl.concat([history.duplicate_pairs, new_pairs]).sort("article_id_a", "article_id_b")
    grouped = stage("cluster duplicates", state.duplicate_groups, everything, duplicate_pairs, records, history, config)
    groups, changed = grouped.groups, grouped.changed
    log(
        f"{duplicate_candidates} new duplicate candidates, {new_pairs.height} confirmed, "
        f"{groups['duplicate_group'].n_unique()} duplicate groups ({changed['duplicate_group'].n_unique()} changed)"
    )
    cleaned, decorations, texts = stage(
        "clean with copies", _clean_changed, everything, groups, changed, history, config, shards.plan_of(stage)
    )
    del everything
    records, text_figures, ahead = stage("write texts", state.write_texts, records, texts, texts_to)
    del texts
    if not match_stories:  # stories as the history holds them, which is as the run found them
        story_pairs = history.pairs.filter(pl.col("relation") == "same_story")
        groups = groups.join(history.articles.select("article_id", "story_id"), on="article_id", how="left", maintain_order="left")
        story_index = {name: getattr(history, name) for name in ("group_headlines", "story_keywords", "story_roots", "story_rounds")}
        story_index["story_candidate_count"] = history.story_candidate_count
        story_candidates, vectors = 0, empty(EMBEDDINGS)
        story_ids = state.StoryIds(groups, history.registry, empty(STORY_MERGES))
    elif config.story_model == "keywords":
        last_run = earlier.history  # the stories' history: the run's start's (see `match_stories`)
        headlines = stage("group headlines", stories.group_headlines, cleaned, groups)
        found = stage("minhash stories", state.story_candidates, headlines, last_run, config)
        story_pairs = stage("verify stories", state.verify_story_candidates, headlines, found, last_run, config)
        parts = {"story_band_keys": found.band_keys, "story_candidates": found.bucket_pairs}
        ahead = stage("write story parts", state.write_ahead, ahead, parts)
        story_candidates, vectors = found.count, empty(EMBEDDINGS)
        del found, parts  # nor the changed groups' keywords and the pairs scored: not held through clustering
        groups, kept = stage("cluster stories", _cluster_stories, cleaned, groups, story_pairs, last_run, config)
        story_index = {"group_headlines": headlines, "story_candidate_count": story_candidates, **kept}
    else:
        groups, story_pairs, story_candidates, vectors = _stories(stage, cleaned, groups, config, history.embeddings)
        story_index = {}
    read_counts = history.counts + earlier.history.counts if earlier.history is not history else history.counts
    log("from the state: " + ", ".join(f"{name} {read_counts[name]:,}" for name in state.READ_COUNTS))
    if match_stories:
        story_ids = stage("stable story ids", state.stable_story_ids, groups, earlier.history, run_at)
    articles = stage("assemble", _assemble_light, cleaned, story_ids.groups, text_figures, history)
    if match_stories:
        story_table, central = stage("build stories", state.build_changed_stories, articles, earlier.history)
    else:
        story_table, central = history.stories, history.central_headlines
    new = pl.concat([earlier.new, records.select("article_id")])
    counts = state.run_counts(batch, records_in, new, articles, story_table, story_ids, earlier.history)
    log(
        f"{story_table.height} stories: {counts['stories_opened']} opened, {counts['stories_updated']} updated, "
        f"{counts['stories_merged']} merged into older ones"
    )
    pairs = write.concat_pairs(duplicate_pairs, story_pairs)
    candidates = {
        "duplicate": earlier.candidates[0] + duplicate_candidates,
        "story": earlier.candidates[1] + story_candidates,
    }
    summary = write.summarize(articles, story_table, pairs, candidates, timings, config.top_stories)
    summary = replace(summary, run=counts)
    added = state.Update(
        records=records, sketches=sketches, embeddings=vectors, band_keys=band_keys, duplicate_pairs=new_pairs, merges=story_ids.merges,
        articles=articles, ahead=ahead, stories=story_table, pairs=pairs, registry=story_ids.registry,
        files=batch.files, run={"run_at": run_at, **counts}, report=write.render_report(summary), **story_index,
        **decorations, central_headlines=central,
    )
    return Result(articles, story_table, pairs, summary), added


def _clean_changed(
    records: pl.DataFrame,
    groups: pl.DataFrame,
    changed: pl.DataFrame,
    history: state.History,
    config: Config,
    plan: shards.Plan,
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], pl.DataFrame]:
    """`clean.clean_with_copies` for the records it can change (`state.to_clean_again`), read
    with their texts (those cleaned against their copies a piece at a time, as the pieces go out:
    `_texts_of_copies`), cut by changed group on `plan`'s workers (`shards.clean_by_groups`); the
    others keep the last run's cleaning (their texts stay unread, null).
    Headline decoration is learnt from what changed (`state.headline_decorations`: a new title
    can teach a new site suffix), and only the headlines it changes are cleaned again; a record
    whose body cannot change (in an unchanged group, or in a group too small for copies now and
    in the last run) has its headline made again without reading its texts (`state.headline_only`,
    `state.headlines_again`). Returns
    the cleaned records without their texts (no later step reads them; held through the story
    steps, they were 0.8 GiB of the frames live in a 1M run's last chunk), the decoration tables
    to store, and ARTICLE_TEXTS of the records cleaned with their texts."""
    decorations, tables = state.headline_decorations(records, groups, changed, history)
    again = state.to_clean_again(records, changed, tables, history)  # every member of a changed group among them
    headline_only = state.headline_only(again, changed, history, config)
    again = again.join(headline_only, on="article_id", how="anti", maintain_order="left")
    rows = state.with_kept_cleaning(_with_texts_to_clean(again, changed, history, config), changed, history)
    cleaned_again = shards.clean_by_groups(plan, rows, changed, config, decorations, partial(_texts_of_copies, history=history))
    retitled = state.headlines_again(headline_only, decorations, history)
    history.counts.update({"cleaned again": cleaned_again.height, "headline only": retitled.height})
    texts = cleaned_again.select("article_id", "title_raw", pl.col("body").alias("text"), "removed_lines")  # in the records' order
    cleaned = state.with_kept_headlines(records, pl.concat([cleaned_again, retitled]), history)
    del cleaned_again
    return cleaned.with_columns(pl.lit(None, CLEANED[name]).alias(name) for name in RECORD_TEXTS), tables, texts


def _with_texts_to_clean(again: pl.DataFrame, changed: pl.DataFrame, history: state.History, config: Config) -> pl.DataFrame:
    """`again` with the stored texts its cleaning reads here: every title_raw (ARTICLE_TEXTS
    keeps it), and all the texts of the few records not cleaned against their copies. A record
    cleaned against its copies has its text and first-pass removed lines read by the piece it
    goes out in (`_texts_of_copies`), and its first-pass body is made again from the text, so
    it is not read at all."""
    texts = [name for name in state.STORED_TEXTS if name != "title_raw"]
    copied = clean.with_copies(again, changed, config)["article_id"]
    rows = history.with_record_texts(again, ["title_raw"])
    others = ~rows["article_id"].is_in(copied.implode())
    return shards.rows_made_again(rows, others, lambda others: history.with_record_texts(others, texts))


def _texts_of_copies(rows: pl.DataFrame, history: state.History) -> pl.DataFrame:
    """`rows` (records cleaned against their copies) with the texts cleaning them reads: of
    history records, read now."""
    return history.with_record_texts(rows, ["text", "removed_lines"])


def _assemble_light(cleaned: pl.DataFrame, groups: pl.DataFrame, text_figures: pl.DataFrame, history: state.History) -> pl.DataFrame:
    """`write.assemble_articles` as the state keeps articles: LIGHT_ARTICLES of every article,
    from CLEANED without texts and what is kept of the texts of those cleaned this run (`state.write_texts`)."""
    return state.light_articles(write.assemble_articles(cleaned, groups), text_figures, history)


def _cluster_stories(
    cleaned: pl.DataFrame, groups: pl.DataFrame, story_pairs: pl.DataFrame, history: state.History, config: Config
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """`cluster.story_ids` with what the last run found for records and story components that
    did not change, replaying the last run's attachment rounds (`cluster.attach_stories`), and
    the tables to store."""
    keywords, remade = state.story_keywords(cleaned, history)
    roots = state.story_components(groups, story_pairs, history, config)
    out, attached = cluster.attached_story_ids(groups, roots, keywords, config, state.previous_attachment(history, remade))
    return out, {"story_keywords": keywords, "story_roots": roots, "story_rounds": attached.rounds}


def _unchanged(
    history: state.History, batch: state.Batch, records_in: int, timings: dict[str, float], config: Config
) -> write.Summary:
    """The last run's summary with this run's counts: nothing new."""
    counts = dict.fromkeys(state.RUN_COUNTS, 0) | {
        "files_read": len(batch.found), "files_unchanged": batch.unchanged,
        "records_in": records_in, "already_seen": records_in,
    }
    summary = write.summarize(history.articles, history.stories, history.pairs, {}, timings, config.top_stories)
    return replace(summary, run=counts)


def run_on_state(
    paths: Sequence[str | Path],
    out: Path,
    folder: Path,
    config: Config,
    wait: bool = True,
    call: Call = direct,
    log: Callable[[str], None] = lambda _: None,
    warn: Callable[[str], None] = print,
) -> tuple[Result, pl.DataFrame]:
    """`update` on the history in `folder` under its lock, committed (when anything was new) and
    published to `out`: (the result, the story registry). The flow runs this with tasks; a run
    that loses its Prefect API runs it again directly, and finds committed work already done.

    The records are read and matched in chunks of at most `config.chunk_records` (`read.Chunks`),
    so that the records held are a chunk's, not the input's: each chunk is an update of the generation
    the last one committed, and only the last chunk's generation is made current (one rename),
    so a run killed half-way leaves the state as it was. Chunks give the outputs of one update
    over all the records (tests/test_pipeline.py): it is the same machinery as runs one after
    another, with the story ids and counts taken against the history the run started from, and
    the story steps (keyword model) run once, in the last chunk (`_update`'s `match_stories`)."""
    with state.locked(folder, wait=wait, notify=warn):
        history = call("load state", state.load, folder, config)
        result, registry = _update_in_chunks(paths, folder, history, config, datetime.now(UTC), call, log)
        if registry is None:
            log(f"nothing new in {', '.join(map(str, paths))}: state {folder} and outputs unchanged")
        call("publish outputs", state.publish, folder, out)
    return result, history.registry if registry is None else registry


def _update_in_chunks(
    paths: Sequence[str | Path],
    folder: Path,
    history: state.History,
    config: Config,
    run_at: datetime,
    call: Call,
    log: Callable[[str], None],
) -> tuple[Result, pl.DataFrame | None]:
    """`update` chunk by chunk, each committed on top of the last; the last committed
    generation made current. The result of the last chunk that added records and the story
    registry after it (None: nothing was new).

    Where a chunk's first pass can run on this machine's workers (`shards.FirstPass.in_background`:
    two pieces or more), the next chunk is read once this chunk's first pass is taken, and its
    new records normalized and cleaned by the workers while this one is matched; their rows wait
    on disk. Otherwise a chunk's frames are let go before the next is read: what is held between
    chunks is the committed generation's light tables."""
    timings: dict[str, float] = {}
    stage = _timed(shards.on_cores(call, config), timings)
    batch = stage("changed files", state.changed_files, list(paths), history)
    chunks = read.Chunks(batch.found, config, config.chunk_records)
    earlier, chain = Earlier(history), history
    done: tuple[Result, pl.DataFrame, Path] | None = None
    last_committed = False
    generations = folder / "generations"
    ahead = shards.FirstPass.in_background(shards.plan_of(stage), config.chunk_records)

    def read_chunk(seen: pl.DataFrame, first_pass_ahead: bool) -> Chunk:
        records_read, last = stage("read", chunks.next)
        return replace(_new_records(stage, records_read, seen, generations if first_pass_ahead else None), last=last)

    with contextlib.ExitStack() as first_passes:  # a failed chunk stops the next one's first pass
        chunk = read_chunk(history.records.select(state.RECORD_KEYS), False)  # nothing runs beside the first
        for number in itertools.count(1):
            records_in = earlier.records_in + chunk.rows
            if number > 1 or not chunk.last:
                log(f"chunk {number}{', the last' if chunk.last else ''}: records {earlier.records_in + 1:,} to "
                    f"{records_in:,} of the input")
            coming: Chunk | None = None

            def read_ahead() -> None:  # once this chunk's first pass is taken: the workers take pieces in turn
                nonlocal coming
                if ahead and not chunk.last:
                    coming = read_chunk(pl.concat([chain.records.select(state.RECORD_KEYS), chunk.keys]), True)
                    first_passes.callback(coming.first_pass.close)

            match_stories = chunk.last or config.story_model != "keywords"
            result, added = _update(
                batch, chunk, chain, config, run_at, stage, timings, log, earlier, match_stories,
                texts_to=generations, after_first_pass=read_ahead,
            )
            if added is not None:
                run_from = None if chain is history else history
                generation = call("commit state", state.commit, folder, chain, added, config, run_from, chunk.last)
                done, last_committed = (result, added.registry, generation), chunk.last
                new = pl.concat([earlier.new, added.records.select("article_id")])
                del added, chain  # the chunk's texts and the last generation's tables
                if not chunk.last:
                    chain = call("load state", state.load_generation, generation, config)
                    candidates = (result.summary.candidates["duplicate"], result.summary.candidates["story"])
                    earlier = replace(earlier, new=new, candidates=candidates, stories_pending=not match_stories)
            earlier = replace(earlier, records_in=records_in)
            if chunk.last:
                break
            chunk = coming or read_chunk(chain.records.select(state.RECORD_KEYS), False)
    if done is None:
        return result, None
    result, registry, generation = done
    if not last_committed:  # the last chunks had nothing new: the one before them is the run's last generation
        run = result.summary.run
        seen = run["already_seen"] + earlier.records_in - run["records_in"]
        counts = run | {"records_in": earlier.records_in, "already_seen": seen}
        result = replace(result, summary=replace(result.summary, run=counts))
        call("commit state", _make_current, folder, generation, result.summary)
    return result, registry


def _make_current(folder: Path, generation: Path, summary: write.Summary) -> None:
    """Make a run's last committed generation current, its run's counts and report those of
    the whole run (the chunks after it read records seen before)."""
    state.amend_run(generation, summary.run, write.render_report(summary))
    state.make_current_generation(folder, generation)
