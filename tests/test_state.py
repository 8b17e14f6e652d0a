"""Incremental runs: batches one after another give what one run over all of them gives, with
story ids that never change, and a state that is either before or after a run, never between."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupe import clean, cluster, minhash, pipeline, state, verify, write
from dedupe.config import Config
from dedupe.schema import ARTICLE_TEXTS, ARTICLES, CLEANED, GROUPS, PAIRS, STORY_REGISTRY, SchemaError
from tests.conftest import ROOT, SEEDS

SHARED_DATA = ROOT.parent / "shared" / "data"
CONFIG = Config()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run_batch(
    paths: list[Path], folder: Path, at: datetime = T0, config: Config = CONFIG
) -> tuple[pipeline.Result, state.Update | None]:
    """One scheduled run, as the flow does it: lock, load, update, commit, publish; the result
    with the articles it published (an update's result holds no texts)."""
    with state.locked(folder):
        history = state.load(folder, config)
        result, update = pipeline.update(paths, history, config, at, texts_to=folder / "generations")
        if update is not None:
            state.commit(folder, history, update, config)
        state.publish(folder, folder.parent / "out")
    return replace(result, articles=write.read_articles(folder.parent / "out")), update


def split_by_time(source: Path, folder: Path) -> tuple[Path, Path]:
    """The headlines before and after the median publication time, as two CSV files."""
    headlines = pl.read_csv(source, infer_schema=False).sort("published_at", "id")
    cut = headlines["published_at"][headlines.height // 2]
    first, second = folder / "batch-1.csv", folder / "batch-2.csv"
    headlines.filter(pl.col("published_at") < cut).write_csv(first)
    headlines.filter(pl.col("published_at") >= cut).write_csv(second)
    return first, second


def partition(articles: pl.DataFrame, column: str) -> list[list[str]]:
    grouped = articles.filter(pl.col(column).is_not_null()).group_by(column).agg(pl.col("article_id").sort())
    return sorted(grouped["article_id"].to_list())


def assert_same_as_one_run(incremental: pipeline.Result, single: pipeline.Result) -> None:
    """Same groups, stories, cleaning and story rows (story ids aside: old ones survive)."""
    assert partition(incremental.articles, "duplicate_group") == partition(single.articles, "duplicate_group")
    assert partition(incremental.articles, "story_id") == partition(single.articles, "story_id")
    columns = ["article_id", "headline", "text", "status", "duplicate_of", "removed_lines"]
    articles = [result.articles.select(columns).sort("article_id") for result in (incremental, single)]
    assert articles[0].equals(articles[1])
    rows = [incremental.stories.drop("story_id"), single.stories.drop("story_id")]
    assert rows[0].sort("representative_id").equals(rows[1].sort("representative_id"))


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")
def test_two_batches_by_time_give_the_stories_of_one_run_with_stable_ids(tmp_path: Path) -> None:
    first, second = split_by_time(SHARED_DATA / "news-aggregator" / "headlines.csv", tmp_path)
    folder = tmp_path / "state"
    one, _ = run_batch([first], folder, T0)
    two, update = run_batch([second], folder, T0 + timedelta(minutes=15))
    single = pipeline.run([first, second], CONFIG)
    assert_same_as_one_run(two, single)
    assert update is not None and update.run["new"] == pl.read_csv(second).height
    old_ids, new_ids = set(one.stories["story_id"]), set(two.stories["story_id"])
    merges = update.merges
    assert set(merges["story_id"]) | (old_ids & new_ids) == old_ids  # every old id lives on or merged
    assert set(merges["merged_into"]) <= old_ids & new_ids  # into an older story
    # a surviving id goes with the largest part of its old story (a split leaves the rest new ids)
    now = two.articles.select("article_id", "story_id")
    moved = one.articles.select("article_id", old="story_id").join(now, on="article_id")
    parts = moved.group_by("old", "story_id").len()
    largest = parts.sort("len", descending=True).group_by("old").agg(pl.col("len").first())
    kept = parts.filter(pl.col("old") == pl.col("story_id")).join(largest, on="old", suffix="_largest")
    assert kept.height == len(old_ids & new_ids) and (kept["len"] == kept["len_largest"]).all()


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")
def test_aeb_in_two_batches_gives_the_groups_and_cleaning_of_one_run(tmp_path: Path) -> None:
    """Every third extractor version comes later: the groups it joins are cleaned with copies again."""
    lines = (SHARED_DATA / "aeb" / "articles.jsonl").read_text().splitlines()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("\n".join(line for i, line in enumerate(lines) if i % 3))
    second.write_text("\n".join(line for i, line in enumerate(lines) if not i % 3))
    run_batch([first], tmp_path / "state")
    incremental, _ = run_batch([second], tmp_path / "state", T0 + timedelta(minutes=15))
    assert_same_as_one_run(incremental, pipeline.run([first, second], CONFIG))


def reads_recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], list[str], list[str]]]:
    """Every read of history records' texts from now on: (positions, ids, texts read)."""
    reads: list[tuple[list[int], list[str], list[str]]] = []
    rows_at = state.History.rows_at

    def recording(history: state.History, positions: Any, texts: Any = state.STORED_TEXTS) -> pl.DataFrame:
        rows = rows_at(history, positions, texts)
        reads.append((list(positions), rows["article_id"].to_list(), list(texts)))
        return rows

    monkeypatch.setattr(state.History, "rows_at", recording)
    return reads


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")
def test_an_update_reads_partners_in_blocks_and_the_texts_of_the_groups_it_cleans_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidate partners are read (their bodies), shingled and verified a block at a time; the
    other texts read are those of the records whose components hold a new record (grouping reads
    their bodies, cleaning with copies the texts of the changed groups' members), and none is
    kept from one step to the next: the partners reach far into the history, and held at once
    they grew with it."""
    lines = (SHARED_DATA / "aeb" / "articles.jsonl").read_text().splitlines()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("\n".join(line for i, line in enumerate(lines) if i % 3))
    second.write_text("\n".join(line for i, line in enumerate(lines) if not i % 3))
    config = CONFIG.with_overrides(partner_block_records=100)
    run_batch([first], tmp_path / "state", config=config)
    history = state.load(tmp_path / "state", config)
    reads = reads_recorded(monkeypatch)
    by_stage: dict[str, list[tuple[list[int], list[str], list[str]]]] = {}
    seen: dict[str, Any] = {}

    def call(name: str, function: Callable[..., Any], *args: object) -> Any:
        before = len(reads)
        result = function(*args)
        by_stage[name] = reads[before:]
        if name == "cluster duplicates":
            seen["groups"] = result.groups
        if name == "minhash duplicates":
            seen["new"] = args[0]["article_id"]
        return result

    pipeline.update([second], history, config, T0 + timedelta(minutes=15), call=call)
    partners = history.counts["candidate partners read"]
    assert partners > 100 and not by_stage["minhash duplicates"]
    blocks = by_stage["verify duplicates"]
    assert len(blocks) == -(-partners // 100) and max(len(ids) for _, ids, _ in blocks) == 100
    assert all(texts == ["body"] and positions == sorted(positions) for positions, _, texts in blocks)
    assert sum(len(ids) for _, ids, _ in blocks) == partners
    groups: pl.DataFrame = seen["groups"]
    new_groups = groups.filter(pl.col("article_id").is_in(seen["new"].implode()))["duplicate_group"]
    with_new = set(groups.filter(pl.col("duplicate_group").is_in(new_groups.implode()))["article_id"])
    grouped = {article_id for _, ids, _ in by_stage["cluster duplicates"] for article_id in ids}
    cleaned = {article_id for _, ids, _ in by_stage["clean with copies"] for article_id in ids}
    assert grouped and grouped <= with_new and cleaned and cleaned <= grouped
    assert len(grouped) < partners
    assert [texts for _, _, texts in by_stage["cluster duplicates"]] == [["body"]]
    # cleaning with copies reads every title; a record cleaned against its copies has its text
    # and first-pass removed lines read for its piece, not its first-pass body (made again from
    # the text); the others (none here, or few) all their texts
    sizes = groups.group_by("duplicate_group").len()
    copied = set(groups.join(sizes.filter(pl.col("len") >= config.consensus_min_copies), on="duplicate_group")["article_id"])
    texts_read = [(texts, set(ids)) for _, ids, texts in by_stage["clean with copies"]]
    assert {tuple(texts) for texts, _ in texts_read} <= {("title_raw",), ("text", "removed_lines"), tuple(state.STORED_TEXTS)}
    assert [ids for texts, ids in texts_read if texts == ["title_raw"]] == [cleaned]
    pieces = [ids for texts, ids in texts_read if texts == ["text", "removed_lines"]]
    assert pieces and set().union(*pieces) <= copied and cleaned & copied == set().union(*pieces)
    assert all(not ids & copied for texts, ids in texts_read if texts == list(state.STORED_TEXTS))
    assert sum(len(read) for read in by_stage.values()) == len(reads)  # no other step reads texts


def seeds_in_thirds(folder: Path) -> None:
    """The seeds' aeb versions and headlines in `folder`/one (two thirds) and `folder`/two (every
    third record): a batch, and a later one that matches into it."""
    lines = (SEEDS / "aeb-sample.jsonl").read_text().splitlines()
    headlines = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False)
    (folder / "one").mkdir(), (folder / "two").mkdir()
    (folder / "one" / "aeb.jsonl").write_text("\n".join(lines[i] for i in range(len(lines)) if i % 3))
    (folder / "two" / "aeb.jsonl").write_text("\n".join(lines[i] for i in range(len(lines)) if not i % 3))
    headlines.filter(pl.int_range(pl.len()) % 3 != 0).write_csv(folder / "one" / "headlines.csv")
    headlines.filter(pl.int_range(pl.len()) % 3 == 0).write_csv(folder / "two" / "headlines.csv")


@pytest.fixture(scope="module")
def seed_matches(tmp_path_factory: pytest.TempPathFactory) -> tuple[state.History, state.Candidates]:
    """The seeds' aeb versions and headlines, a third of them later: the history of the first
    two thirds and the second batch's duplicate candidates against it."""
    folder = tmp_path_factory.mktemp("seed-matches")
    seeds_in_thirds(folder)
    run_batch([folder / "one"], folder / "state")
    history = state.load(folder / "state", CONFIG)
    kept: dict[str, state.Candidates] = {}

    def call(name: str, function: Callable[..., Any], *args: object) -> Any:
        result = function(*args)
        if name == "minhash duplicates":
            kept["matched"] = result
        return result

    pipeline.update([folder / "two"], history, CONFIG, T0, call=call)
    return state.load(folder / "state", CONFIG), kept["matched"]


def test_sketches_read_by_position_are_those_of_the_stored_records(tmp_path: Path) -> None:
    """The sketches an update reads by position (`History.sketches_at`, across the parts of two
    batches) are those made again from the stored records."""
    seeds_in_thirds(tmp_path)
    run_batch([tmp_path / "one"], tmp_path / "state")
    run_batch([tmp_path / "two"], tmp_path / "state", T0 + timedelta(minutes=15))
    history = state.load(tmp_path / "state", CONFIG)
    _, _, made = minhash.duplicate_keys(state.stored_records(history.folder).select(list(CLEANED)), CONFIG)
    every = np.arange(history.records.height)
    assert len(history.record_part_rows) == 2 and (made[:, 0] > 0).all()
    assert np.array_equal(history.sketches_at(every, made.shape[1]), made)
    assert np.array_equal(history.sketches_at(every[1::7], made.shape[1]), made[1::7])


@settings(max_examples=25, deadline=None)
@given(block=st.integers(1, 80))
def test_partners_verified_in_blocks_give_the_pairs_of_all_at_once(
    seed_matches: tuple[state.History, state.Candidates], block: int
) -> None:
    """`state.verify_candidates` gives each verifying call the pairs of at most `block` history
    partners with their rows and sets, and the pairs of verifying every candidate with every
    partner's texts and shingles at once (text and headline pairs, new with old and new with new)."""
    history, matched = seed_matches
    partners = history.record_rows(pl.concat([matched.candidates["article_id_a"], matched.candidates["article_id_b"]]))
    by_level = minhash.duplicate_shingles(partners, CONFIG)
    sets = minhash.ShingleSets.concat([matched.shingles, by_level["text"], by_level["headline"]])
    at_once = verify.verify_duplicates(pl.concat([partners, matched.involved]), matched.candidates, sets, CONFIG)
    assert partners.height > 40 and set(matched.candidates["level"]) == {"text", "headline"}
    held: list[int] = []

    def recording(rows: pl.DataFrame, pairs: pl.DataFrame, sets: minhash.ShingleSets, config: Config) -> pl.DataFrame:
        old = rows.join(matched.involved, on="article_id", how="anti")
        held.append(old.height)
        return verify.verify_duplicates(rows, pairs, sets, config)

    config = CONFIG.with_overrides(partner_block_records=block)
    blocked = state.verify_candidates(matched, replace(history), config, recording)
    assert blocked.equals(at_once) and at_once.height > 0
    assert max(held) <= block and sum(held) == partners.height
    assert len([h for h in held if h]) == -(-partners.height // block)


@pytest.mark.parametrize("block", [CONFIG.partner_block_records, 7])
def test_seed_batches_in_any_split_give_the_one_run_result(tmp_path: Path, block: int) -> None:
    """aeb versions and headlines, a third of them later: duplicate groups and cleaning with
    copies (re-done only for changed groups) come out as in one run, also with the candidate
    partners verified in blocks of 7."""
    config = CONFIG.with_overrides(partner_block_records=block)
    seeds_in_thirds(tmp_path)
    run_batch([tmp_path / "one"], tmp_path / "state", config=config)
    incremental, _ = run_batch([tmp_path / "two"], tmp_path / "state", T0 + timedelta(minutes=15), config)
    single = pipeline.run([tmp_path / "one", tmp_path / "two"], CONFIG)
    assert_same_as_one_run(incremental, single)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")
def test_three_batches_replay_the_story_attachment_of_the_run_before(tmp_path: Path) -> None:
    """news-aggregator in thirds by time: each run replays the attachment rounds the run before
    stored (the third, bounds carried over a run that itself replayed, through Parquet), and the
    stories are those of one run over all three."""
    headlines = pl.read_csv(SHARED_DATA / "news-aggregator" / "headlines.csv", infer_schema=False).sort("published_at", "id")
    batches = []
    for part in range(3):
        batches.append(tmp_path / f"batch-{part}.csv")
        headlines.slice(part * headlines.height // 3, (part + 1) * headlines.height // 3 - part * headlines.height // 3).write_csv(batches[-1])
    for part, batch in enumerate(batches):
        result, update = run_batch([batch], tmp_path / "state", T0 + timedelta(minutes=15 * part))
        assert update is not None and update.story_rounds.height > 0
    assert_same_as_one_run(result, pipeline.run(batches, CONFIG))


def test_semantic_stories_in_two_batches_embed_only_the_new_headlines(tmp_path: Path) -> None:
    """story_model=minilm: the second run sends only headlines it has not seen through the model
    and finds the stories of one run over both batches. (Vectors made in other batches can differ
    in their last digits, so this holds for stories this clear, not bit for bit.)"""
    config = Config(story_model="minilm")
    headlines = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False)
    first, second = tmp_path / "one.csv", tmp_path / "two.csv"
    headlines.filter(pl.int_range(pl.len()) % 3 != 0).write_csv(first)
    headlines.filter(pl.int_range(pl.len()) % 3 == 0).write_csv(second)
    _, one = run_batch([first], tmp_path / "state", T0, config)
    incremental, two = run_batch([second], tmp_path / "state", T0 + timedelta(minutes=15), config)
    assert one is not None and two is not None and one.embeddings.height > 0
    assert not set(two.embeddings["headline"]) & set(one.embeddings["headline"])
    later = incremental.articles.filter(pl.col("article_id").is_in(pl.read_csv(second, infer_schema=False)["id"].to_list()))
    assert set(two.embeddings["headline"]) <= set(later["headline"])
    assert state.load(tmp_path / "state", config).embeddings.height == one.embeddings.height + two.embeddings.height
    assert_same_as_one_run(incremental, pipeline.run([first, second], config))


def test_story_matching_scores_only_the_groups_whose_story_text_changed(tmp_path: Path) -> None:
    """A run reuses the last run's band keys and verdicts for groups whose story text stayed,
    and a group with a new story text is matched against all groups, as a single run would."""
    run_batch([SEEDS / "headlines-sample.csv"], tmp_path / "state")
    history = state.load(tmp_path / "state", CONFIG)
    headlines, stored = history.group_headlines, history.pairs.filter(pl.col("relation") == "same_story")
    assert stored.height > 0
    found = state.story_candidates(headlines, history, CONFIG)
    assert found.changed.is_empty() and found.to_score.is_empty() and found.bucket_pairs.is_empty() and found.band_keys.is_empty()
    assert found.count == history.story_candidate_count == minhash.story_candidates(headlines, CONFIG)[0].height
    assert state.verify_story_candidates(headlines, found, history, CONFIG).equals(stored)
    forgotten = replace(history, pairs=history.pairs.filter(pl.col("relation") == "duplicate"))
    assert state.verify_story_candidates(headlines, found, forgotten, CONFIG).is_empty()  # reused, not scored again

    group, partner = stored.row(0)[:2]
    partner_text = headlines.filter(pl.col("duplicate_group") == partner)["story_text"].item()
    retold = headlines.with_columns(
        story_text=pl.when(pl.col("duplicate_group") == group).then(pl.lit(f"{partner_text} again")).otherwise("story_text")
    )
    found = state.story_candidates(retold, history, CONFIG)
    assert found.changed.to_list() == [group]
    single_candidates, keyword_sets = minhash.story_candidates(retold, CONFIG)
    retold_sets = minhash.ShingleSets.from_sets({g: minhash.keywords(text) for g, text in retold.select("duplicate_group", "story_text").iter_rows()})
    single_keys = minhash.band_keys(retold_sets, CONFIG.story_lsh_threshold, CONFIG)
    for name, single in {"story_band_keys": single_keys, "story_candidates": single_candidates}.items():
        part = getattr(found, "band_keys" if name == "story_band_keys" else "bucket_pairs")  # what the commit writes
        key = state.KEYED[name][1]
        stored_table = getattr(history, name)  # read whole here, to check the part against
        assert 0 < part.height < stored_table.height
        assert part.equals(state._changes(applied(stored_table, part, key), stored_table, key))  # the rows that differ
        assert applied(stored_table, part, key).select(single.columns[:3 if name == "story_band_keys" else 2]).sort(key).equals(
            single.select(single.columns[:3 if name == "story_band_keys" else 2]).sort(key)
        )
    assert found.count == single_candidates.height
    single = verify.verify_stories(retold, single_candidates, keyword_sets, CONFIG)
    assert state.verify_story_candidates(retold, found, history, CONFIG).equals(single)


def applied(table: pl.DataFrame, part: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """A keyed table with a part of it applied: the part's rows replace those of their keys, less the deleted."""
    return pl.concat([table.join(part.select(key), on=key, how="anti"), part.filter(~pl.col("deleted")).drop("deleted")])


def test_a_relative_state_folder_keeps_its_generations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default state is out/state, relative to where the user runs the tool."""
    monkeypatch.chdir(tmp_path)
    run_batch([SEEDS / "headlines-sample.csv"], Path("state"))
    again, update = run_batch([SEEDS / "headlines-sample.csv"], Path("state"), T0 + timedelta(minutes=15))
    assert update is None and again.articles.height == pl.read_csv(SEEDS / "headlines-sample.csv").height
    assert pl.read_parquet(Path("out") / "articles.parquet").height == again.articles.height


def test_the_same_input_again_adds_nothing_and_changes_no_output(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    run_batch([SEEDS / "headlines-sample.csv"], folder)
    before = {path.name: path.stat().st_ino for path in (tmp_path / "out").iterdir()}
    result, update = run_batch([SEEDS / "headlines-sample.csv"], folder, T0 + timedelta(minutes=15))
    assert update is None and result.summary.run["files_unchanged"] == 1 and result.summary.run["records_in"] == 0
    copy = tmp_path / "copy" / "headlines-sample.csv"  # the same records in a file not read before
    copy.parent.mkdir()
    copy.write_bytes((SEEDS / "headlines-sample.csv").read_bytes())
    result, update = run_batch([copy], folder, T0 + timedelta(minutes=30))
    assert update is None
    assert result.summary.run["new"] == 0 and result.summary.run["already_seen"] == result.summary.records
    assert {path.name: path.stat().st_ino for path in (tmp_path / "out").iterdir()} == before
    assert state.load(folder, CONFIG).generation == 1


def test_a_seen_id_with_other_content_is_a_new_record_under_a_suffixed_id(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,title\n7,Fed holds rates steady\n")
    (tmp_path / "b.csv").write_text("id,title\n7,Fed raises rates by a quarter point\n")
    run_batch([tmp_path / "a.csv"], tmp_path / "state")
    result, _ = run_batch([tmp_path / "b.csv"], tmp_path / "state")
    assert sorted(result.articles["article_id"]) == ["7", "7~2"]
    again, update = run_batch([tmp_path / "b.csv"], tmp_path / "state")
    assert update is None and again.articles.height == 2


def test_a_run_that_fails_half_way_leaves_the_state_as_before(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    run_batch([SEEDS / "headlines-sample.csv"], folder)
    (tmp_path / "more.csv").write_text("id,title\nx1,Entirely new story about comets\n")
    with state.locked(folder):
        history = state.load(folder, CONFIG)
        _, update = pipeline.update([tmp_path / "more.csv"], history, CONFIG, T0)
        assert update is not None
        broken = state.Update(**{**update.__dict__, "duplicate_pairs": update.band_keys})  # fails mid-commit
        with pytest.raises(SchemaError):
            state.commit(folder, history, broken, CONFIG)
    assert any((folder / "generations").glob(".tmp-*"))  # what the failed run left
    reloaded = state.load(folder, CONFIG)
    assert not any((folder / "generations").glob(".tmp-*"))
    assert reloaded.generation == 1 and reloaded.records.height == history.records.height
    assert reloaded.articles.equals(history.articles)


def test_a_second_run_on_a_locked_state_waits_or_stops_with_a_clear_message(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    notices: list[str] = []
    entered = threading.Event()

    def second_run() -> None:
        with state.locked(folder, wait=True, notify=notices.append):
            entered.set()

    with state.locked(folder):
        with pytest.raises(state.StateError, match="in use by another run"):
            with state.locked(folder, wait=False):
                pass
        waiting = threading.Thread(target=second_run)
        waiting.start()
        assert not entered.wait(0.5)
    waiting.join()
    assert entered.is_set() and "waiting" in notices[0]


def test_a_state_of_another_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    run_batch([SEEDS / "headlines-sample.csv"], tmp_path / "state")
    meta = tmp_path / "state" / "current" / "meta.json"
    meta.write_text(meta.read_text().replace(f'"format": {state.FORMAT_VERSION}', '"format": 2'))
    with pytest.raises(state.StateError, match=rf"format 2, this version reads {state.FORMAT_VERSION}: .* new --state folder"):
        state.load(tmp_path / "state", CONFIG)


def test_a_state_made_with_other_settings_is_refused(tmp_path: Path) -> None:
    run_batch([SEEDS / "headlines-sample.csv"], tmp_path / "state")
    with pytest.raises(state.StateError, match=r"made with num_perm=128 \(this run: num_perm=64\)"):
        state.load(tmp_path / "state", CONFIG.with_overrides(num_perm=64))


def test_settings_that_do_not_shape_the_state_may_change_between_runs(tmp_path: Path) -> None:
    run_batch([SEEDS / "headlines-sample.csv"], tmp_path / "state")
    loaded = state.load(tmp_path / "state", CONFIG.with_overrides(workers=2, top_stories=3))
    assert loaded.generation == 1


def history_with(stories: dict[str, list[str]], created: dict[str, datetime]) -> state.History:
    """A history whose last run put these articles in these stories (other columns null)."""
    members = pl.DataFrame(
        [(a, s) for s, ids in stories.items() for a in ids], schema=["article_id", "story_id"], orient="row"
    )
    articles = members.select(
        pl.col(name) if name in members.columns else pl.lit(None, dtype).alias(name) for name, dtype in ARTICLES.items()
    )
    registry = pl.DataFrame(
        {"story_id": list(created), "created_at": list(created.values()), "merged_into": [None] * len(created)},
        schema=STORY_REGISTRY,
    )
    return state.History(articles=articles, registry=registry)


def groups_of(stories: dict[str, list[str]]) -> pl.DataFrame:
    rows = [(a, a, None, s) for s, members in stories.items() for a in members]
    return pl.DataFrame(rows, schema=GROUPS, orient="row")


def test_merged_stories_keep_the_oldest_id_and_the_merge_is_recorded() -> None:
    created = {"story-old": T0, "story-older": T0 - timedelta(hours=1)}
    history = history_with({"story-old": ["a", "b"], "story-older": ["c"]}, created)
    now = groups_of({"fresh-1": ["a", "b", "c", "d"], "fresh-2": ["e"]})
    ids = state.stable_story_ids(now, history, T0 + timedelta(hours=1))
    assert dict(ids.groups.select("article_id", "story_id").iter_rows()) == {
        "a": "story-older", "b": "story-older", "c": "story-older", "d": "story-older", "e": "fresh-2"
    }
    assert ids.merges.select("story_id", "merged_into").rows() == [("story-old", "story-older")]
    registry = dict(ids.registry.select("story_id", "merged_into").iter_rows())
    assert registry == {"story-old": "story-older", "story-older": None, "fresh-2": None}


@settings(max_examples=60, deadline=None)
@given(
    before=st.lists(st.integers(0, 5), min_size=1, max_size=12),
    after=st.lists(st.integers(0, 5), min_size=12, max_size=16),
)
def test_story_ids_are_never_reused_and_every_old_id_lives_on_or_is_merged(before: list[int], after: list[int]) -> None:
    """Any re-clustering of old articles plus new ones: each old id ends in exactly one place."""
    old = {f"story-{s}": [f"a{i}" for i, x in enumerate(before) if x == s] for s in set(before)}
    created = {name: T0 + timedelta(minutes=int(name[-1])) for name in old}
    now = {f"story-{s}": [f"a{i}" for i, x in enumerate(after) if x == s] for s in set(after)}  # fresh ids may collide
    ids = state.stable_story_ids(groups_of(now), history_with(old, created), T0 + timedelta(hours=1))
    given_ids = set(ids.groups["story_id"])
    assert ids.groups["story_id"].n_unique() == len(now)  # one id per story
    assert set(ids.merges["story_id"]).isdisjoint(given_ids)  # a merged id is never given again
    assert set(ids.merges["story_id"]) | (set(old) & given_ids) == set(old)
    for absorbed, into in ids.merges.select("story_id", "merged_into").iter_rows():
        assert (created[into], into) < (created[absorbed], absorbed)
    assert set(ids.registry["story_id"]) == set(old) | given_ids


def story_ids_by_the_rule(
    now: dict[str, list[str]], old: dict[str, list[str]], created: dict[str, datetime]
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """`stable_story_ids` written out plainly, one story at a time: each article's id and the merges."""
    story_before = {article: story for story, members in old.items() for article in members}
    shares: dict[str, dict[str, int]] = {}
    for fresh, members in now.items():
        for article in members:
            if article in story_before:
                counts = shares.setdefault(story_before[article], {})
                counts[fresh] = counts.get(fresh, 0) + 1
    claims: dict[str, list[str]] = {}
    for story, counts in shares.items():
        claims.setdefault(min(counts, key=lambda fresh: (-counts[fresh], fresh)), []).append(story)
    names, merges, given_ids = {}, [], set(created)
    for fresh in sorted(now):
        if fresh in claims:
            oldest, *others = sorted(claims[fresh], key=lambda story: (created[story], story))
            names[fresh] = oldest
            merges += [(other, oldest) for other in others]
        else:
            suffix, names[fresh] = 1, fresh
            while names[fresh] in given_ids:
                suffix += 1
                names[fresh] = f"{fresh}-{suffix}"
            given_ids.add(names[fresh])
    return {article: names[fresh] for fresh, members in now.items() for article in members}, merges


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.integers(0, 5), min_size=1, max_size=12),
    after=st.lists(st.integers(0, 7), min_size=12, max_size=16),
    ages=st.lists(st.integers(0, 2), min_size=6, max_size=6),
    gone=st.sets(st.sampled_from(["story-6", "story-7", "story-7-2", "story-7-3", "story-6-2-2"])),
)
def test_stable_story_ids_follow_the_rule(before: list[int], after: list[int], ages: list[int], gone: set[str]) -> None:
    """Against the rule written out plainly: heirs by most articles, the oldest id kept (ties in
    age by name), new stories named by their fresh ids, suffixed past every id given before
    (`gone`: ids of stories merged away or emptied, never in this history's articles)."""
    old = {f"story-{s}": [f"a{i}" for i, x in enumerate(before) if x == s] for s in set(before)}
    created = {name: T0 + timedelta(minutes=ages[int(name[-1])]) for name in old} | {name: T0 for name in gone}
    now = {f"story-{s}": [f"a{i}" for i, x in enumerate(after) if x == s] for s in set(after)}
    history = history_with(old, created)
    run_at = T0 + timedelta(hours=1)
    ids = state.stable_story_ids(groups_of(now), history, run_at)
    expected_ids, expected_merges = story_ids_by_the_rule(now, old, created)
    assert dict(ids.groups.select("article_id", "story_id").iter_rows()) == expected_ids
    assert ids.merges.select("story_id", "merged_into").rows() == expected_merges
    assert ids.merges["merged_at"].to_list() == [run_at] * len(expected_merges)
    opened = sorted(set(expected_ids.values()) - set(created))
    assert ids.registry.rows() == [
        *((name, at, dict(expected_merges).get(name)) for name, at in created.items()), *((name, run_at, None) for name in opened)
    ]


def story_pairs_of(edges: set[tuple[int, int]]) -> pl.DataFrame:
    rows = [(f"g{min(a, b):02d}", f"g{max(a, b):02d}", None, 80.0, "same_story") for a, b in sorted(edges) if a != b]
    frame = pl.DataFrame(rows, schema=PAIRS, orient="row")
    return frame.unique(["article_id_a", "article_id_b"]).sort("article_id_a", "article_id_b")


@pytest.mark.parametrize(("support", "split"), [(0.0, 0), (0.3, 20), (0.5, 3), (0.6, 2)])
@settings(max_examples=300, deadline=None)
@given(
    groups=st.sets(st.integers(0, 24), min_size=1),
    edges=st.sets(st.tuples(st.integers(0, 24), st.integers(0, 24)), max_size=60),
    gone_groups=st.sets(st.integers(0, 24), max_size=4),
    new_groups=st.sets(st.integers(25, 32), max_size=4),
    gone_edges=st.integers(0, 6),
    new_edges=st.sets(st.tuples(st.integers(0, 32), st.integers(0, 32)), max_size=12),
)
def test_story_components_of_touched_components_are_those_of_the_whole_graph(
    groups: set[int], edges: set[tuple[int, int]], gone_groups: set[int], new_groups: set[int], gone_edges: int,
    new_edges: set[tuple[int, int]], support: float, split: int,
) -> None:
    """`state.story_components` recomputes only the story-pair components that hold a new group
    or a pair new or gone since the last run, and keeps the last run's roots elsewhere: the same
    roots as `cluster.story_components` over the whole graph, whatever groups and pairs come and
    go (small graphs, where weak bridges between rings of 5 and unsupported pairs appear and
    vanish), with the story pair guard off, at its default and stricter, and chains split into
    pieces of at least 20 (the default), 3 or 2 groups (`story_split_min_groups`: at 0.5 and 3 a
    third of such graphs split, at 0.6 and 2 a fifth)."""
    config = Config(story_pair_support=support, story_split_min_groups=split)
    before_pairs = story_pairs_of({(a, b) for a, b in edges if a in groups and b in groups})
    before_groups = pl.Series(sorted(f"g{g:02d}" for g in groups), dtype=pl.String)
    history = state.History(
        pairs=before_pairs, story_roots=cluster.story_components(before_groups, before_pairs, config)
    )
    after = (groups - gone_groups) | new_groups
    kept_edges = sorted(edges)[gone_edges:]
    after_pairs = story_pairs_of({(a, b) for a, b in [*kept_edges, *new_edges] if a in after and b in after})
    after_names = sorted(f"g{g:02d}" for g in after)
    after_groups = pl.DataFrame({"duplicate_group": after_names}, schema={"duplicate_group": pl.String})
    restricted = state.story_components(after_groups, after_pairs, history, config)
    whole = cluster.story_components(after_groups["duplicate_group"], after_pairs, config)
    assert restricted.equals(whole)


def test_a_chain_split_in_the_last_run_stays_split_when_a_batch_touches_another_component() -> None:
    """Two stories of 25 groups chained by four groups matching five of each (split at the
    default `story_split_min_groups`), untouched by a batch that adds a group to a lone pair: the
    kept roots are the split ones, as over the whole graph, and only the lone pair's component is
    split again (`History.counts`)."""
    number = {f"{side}{i}": offset + i for side, offset in (("a", 0), ("b", 25), ("x", 50)) for i in range(25)}
    chain = {(number[f"a{i}"], number[f"a{j}"]) for i in range(25) for j in range(i + 1, 25)}
    chain |= {(number[f"b{i}"], number[f"b{j}"]) for i in range(25) for j in range(i + 1, 25)}
    chain |= {(number[f"x{k}"], number[f"{side}{i}"]) for k in range(4) for side in "ab" for i in range(5)}
    before_pairs = story_pairs_of(chain | {(90, 91)})
    before_nodes = {node for pair in chain for node in pair} | {90, 91}
    before_groups = pl.Series(sorted(f"g{node:02d}" for node in before_nodes), dtype=pl.String)
    history = state.History(
        pairs=before_pairs, story_roots=cluster.story_components(before_groups, before_pairs, Config())
    )
    after_pairs = story_pairs_of(chain | {(90, 91), (91, 92)})
    after_groups = pl.DataFrame({"duplicate_group": sorted(f"g{node:02d}" for node in before_nodes | {92})})
    restricted = state.story_components(after_groups, after_pairs, history, Config())
    assert restricted.equals(cluster.story_components(after_groups["duplicate_group"], after_pairs, Config()))
    roots = dict(restricted.iter_rows())
    assert roots["g00"] != roots["g25"] and roots["g90"] == roots["g92"]
    assert history.counts["story groups split again"] == 3  # the lone pair and its new group, not the chain's 54


def test_a_folder_where_batches_arrive_is_read_for_its_new_and_changed_files_only(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "0900.csv").write_text("id,title\n1,Fed holds rates steady\n")
    run_batch([incoming], tmp_path / "state")
    (incoming / "0915.csv").write_text("id,title\n2,Comet passes close to Earth\n")
    result, update = run_batch([incoming], tmp_path / "state")
    assert update is not None and (update.run["files_read"], update.run["files_unchanged"]) == (1, 1)
    assert update.run["records_in"] == 1 and result.articles.height == 2
    with (incoming / "0900.csv").open("a") as grown:
        grown.write("3,Fed chair speaks on inflation\n")
    result, update = run_batch([incoming], tmp_path / "state")
    assert update is not None and (update.run["files_read"], update.run["already_seen"], update.run["new"]) == (1, 1, 1)
    assert sorted(result.articles["article_id"]) == ["1", "2", "3"]


def test_the_story_overview_lists_the_largest_and_the_newest_stories(tmp_path: Path) -> None:
    (tmp_path / "late.csv").write_text("id,title\nz1,Volcano erupts in Iceland\n")
    run_batch([SEEDS / "headlines-sample.csv"], tmp_path / "state", T0)
    result, update = run_batch([tmp_path / "late.csv"], tmp_path / "state", T0 + timedelta(minutes=15))
    assert update is not None
    overview = state.story_overview(result.stories, update.registry, 3)
    assert overview["list"].to_list() == ["largest"] * 3 + ["newest"] * 3
    assert overview.filter(pl.col("list") == "newest")["headline"][0] == "Volcano erupts in Iceland"
    largest = overview.filter(pl.col("list") == "largest")["n_articles"]
    assert largest.to_list() == result.stories["n_articles"].head(3).to_list()


@pytest.mark.parametrize("kill_when", ["generations", "state"])
def test_a_run_killed_at_any_point_leaves_the_state_before_or_after_it(tmp_path: Path, kill_when: str) -> None:
    """SIGKILL a real run as soon as its commit starts (or as soon as it takes the lock): the
    state is then the one before the run or the one after it, and the next run completes it,
    removing what the killed one left (its texts written ahead, a temporary generation)."""
    folder = tmp_path / "state"
    script = (
        "from pathlib import Path; from tests.test_state import run_batch; "
        f"run_batch([Path({str(SEEDS)!r})], Path({str(folder)!r}))"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    def started() -> bool:  # the commit's temporary generation, or the lock taken
        return any((folder / "generations").glob(".tmp-*")) if kill_when == "generations" else folder.exists()

    while process.poll() is None and not started():
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    history = state.load(folder, CONFIG)
    assert history.generation in (0, 1)
    assert history.records.height in (0, 297)
    result, _ = run_batch([SEEDS], folder)
    assert state.load(folder, CONFIG).generation == 1
    assert [path.name for path in (folder / "generations").iterdir()] == ["000001"]
    assert partition(result.articles, "story_id") == partition(pipeline.run([SEEDS], CONFIG).articles, "story_id")


def test_update_runs_the_stages_it_announces_in_order(tmp_path: Path) -> None:
    """The flow's progress artifact counts stages against `UPDATE_STAGES`."""
    names: list[str] = []

    def recording(name: str, function: object, *args: object) -> object:
        names.append(name)
        return pipeline.direct(name, function, *args)  # type: ignore[arg-type]

    pipeline.update([SEEDS / "headlines-sample.csv"], state.History(), CONFIG, T0, recording)
    assert tuple(names) == pipeline.UPDATE_STAGES


def test_rejected_records_beside_stories_are_kept_once_and_the_story_table_is_built(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    (tmp_path / "one" / "broken.json").write_text("{nope")
    (tmp_path / "one" / "a.csv").write_text("id,title\n1,Fed holds rates steady\n")
    (tmp_path / "two" / "b.csv").write_text("id,title\n2,Comet passes close to Earth\n")
    run_batch([tmp_path / "one"], tmp_path / "state")
    result, _ = run_batch([tmp_path / "two"], tmp_path / "state")
    assert result.articles.filter(pl.col("status") == "rejected")["source_file"].to_list() == [str(tmp_path / "one" / "broken.json")]
    assert result.stories["n_articles"].sum() == 2


def three_seed_batches(folder: Path) -> list[Path]:
    """The seed headlines in three files of a third each."""
    headlines = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False)
    paths = [folder / f"batch-{n}.csv" for n in range(3)]
    for n, path in enumerate(paths):
        headlines.filter(pl.int_range(pl.len()) % 3 == n).write_csv(path)
    return paths


def test_a_record_s_texts_are_read_from_its_own_row_of_its_own_part(tmp_path: Path) -> None:
    """Texts are read by position (records part, row): every record asked for, in any order and
    from any part, comes with the texts written for it, also when a texts file holds several
    record batches (as polars writes a part of over ~130k records). Each body names its record,
    so a text read from a neighbouring row or another part fails."""
    batches = []
    for run in range(3):
        ids = [f"r{run}-{n}" for n in range(40)]
        bodies = [f"Record {article_id} reports on item {n} of run {run}.\nIt says {article_id} twice."
                  for n, article_id in enumerate(ids)]
        batches.append(tmp_path / f"batch-{run}.csv")
        pl.DataFrame({"id": ids, "title": [f"Headline {i}" for i in ids], "text": bodies}).write_csv(batches[-1])
    folder = tmp_path / "state"
    for run, batch in enumerate(batches):
        run_batch([batch], folder, T0 + timedelta(minutes=15 * run))
    generation = (folder / "current").resolve()
    assert len(list((generation / "record_texts").iterdir())) == 3
    texts = generation / "record_texts" / "part-000002.arrow"  # the same rows in record batches of 7
    pl.read_ipc(texts).write_ipc(texts, compat_level=pl.CompatLevel.oldest(), record_batch_size=7)

    def assert_own_texts(rows: pl.DataFrame) -> None:
        for article_id, text, body, title_raw in rows.select("article_id", "text", "body", "title_raw").iter_rows():
            assert f"Record {article_id} reports" in text and f"It says {article_id} twice." in body
            assert title_raw == f"Headline {article_id}"

    history = state.load(folder, CONFIG)
    asked = pl.Series(["r2-39", "r0-3", "r1-8", "r1-7", "r0-0", "r2-0", "r1-39", "r1-0", "missing"])
    rows = history.record_rows(asked)
    assert sorted(rows["article_id"]) == sorted(asked.head(-1)) and rows["article_id"].equals(
        history.records.filter(pl.col("article_id").is_in(asked.implode()))["article_id"]
    )  # in history order
    assert_own_texts(rows)
    assert history.counts["record text files read"] == 3
    everything = state.load(folder, CONFIG).record_rows(history.records["article_id"].reverse())
    assert everything.height == 120
    assert_own_texts(everything)


def test_an_update_reads_the_stored_band_keys_of_its_buckets_not_all_of_them(tmp_path: Path) -> None:
    """A load leaves the history's band keys on disk; matching reads those in its new records'
    buckets, streamed, and they are the rows a filter of the whole table gives, in its order."""
    first, second = three_seed_batches(tmp_path)[:2]
    folder = tmp_path / "state"
    run_batch([first], folder)
    history = state.load(folder, CONFIG)
    _, update = pipeline.update([second], history, CONFIG, T0 + timedelta(minutes=15))
    assert update is not None and "band_keys" not in history.__dict__  # never read whole
    whole = state.load(folder, CONFIG).band_keys
    assert whole.height == pl.read_parquet(folder / "current" / "band_keys" / "*.parquet").height > 0
    assert set(whole["level"]) == {"headline"}  # the seeds are headlines
    for level in ("headline", "text"):
        at_level = whole.filter(pl.col("level") == level)
        buckets = pl.concat([at_level.gather_every(3), update.band_keys]).select("band", "key")
        expected = at_level.drop("level").join(buckets.unique(), on=["band", "key"], how="semi")
        assert history.band_keys_in(level, buckets.unique()).equals(expected)
        assert expected.height > 0 or level == "text"


def test_an_update_reads_the_story_tables_by_bucket_group_and_pair_not_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Story matching reads the stored story band keys of its buckets and groups and the stored
    candidates of its pairs, never the whole tables; each read is the filter of the whole table,
    in its order, also over a base and parts that replaced and deleted rows of it."""
    monkeypatch.setattr(state, "COMPACT_SHARE", 100.0)  # a base and two parts
    folder = tmp_path / "state"
    for n, path in enumerate(three_seed_batches(tmp_path)):
        run_batch([path], folder, T0 + timedelta(minutes=15 * n))
    history = state.load(folder, CONFIG)
    stored = [pl.read_parquet(part) for part in sorted((folder / "current" / "story_band_keys").glob("*.parquet"))]
    assert len(stored) == 3 and stored[1]["deleted"].any()  # a part deleted rows of the base
    headlines = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False).with_columns(title=pl.col("title") + " again")
    headlines.head(20).write_csv(tmp_path / "again.csv")
    _, update = pipeline.update([tmp_path / "again.csv"], history, CONFIG, T0 + timedelta(hours=1))
    assert update is not None and update.ahead.rows["story_band_keys"] > 0
    assert history.counts["story tables read whole"] == 0
    assert not {"story_band_keys", "story_candidates"} & set(history.__dict__)  # never read whole
    keys, candidates = history.story_band_keys, history.story_candidates
    assert history.counts["story tables read whole"] == 2
    superseded = stored[0].join(stored[1].select("article_id", "band"), on=["article_id", "band"], how="semi")
    buckets = pl.concat([keys.gather_every(4), superseded.drop("deleted").drop_nulls()]).select("band", "key").unique()
    expected = keys.join(buckets, on=["band", "key"], how="semi", maintain_order="left")
    assert expected.height > 0 and history.story_band_keys_in(buckets).equals(expected)
    groups = pl.concat([keys["article_id"].gather_every(5), superseded["article_id"]])
    assert history.story_band_keys_of(groups).equals(keys.filter(pl.col("article_id").is_in(groups.implode())))
    pairs = candidates.gather_every(3).select("article_id_a", "article_id_b")
    assert history.story_candidates_of(pairs).equals(candidates.join(pairs, on=["article_id_a", "article_id_b"], how="semi", maintain_order="left"))
    assert history.story_candidate_count == candidates.height


def test_a_load_reads_no_texts_and_a_run_writes_the_rows_it_changed(tmp_path: Path) -> None:
    """The history holds the records and articles without their texts; the texts come by id, as
    stored. A one-record batch writes a part of its keyed tables with the rows it changed, not
    the tables again; the published articles are still one table, each article once."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False).write_csv(first)
    second.write_text("id,title\nz1,Volcano erupts in Iceland\n")
    folder = tmp_path / "state"
    run_batch([first], folder)
    history = state.load(folder, CONFIG)
    assert history.records.select(pl.col("text", "body", "text_raw").null_count()).row(0) == (history.records.height,) * 3
    assert not {"text", "removed_lines", "title_raw"} & set(history.articles.columns)
    some = history.records["article_id"].head(5)
    written = state.stored_records(folder / "current").filter(pl.col("article_id").is_in(some.implode()))
    rows = history.record_rows(some)
    assert rows["text_raw"].null_count() == 5  # read by no step once normalized
    assert rows.drop("text_raw").equals(written.select(rows.drop("text_raw").columns))
    published = write.read_articles(tmp_path / "out")
    texts = history.article_texts(some).sort("article_id")
    assert texts.equals(published.filter(pl.col("article_id").is_in(some.implode())).select(texts.columns).sort("article_id"))

    result, update = run_batch([second], folder, T0 + timedelta(minutes=15))
    assert update is not None
    part = pl.read_parquet(folder / "current" / "articles" / "part-000002.parquet")
    assert 1 <= part.height < history.articles.height and "z1" in part["article_id"].to_list()
    assert pl.read_parquet(folder / "current" / "article_texts" / "part-000002.parquet")["article_id"].to_list() == ["z1"]
    assert result.articles["article_id"].is_unique().all() and result.articles.height == history.articles.height + 1
    assert result.articles.head(history.articles.height)["article_id"].equals(published["article_id"])  # in record order


def test_compacted_keyed_tables_give_the_same_history_and_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three batches, with the parts of every keyed table folded into a new base at every run
    (COMPACT_SHARE 0) and never: the same tables load, the same outputs are published."""
    paths = three_seed_batches(tmp_path)
    outcomes = {}
    for share in (0.0, 1e9):
        monkeypatch.setattr(state, "COMPACT_SHARE", share)
        folder = tmp_path / f"share-{share}" / "state"
        for n, path in enumerate(paths):
            run_batch([path], folder, T0 + timedelta(minutes=15 * n))
        outcomes[share] = state.load(folder, CONFIG), write.read_articles(folder.parent / "out")
        bases = sorted(path.name for path in (folder / "current" / "story_keywords").iterdir())
        assert bases == (["base-000003.parquet", "part-000003.parquet"] if share == 0.0 else
                         ["part-000001.parquet", "part-000002.parquet", "part-000003.parquet"])
    (compacted, compacted_out), (parted, parted_out) = outcomes[0.0], outcomes[1e9]
    for name in state.KEYED:
        if name != "article_texts":
            assert getattr(compacted, name).equals(getattr(parted, name)), name
    assert compacted.article_texts(compacted.records["article_id"]).equals(parted.article_texts(parted.records["article_id"]))
    assert compacted_out.equals(parted_out)
    assert_same_as_one_run(pipeline.Result(compacted_out, pl.read_parquet(tmp_path / "share-0.0" / "out" / "stories.parquet"), None, None),  # type: ignore[arg-type]
                           pipeline.run(paths, CONFIG))


def test_texts_are_folded_for_their_dead_rows_not_for_the_size_of_their_parts(tmp_path: Path) -> None:
    """Parts of article_texts that only add articles are left as they are, though they outgrow
    COMPACT_SHARE of the first (a read by key scans every part's keys anyway); once their dead
    rows (a key's earlier rows) pass that share of the live ones they are folded. Any other
    keyed table is folded for the size of its parts, into each key's latest row unless deleted.
    Either way the table reads the same."""
    def texts(ids: list[str], text: str) -> pl.DataFrame:
        rows = pl.DataFrame({"article_id": ids, "title_raw": ids, "text": [f"{text} {i}" for i in ids]})
        frame = rows.with_columns(removed_lines=pl.lit(None, ARTICLE_TEXTS["removed_lines"]), deleted=pl.lit(False))
        return frame.select(*ARTICLE_TEXTS, "deleted")

    def parts(folder: Path) -> dict[str, int]:
        return {part.name: part.stat().st_ino for part in folder.iterdir()}

    folder = tmp_path / "article_texts"
    folder.mkdir()
    texts(["a", "b", "c", "d"], "first").write_parquet(folder / "part-000001.parquet")
    texts(["e", "f", "g"], "new").write_parquet(folder / "part-000002.parquet")
    texts(["a"], "again").write_parquet(folder / "part-000003.parquet")
    before, whole = parts(folder), state._read_keyed(folder, ARTICLE_TEXTS, ["article_id"])
    state._compact_if_grown(folder, ["article_id"], 3, 3)  # 4 parts' rows > 0.5 x 4; 1 dead row of 7 live
    assert parts(folder) == before
    texts(["b", "c", "d", "e"], "later").write_parquet(folder / "part-000004.parquet")
    whole = state._read_keyed(folder, ARTICLE_TEXTS, ["article_id"])
    state._compact_if_grown(folder, ["article_id"], 4, 4)  # 5 dead rows of 7 live
    assert sorted(parts(folder)) == ["base-000004.parquet"]
    assert state._read_keyed(folder, ARTICLE_TEXTS, ["article_id"]).sort("article_id").equals(whole.sort("article_id"))

    other = tmp_path / "articles"  # read whole: folded for the size of its parts
    other.mkdir()
    texts(["a", "b", "c", "d"], "first").write_parquet(other / "part-000001.parquet")
    gone = texts(["b"], "").with_columns(deleted=pl.lit(True))  # as `_changes` marks a key gone
    pl.concat([texts(["e", "f"], "new"), gone]).write_parquet(other / "part-000002.parquet")
    texts(["g"], "new").write_parquet(other / "part-000003.parquet")
    state._compact_if_grown(other, ["article_id"], 3, 3)
    assert sorted(parts(other)) == ["base-000003.parquet"]
    base = pl.read_parquet(other / "base-000003.parquet")
    assert base["article_id"].to_list() == ["a", "c", "d", "e", "f", "g"] and not base["deleted"].any()


WORDS_AND_MARKS = st.sampled_from(["Sky", "NEWS", "news", "bbc", "Straße", "STRASSE", "café", "Ünal", "’", "|", " - ", ":", "2026", "x_y", " "])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(WORDS_AND_MARKS, max_size=8).map("".join), min_size=1, max_size=12), st.data())
def test_a_title_skipped_before_folding_holds_no_piece(titles: list[str], data: st.DataObject) -> None:
    """`may_hold_a_piece` only skips titles whose folded form holds none of the pieces: pieces
    are runs of folded title words, as decoration pieces are, in titles of any case, with
    punctuation and non-ASCII letters (which fold their own way)."""
    runs = [words[start:start + 3] for words in (clean.fold(title).split() for title in titles) for start in range(len(words))]
    pieces = {" ".join(run) for run in data.draw(st.lists(st.sampled_from(runs), min_size=1, max_size=4))} if runs else {"news"}
    kept = state.may_hold_a_piece(pl.Series(titles, dtype=pl.String), pieces).to_list()
    for title, may in zip(titles, kept, strict=True):
        if any(f" {piece} " in f" {clean.fold(title)} " for piece in pieces):
            assert may, (title, pieces)
    assert not state.may_hold_a_piece(pl.Series(["Comet passes Earth"]), {"sky news"}).item()


def test_a_group_too_small_for_copies_gains_a_member_without_its_old_member_being_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that makes a pair of an old article leaves the old one's body as it was (a group
    cleans against its copies from `consensus_min_copies` up): its texts are not read, its
    headline alone is made again. A third copy makes the group large enough: then both old
    members are read and cleaned against their copies. Every run's outputs are those of one run."""
    body = (
        "The comet came closer to Earth than any in a century, astronomers said on Monday.\n"
        "Its tail could be seen from both hemispheres for most of the night, they said.\n"
        "Observatories on three continents followed it until it faded before dawn on Tuesday."
    )
    template = {"1": "Advertisement", "2": "Share this article on social media", "3": "Subscribe to our newsletter today"}
    batches = []
    for number, site in zip(template, ["sky.example", "daily.example", "planet.example"]):
        path = tmp_path / f"{number}.jsonl"
        row = {"id": number, "title": "Comet passes Earth", "text": f"{template[number]}\n{body}", "url": f"https://{site}/comet"}
        path.write_text(json.dumps(row))
        batches.append(path)
    folder = tmp_path / "state"
    run_batch(batches[:1], folder)
    read_ids: list[set[str]] = []
    for number, path in enumerate(batches[1:], start=2):
        history = state.load(folder, CONFIG)
        read = reads_recorded(monkeypatch)
        result, update = pipeline.update([path], history, CONFIG, T0 + timedelta(minutes=15 * number))
        assert update is not None
        read_ids.append({article_id for _, rows, texts in read for article_id in rows if "text" in texts})
        state.commit(folder, history, update, CONFIG)
        state.publish(folder, tmp_path / "out")
        published = replace(result, articles=write.read_articles(tmp_path / "out"))
        assert_same_as_one_run(published, pipeline.run(batches[:number], CONFIG))
        assert published.articles["duplicate_group"].n_unique() == 1  # the copies are one group
        monkeypatch.undo()
    assert read_ids == [set(), {"1", "2"}]  # the pair's old member unread; the three cleaned together


def test_a_run_in_chunks_writes_each_chunk_s_part_once_and_publishes_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk writes its own part of a keyed table, and the later chunks link it, not write it
    again; the parts of the published tables stay apart until the run ends, though every other
    table is compacted at each commit that changes it (COMPACT_SHARE 0), and publishing finds
    them all: the outputs of the same run unchunked, row for row, also when the published
    texts are parts of 7 rows."""
    monkeypatch.setattr(state, "COMPACT_SHARE", 0.0)
    monkeypatch.setattr(write, "PUBLISHED_PART_ROWS", 7)
    *earlier, last = three_seed_batches(tmp_path)
    written: dict[str, int] = {}

    def call(name: str, function: Callable[..., Any], *args: object) -> Any:
        result = function(*args)
        if name == "commit state":  # the parts of the run's generations (earlier runs' may stay beside them)
            written.update({part.name: part.stat().st_ino for part in (result / "article_texts").glob("part-*") if part.name not in before})
        return result

    outputs = {}
    for chunk in (0, 20):
        out = tmp_path / f"out-{chunk}"
        for path in earlier:
            pipeline.run_on_state([path], out, out / "state", Config(chunk_records=0))
        before = {part.name for part in (out / "state" / "current" / "article_texts").glob("part-*")}
        chunked = Config(chunk_records=chunk)
        pipeline.run_on_state([last], out, out / "state", chunked, call=call if chunk else pipeline.direct)
        outputs[chunk] = list(write.read_outputs(out))
    current = tmp_path / "out-20" / "state" / "current"
    chunks = [f"part-{n:06d}.parquet" for n in range(3, 6)]  # the last batch: 56 records, 3 chunks
    assert sorted(written) == chunks
    assert {part.name: part.stat().st_ino for part in (current / "article_texts").glob("part-*") if part.name in written} == written
    assert sorted(path.name for path in (current / "articles").iterdir()) == ["base-000003.parquet", *chunks]
    compacted = ["base-000005.parquet", "part-000005.parquet"]
    assert sorted(path.name for path in (current / "title_pieces").iterdir()) == compacted
    # the story steps run in the last chunk alone: the story tables gain its part only
    assert sorted(path.name for path in (current / "story_keywords").iterdir()) == ["base-000003.parquet", "part-000005.parquet"]
    for chunked, unchunked in zip(outputs[20], outputs[0], strict=True):
        assert chunked.equals(unchunked)


def test_published_texts_are_written_again_only_in_the_parts_a_run_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A third copy of an old story makes its two old copies cleaned again: the batch writes the
    part holding them and the open last part (which takes its new text), and links the others
    as they were (the same files: the same inodes). The published articles are those of one run."""
    monkeypatch.setattr(write, "PUBLISHED_PART_ROWS", 5)
    body = (
        "The comet came closer to Earth than any in a century, astronomers said on Monday.\n"
        "Its tail could be seen from both hemispheres for most of the night, they said.\n"
        "Observatories on three continents followed it until it faded before dawn on Tuesday."
    )
    template = {"1": "Advertisement", "2": "Share this article on social media", "3": "Subscribe to our newsletter today"}
    rows = [
        {"id": number, "title": "Comet passes Earth", "text": f"{line}\n{body}", "url": f"https://{site}.example/comet"}
        for (number, line), site in zip(template.items(), ["sky", "daily", "planet"], strict=True)
    ]
    topics = ["harbour", "orchard", "glacier", "library", "railway", "vineyard", "lighthouse", "marathon", "bakery",
              "telescope", "festival", "quarry", "aqueduct", "monastery", "regatta", "carnival", "observatory", "dam"]
    fillers = [
        {"id": f"f{n}", "title": f"The {topic} reopens after {n + 2} years", "url": f"https://local{n}.example/{topic}",
         "text": f"The {topic} in town {n} reopened on Friday.\nVisitors queued from early morning to see the {topic}."}
        for n, topic in enumerate(topics)
    ]
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(json.dumps(row) + "\n" for row in [*rows[:2], *fillers]))  # 20 records: 4 full parts
    second.write_text(json.dumps(rows[2]) + "\n")
    folder = tmp_path / "state"
    run_batch([first], folder)
    texts = tmp_path / "out" / write.TEXTS_OUTPUT
    parts_before = {part.name: part.stat().st_ino for part in texts.iterdir()}
    assert sorted(parts_before) == [write.part_name(n) for n in range(4)]
    result, _ = run_batch([second], folder, T0 + timedelta(minutes=15))
    parts_after = {part.name: part.stat().st_ino for part in texts.iterdir()}
    assert sorted(parts_after) == [write.part_name(n) for n in range(5)]
    written = {name for name, inode in parts_after.items() if parts_before.get(name) != inode}
    assert written == {write.part_name(0), write.part_name(4)}  # the old copies' part, the new text's
    assert_same_as_one_run(result, pipeline.run([first, second], CONFIG))
    versions = write.versions_of(texts)
    kept = sorted(version.name for version in versions.iterdir())  # this run's and the one before
    left = versions / "000000-0"  # as a publish killed after its swap leaves an older version
    shutil.copytree(texts.resolve(), left)
    os.utime(left, ns=(0, 0))
    run_batch([second], folder, T0 + timedelta(minutes=30))  # nothing new: the same parts, linked already
    assert sorted(version.name for version in versions.iterdir()) == kept and len(kept) == 2


def test_a_new_title_teaches_decoration_to_old_titles_of_unchanged_groups(tmp_path: Path) -> None:
    """A later title that is the bare form of earlier ones ("Comet passes Earth" after "Comet
    passes Earth | Sky News") makes the earlier headlines lose their decoration, though their
    groups did not change: the decorations learnt from what changed are those of one run."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(
        "id,title,url\n1,Comet passes Earth | Sky News,https://sky.example/a\n"
        "2,Fed holds rates steady | Sky News,https://sky.example/b\n3,Volcano erupts in Iceland - Daily Planet,https://dp.example/c\n"
    )
    second.write_text("id,title,url\n4,Comet passes Earth,https://other.example/d\n5,Fed holds rates steady,https://other.example/e\n")
    folder = tmp_path / "state"
    run_batch([first], folder)
    result, _ = run_batch([second], folder, T0 + timedelta(minutes=15))
    single = pipeline.run([first, second], CONFIG)
    assert_same_as_one_run(result, single)
    headlines = dict(result.articles.select("article_id", "headline").iter_rows())
    assert headlines["1"] == "Comet passes Earth" and headlines["2"] == "Fed holds rates steady"
    history = state.load(folder, CONFIG)
    assert set(history.headline_pieces["piece"]) == {"sky news"}


def test_a_headline_whose_decoration_alone_changed_is_made_again_without_reading_its_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Articles with bodies whose groups did not change lose their title's decoration when a
    later title is their bare form: their headline is made again, their texts are not read
    (their body and removed lines are the last run's), and the outputs are those of one run."""
    bodies = [
        (
            "Share this article\nThe comet came closer to Earth than any in a century, astronomers said on Monday.\n"
            "Its tail could be seen from both hemispheres for most of the night."
        ),
        (
            "Subscribe to our newsletter\nThe central bank kept its main rate where it was for a third month running.\n"
            "Officials said inflation had cooled, but not by enough to cut."
        ),
    ]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(json.dumps(row) for row in [
        {"id": "1", "title": "Comet passes Earth | Sky News", "text": bodies[0], "url": "https://sky.example/a"},
        {"id": "2", "title": "Fed holds rates steady | Sky News", "text": bodies[1], "url": "https://sky.example/b"},
    ]))
    second.write_text("\n".join(json.dumps(row) for row in [
        {"id": "3", "title": "Comet passes Earth", "text": "A note on the comet.", "url": "https://o.ex/c"},
        {"id": "4", "title": "Fed holds rates steady", "text": "Markets barely moved.", "url": "https://o.ex/d"},
    ]))
    folder = tmp_path / "state"
    run_batch([first], folder)
    history = state.load(folder, CONFIG)
    read = reads_recorded(monkeypatch)
    result, update = pipeline.update([second], history, CONFIG, T0 + timedelta(minutes=15))
    assert update is not None
    assert history.counts["headline only"] == 2 and history.counts["cleaned again"] == 2  # the new records
    assert not {"1", "2"} & {article_id for _, rows, _ in read for article_id in rows}
    state.commit(folder, history, update, CONFIG)
    state.publish(folder, tmp_path / "out")
    published = replace(result, articles=write.read_articles(tmp_path / "out"))
    single = pipeline.run([first, second], CONFIG)
    assert_same_as_one_run(published, single)
    articles = published.articles.sort("article_id")
    assert articles["headline"].to_list()[:2] == ["Comet passes Earth", "Fed holds rates steady"]
    texts = articles["text"].to_list()
    assert "astronomers" in texts[0] and "inflation" in texts[1]  # the stored bodies, not nulls
    assert all(len(lines) == 1 for lines in articles["removed_lines"].to_list()[:2])  # the share and subscribe lines
