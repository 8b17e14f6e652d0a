from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupe import clean, normalize, pipeline, read, shards, state, write
from dedupe.config import Config
from dedupe.schema import READ

words = st.sampled_from(["council", "budget", "approved", "the", "école", "東京", "\u200b", "&amp;", "\x00", "-", "\n"])
any_text = st.one_of(st.text(st.characters(exclude_categories=()), max_size=300), st.lists(words, max_size=80).map(" ".join))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({"title": any_text, "text": any_text}), min_size=1, max_size=12), st.data())
def test_any_unicode_goes_through_matching_and_every_record_comes_out(
    tmp_path: Path, records: list[dict[str, str]], data: st.DataObject
) -> None:
    copies = data.draw(st.lists(st.sampled_from(records), max_size=4))  # some exact duplicates to match
    lines = [json.dumps(record) for record in records + copies]
    path = tmp_path / "any.jsonl"
    path.write_text("\n".join(lines))
    result = pipeline.run([path], Config())
    assert result.articles.height == len(lines)
    assert set(result.articles["status"]) <= {"kept", "duplicate", "rejected"}


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["a", "b", "a~2", "a~2~2", None]), min_size=1, max_size=30), st.integers(1, 7))
def test_reading_in_chunks_gives_the_ids_and_notes_of_one_read(
    tmp_path: Path, ids: list[str | None], size: int
) -> None:
    """Repeated ids across chunk boundaries (and input ids that look like renamed ones) come out
    as one read numbers them; so do rejected lines."""
    lines = [json.dumps({"id": i, "title": f"title {n}"}) if i else "{broken" for n, i in enumerate(ids)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines[: len(lines) // 2]))
    (tmp_path / "b.jsonl").write_text("\n".join(lines[len(lines) // 2 :]) or "\n")
    found = read.discover([tmp_path])
    chunks, last = [], False
    reader = read.Chunks(found, Config(), size)
    while not last:
        frame, last = reader.next()
        assert frame.height <= size
        chunks.append(frame)
    assert pl.concat(chunks).equals(read.read_found(found, Config()))


def test_a_chunk_read_is_not_held_by_the_reader_once_the_run_lets_it_go(tmp_path: Path) -> None:
    """A run drops a chunk's raw records before it commits and loads the next: the reader must
    not keep them (it did, in its list of pieces, until the next chunk was asked for)."""
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"id": str(n), "title": f"title {n}"}) for n in range(10)))
    reader = read.Chunks(read.discover([tmp_path]), Config(), 4)
    frame, last = reader.next()
    assert frame.height == 4 and not last
    del frame
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, pl.DataFrame) and "title_raw" in o.columns]
    assert not [o for o in alive if "title 0" in o["title_raw"].to_list()]  # nor the pieces it was made of


def test_stages_let_go_of_the_per_line_caches() -> None:
    """The text stages' per-line caches live with a stage: kept, they grew with every record a
    run in chunks had seen (benchmarks/README.md, *Memory kept between chunks*)."""
    normalize.normalize(pl.DataFrame({"text_raw": ["A line.\nAnother line."], "title_raw": ["A title"]}).pipe(_as_read))
    clean.shared_by_copies(["Council approves the budget.", "Council approves the budget."], Config())
    caches = (normalize._normalize_line, clean.fold, clean._trigrams)
    assert all(cache.cache_info().currsize for cache in caches)
    shards.release_free_memory()
    assert [cache.cache_info().currsize for cache in caches] == [0, 0, 0]


def _as_read(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit(None, dtype).alias(name) for name, dtype in READ.items() if name not in frame.columns
    ).with_columns(article_id=pl.lit("a"), status=pl.lit("ok")).select(list(READ))


def _slice_of_real_data(folder: Path) -> list[Path]:
    """aeb versions (duplicate groups with copies to clean against), news-aggregator headlines
    (stories), an id used twice and a malformed line, in two batch folders."""
    aeb = (SHARED_DATA / "aeb" / "articles.jsonl").read_text().splitlines()[:360]
    headlines = pl.read_csv(SHARED_DATA / "news-aggregator" / "headlines.csv", infer_schema=False).head(400)
    for batch in ("one", "two"):
        (folder / batch).mkdir(parents=True)
    (folder / "one" / "aeb.jsonl").write_text("\n".join(aeb[0::3]) + "\n{broken\n")
    (folder / "two" / "aeb.jsonl").write_text("\n".join(aeb[1::3] + aeb[2::3] + aeb[:2]))  # aeb[:2]: ids used before
    headlines.head(150).write_csv(folder / "one" / "headlines.csv")
    headlines.slice(150, 200).write_csv(folder / "two" / "headlines.csv")
    (folder / "three").mkdir()
    # new records, then records seen before: the last chunk adds nothing
    headlines.slice(350).write_csv(folder / "three" / "aa.csv")
    (folder / "three" / "zz.jsonl").write_text("\n".join(aeb[0::3]))
    return [folder / "one", folder / "two", folder / "three"]


def _outputs(out: Path) -> dict[str, pl.DataFrame]:
    tables = dict(zip(("articles", "stories", "pairs"), write.read_outputs(out), strict=True))
    state = out / "state" / "current"
    tables |= {name: pl.read_parquet(state / f"{name}.parquet").drop("created_at", "merged_at", strict=False)
               for name in ("story_registry", "story_merges")}
    runs = pl.read_parquet(state / "runs.parquet").drop("generation", "run_at")
    return tables | {"runs": runs}


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")
@pytest.mark.parametrize(("size", "workers"), [(97, 1), (250, 1), (97, 2)])
def test_a_run_in_chunks_gives_the_outputs_of_one_update(
    tmp_path: Path, size: int, workers: int, monkeypatch: pytest.MonkeyPatch, first_passes: list[shards.FirstPass]
) -> None:
    """Articles (row for row), stories with their ids, pairs, the story registry and merges and
    the run's counts are those of the same runs unchunked, on a fresh state and on one with a
    history, also when the last chunk has nothing new. The published texts are parts of 50 rows,
    rewritten where a chunk cleaned one again, and publishing takes texts out of their chunk's turn: articles of an earlier
    chunk, or of the history, cleaned again by a later chunk. On two worker processes, each
    chunk's new records after the first (ids used before renamed against the history and the
    chunks before) are found and normalized and cleaned while the chunk before is matched
    (`shards.FirstPass`)."""
    monkeypatch.setattr(write, "PUBLISHED_PART_ROWS", 50)
    monkeypatch.setattr(shards, "MIN_ROWS_ON_CORES", 20)  # on two workers, a chunk of 97 records in pieces
    batches = _slice_of_real_data(tmp_path / "input")
    results, later_again = {}, 0
    for chunk in (0, size):
        out = tmp_path / f"out-{chunk}"
        config = Config(chunk_records=chunk, workers=workers if chunk else 1)
        results[chunk] = []
        for batch in batches:
            pipeline.run_on_state([batch], out, out / "state", config, warn=lambda _: None)
            results[chunk].append(_outputs(out))
            if chunk:
                texts = [set(pl.read_parquet(part)["article_id"]) for part in sorted((out / "state" / "current" / "article_texts").glob("part-*"))]
                later_again += sum(len(part & set().union(*texts[n + 1 :])) for n, part in enumerate(texts))
        generations = [path.name for path in (out / "state" / "generations").iterdir()]
        assert generations == [(out / "state" / "current").resolve().name]
    assert later_again > 0 and any(one._running is not None for one in first_passes) == (workers > 1)
    for unchunked, chunked in zip(results[0], results[size], strict=True):
        for name, table in unchunked.items():
            assert chunked[name].equals(table), name


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")
def test_a_run_in_chunks_matches_stories_once_in_its_last_chunk(tmp_path: Path) -> None:
    """The story steps run in the last chunk alone, over every chunk's groups; the steps that
    follow the records run in every chunk; the outputs are those of one update (above)."""
    batches = _slice_of_real_data(tmp_path / "input")
    calls: list[str] = []

    def call(name: str, function: object, *args: object) -> object:
        calls.append(name)
        return function(*args)  # type: ignore[operator]

    pipeline.run_on_state([batches[0]], tmp_path / "out", tmp_path / "state", Config(chunk_records=97), call=call)
    assert calls.count("read") == 3 and calls.count("normalize and clean") == 3 and calls.count("commit state") == 3
    for story_step in ("group headlines", "minhash stories", "verify stories", "cluster stories", "stable story ids", "build stories"):
        assert calls.count(story_step) == 1, story_step
    assert calls.index("cluster stories") > max(i for i, name in enumerate(calls) if name == "normalize and clean")
    # the third batch's second chunk has nothing new: it still runs its first pass (over no
    # records), by which the flow's progress artifact counts chunks, and commits nothing
    pipeline.run_on_state([batches[1]], tmp_path / "out", tmp_path / "state", Config(chunk_records=97))
    calls.clear()
    pipeline.run_on_state([batches[2]], tmp_path / "out", tmp_path / "state", Config(chunk_records=97), call=call)
    assert calls.count("read") == calls.count("normalize and clean") == 2 and calls.count("commit state") == 2
    assert calls.index("minhash duplicates") < calls.index("read", calls.index("read") + 1)


def test_the_story_steps_hold_no_text_of_the_chunk_nor_the_story_parts(tmp_path: Path) -> None:
    """Once cleaned, a chunk's texts (raw, normalized, cleaned, and cleaned again with copies)
    are written for the commit and let go, and so are story matching's parts of the story tables
    once verified: the story steps of the last chunk, where a 1M run peaked, find none of them in
    a live frame, and the commit stores them all the same."""
    marker = "Quokkaventure"
    words = [f"{consonant}{vowel}{end}" for consonant in "bdfgklmnprst" for vowel in "aeiou" for end in ("n", "l", "rt")]
    draw = [random.Random(event) for event in range(4)]
    bodies = ["\n".join(f"{marker} " + " ".join(draw[event].choices(words, k=14)) + "." for _ in range(6)) for event in range(4)]
    rows = [
        {"id": f"{n}", "title": f"Council vote on harbour budget, day {n % 4}", "text": f"{bodies[n % 4]}\nCopy {n} ends here."}
        for n in range(12)
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    seen: dict[str, list[str]] = {}

    def call(name: str, function: object, *args: object) -> object:
        if name in ("verify stories", "cluster stories", "build stories"):
            gc.collect()
            live = gc.get_objects()
            frames = [frame for frame in live if isinstance(frame, pl.DataFrame)]
            columns = [column for frame in frames for column in frame.iter_columns()]
            columns += [series for series in live if isinstance(series, pl.Series)]
            seen[name] = [
                column.name for column in columns if column.dtype == pl.String and column.str.contains(marker).any()
            ]
            if name != "verify stories":
                seen[name] += [f"story part {frame.columns}" for frame in frames if "deleted" in frame.columns and frame.height]
        return function(*args)  # type: ignore[operator]

    out = tmp_path / "out"
    pipeline.run_on_state([tmp_path / "a.jsonl"], out, out / "state", Config(chunk_records=5), call=call, warn=lambda _: None)
    assert seen.keys() == {"verify stories", "cluster stories", "build stories"}
    assert seen == dict.fromkeys(seen, [])
    history = state.load(out / "state", Config(chunk_records=5))
    assert history.with_record_texts(history.records)["body"].str.contains(marker).all()
    assert write.read_articles(out)["text"].str.contains(marker).all()
    assert history.story_band_keys.height and history.story_candidates.height
    assert [path.name for path in (out / "state" / "generations").iterdir()] == [(out / "state" / "current").resolve().name]
