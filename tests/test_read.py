from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupe.config import Config
from dedupe.read import InputError, guess_encoding, parse_timestamp, read
from dedupe.schema import READ
from tests.conftest import SEED_ARTICLE, SEEDS


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_seed_folder_reads_every_format_and_keeps_the_schema() -> None:
    frame = read([SEEDS])
    assert dict(frame.schema) == READ
    files = set(frame["source_file"].map_elements(lambda p: Path(p).suffix, return_dtype=pl.String))
    assert files == {".txt", ".jsonl", ".csv", ".html"}
    assert frame["article_id"].n_unique() == frame.height
    assert (frame["status"] == "ok").all()


def test_text_file_title_is_first_nonempty_line(tmp_path: Path) -> None:
    frame = read([SEED_ARTICLE])
    row = frame.row(0, named=True)
    assert row["title_raw"] == "Iraq-Syria Airstrikes: President Biden Orders 2nd Attack On Iran Backed Militias"
    assert row["text_raw"].startswith("Iraq-Syria Airstrikes\nIraq-Syria Airstrikes\n\nFor the second time")
    markdown = read([write(tmp_path / "a.md", "\n\n# A title\n\nBody text.")]).row(0, named=True)
    assert (markdown["title_raw"], markdown["text_raw"], markdown["line"]) == ("A title", "Body text.", 3)


def test_ids_are_stable_and_independent_of_the_working_directory(tmp_path: Path) -> None:
    first = read([write(tmp_path / "one" / "feed" / "a.txt", "Title\nBody")])
    second = read([write(tmp_path / "two" / "feed" / "a.txt", "Title\nBody")])
    assert first["article_id"].to_list() == second["article_id"].to_list()
    assert first["article_id"].to_list() != read([write(tmp_path / "b.txt", "Title\nBody")])["article_id"].to_list()
    # the same folder name and relative path give the same id, wherever the folder is
    assert read([tmp_path / "one" / "feed"])["article_id"].to_list() == read([tmp_path / "two" / "feed"])["article_id"].to_list()


def test_columns_by_alias_and_missing_columns(tmp_path: Path) -> None:
    csv_file = write(tmp_path / "h.csv", "Headline,Publisher,Link,Date\nA headline,Reuters,http://x.com/a,2014-03-10T16:55:01Z\n")
    row = read([csv_file]).row(0, named=True)
    assert (row["title_raw"], row["source"], row["url"], row["text_raw"]) == ("A headline", "Reuters", "http://x.com/a", None)
    assert row["published_at"].isoformat() == "2014-03-10T16:55:01+00:00"
    records = [{"body": "Only a body."}, {"id": 7, "title": None, "content": "x"}]
    frame = read([write(tmp_path / "r.json", json.dumps(records, indent=2))])
    assert frame["text_raw"].to_list() == ["Only a body.", "x"]
    assert frame["article_id"][1] == "7"
    assert frame["line"].to_list() == [2, 5]


def test_parquet_input(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pl.DataFrame({"id": ["a", "b"], "title": ["T1", None], "body": ["x", "y"]}).write_parquet(path)
    frame = read([path])
    assert frame["article_id"].to_list() == ["a", "b"]
    assert frame["title_raw"].to_list() == ["T1", None]
    assert frame["line"].to_list() == [1, 2]


def test_bad_records_are_rejected_with_file_and_line_and_the_rest_is_read(tmp_path: Path) -> None:
    lines = ['{"id": "1", "title": "ok"}', "", '{"id": "2", "title": broken}', "[1, 2]", '{"id": "3", "text": "fine"}', '{"id": "4"']
    jsonl = write(tmp_path / "feed.jsonl", "\n".join(lines))
    frame = read([jsonl]).sort("line")
    assert frame["status"].to_list() == ["ok", "rejected", "rejected", "ok", "rejected"]
    reasons = frame.filter(pl.col("status") == "rejected")["reason"].to_list()
    assert reasons[0].startswith(f"{jsonl}:3: malformed JSON line")
    assert reasons[1] == f"{jsonl}:4: JSON record is an array, not an object"
    assert reasons[2].startswith(f"{jsonl}:6: malformed JSON line")


def test_ragged_csv_rows_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", 'id,title\n1,One\n2,Two,extra\n3,"Three, quoted"\n\n4,Four\n')
    frame = read([path])
    assert frame["status"].to_list() == ["ok", "rejected", "ok", "ok"]
    assert frame["reason"][1] == f"{path}:3: CSV row has 3 fields, the header has 2"
    assert frame["title_raw"][2] == "Three, quoted"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.txt", b"  \n\n ", "empty file"),
        ("empty.json", b"", "empty file"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content (control bytes such as NUL), not text"),
        ("scalar.json", b'"just a string"', "JSON top level is a string, not an object or array"),
        ("broken.json", b'{"title": "a",\n "text": }', "malformed JSON: Expecting value (column 10)"),
        ("bad.parquet", b"not parquet at all", "unreadable Parquet"),
        ("nocolumns.csv", b"foo,bar\n1,2\n", "no known column"),
        ("notes.doc", b"whatever", "unsupported file type '.doc'"),
    ],
)
def test_unreadable_files_become_one_rejected_row(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = write(tmp_path / name, content)
    frame = read([path])
    assert frame.height == 1
    row = frame.row(0, named=True)
    assert row["status"] == "rejected"
    assert row["reason"].startswith(f"{path}:")
    assert reason in row["reason"]


def test_a_bad_file_never_stops_the_others(tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.txt", "Good title\nGood body")
    write(tmp_path / "in" / "b.json", "{nope")
    write(tmp_path / "in" / "c.csv", "title\nAnother\n")
    frame = read([tmp_path / "in"])
    assert frame["status"].to_list() == ["ok", "rejected", "ok"]


def test_repeated_ids_are_kept_and_made_unique(tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.jsonl", '{"id": "x", "title": "one"}\n{"id": "x", "title": "two"}')
    write(tmp_path / "in" / "b.csv", "id,title\nx,three\n")
    frame = read([tmp_path / "in"])
    assert frame["article_id"].to_list() == ["x", "x~2", "x~3"]


@pytest.mark.parametrize(
    ("text", "encoding", "codec", "guessed"),
    [
        ("café", "utf-16", "utf-16", False),
        ("café", "utf-8-sig", "utf-8-sig", False),
        ("café", "utf-8", "utf-8", False),
        ("Café owners – “new rules” cost €2,000.", "cp1252", "cp1252", True),
        ("Le ministre a déclaré que la réforme était nécessaire.", "latin-1", "cp1252", True),
        ("Президент России заявил в понедельник, что новые санкции не повлияют.", "cp1251", "cp1251", True),
        ("A headline that has no BOM\n", "utf-16-le", "utf-16-le", True),
    ],
)
def test_encodings_are_guessed_and_the_guess_noted(text: str, encoding: str, codec: str, guessed: bool) -> None:
    found, note = guess_encoding(text.encode(encoding))
    assert found == codec
    assert text.encode(encoding).decode(found) == text
    assert (note is not None) == guessed


def test_a_guessed_encoding_is_recorded_in_the_note(tmp_path: Path) -> None:
    path = write(tmp_path / "feed.jsonl", '{"title": "Президент России заявил в понедельник"}\n'.encode("cp1251"))
    row = read([path]).row(0, named=True)
    assert row["title_raw"] == "Президент России заявил в понедельник"
    assert row["note"] == "encoding guessed: cp1251 (not UTF-8; by charset-normalizer)"


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        read([tmp_path / "nope"])


def test_hidden_and_unknown_files_in_folders_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "in" / ".hidden" / "a.txt", "T\nB")
    write(tmp_path / "in" / "image.png", b"\x89PNG")
    write(tmp_path / "in" / "archive.tar.gz", gzip.compress(b"T\nB"))
    assert read([tmp_path / "in"]).height == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2014-03-10T16:55:01.265000+00:00", "2014-03-10T16:55:01.265000+00:00"),
        ("2014-03-10", "2014-03-10T00:00:00+00:00"),
        ("Mon, 10 Mar 2014 16:55:01 +0100", "2014-03-10T15:55:01+00:00"),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_timestamp(value: str | None, expected: str | None) -> None:
    parsed = parse_timestamp(value)
    assert (parsed.isoformat() if parsed else None) == expected


def test_deeply_nested_json_is_rejected_not_fatal(tmp_path: Path) -> None:
    path = write(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000)
    frame = read([path, write(tmp_path / "ok.txt", "Title\nBody")])
    assert frame["status"].to_list() == ["rejected", "ok"]
    assert "RecursionError" in frame["reason"][0]


def test_broken_html_is_read_or_rejected_never_fatal(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.html", "<html><body><div><p>Unclosed " + "<div>" * 5000 + "text &bogus; &#xD800;")
    frame = read([broken])
    assert frame.height == 1 and frame["status"][0] in {"ok", "rejected"}


def test_a_line_over_the_record_limit_is_rejected_unread_and_the_rest_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "feed.jsonl", '{"title": "one"}\n{"title": "' + "x" * 5000 + '"}\n{"title": "three"}')
    frame = read([path], Config(max_record_bytes=1000))
    assert frame["status"].to_list() == ["ok", "rejected", "ok"]
    assert frame["reason"][1] == f"{path}:2: record of 5,014 characters is larger than max_record_bytes (1,000): not read"


def test_gzip_is_read_and_a_gzip_bomb_refused_after_the_records_before_it(tmp_path: Path) -> None:
    zipped = write(tmp_path / "feed.csv.gz", gzip.compress(b"id,title\nz1,Zipped\n"))
    assert read([zipped])["title_raw"].to_list() == ["Zipped"]
    bomb = write(tmp_path / "bomb.jsonl.gz", gzip.compress(b'{"title": "first"}\n' + b" " * 10_000_000 + b"\n"))
    frame = read([bomb], Config(max_record_bytes=1000, max_gzip_ratio=100))
    assert frame["status"].to_list() == ["ok", "rejected"]
    assert frame["reason"][1].startswith(f"{bomb}:2: gzip decompresses to more than")


def test_a_quote_running_over_lines_rejects_its_first_line_only(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'id,title\n1,"Unclosed\n2,Two\n3,Three\n')
    frame = read([path])
    assert frame["line"].to_list() == [2, 3, 4]
    assert frame["status"].to_list() == ["rejected", "ok", "ok"]
    assert "malformed CSV row: unexpected end of data; a quote opened here runs to line 4" in frame["reason"][0]


def test_bad_utf8_bytes_in_a_utf8_file_are_decoded_as_cp1252_and_noted(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", '{"title": "Déjà vu"}\n'.encode() + '{"title": "Caf\xe9"}\n'.encode("latin-1"))
    frame = read([path])
    assert frame["title_raw"].to_list() == ["Déjà vu", "Café"]
    assert frame["note"].to_list() == [None, "invalid UTF-8: this record decoded as cp1252"]


def test_lone_surrogates_and_control_characters_are_kept_as_text(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", b'{"title": "a\\ud800b", "text": "raw\x00nul\x07"}\n')
    row = read([path]).row(0, named=True)
    assert (row["status"], row["title_raw"], row["text_raw"]) == ("ok", "a\ufffdb", "raw\x00nul\x07")


def test_unicode_line_separators_inside_a_jsonl_record_do_not_split_it(tmp_path: Path) -> None:
    path = write(tmp_path / "u.jsonl", '{"title": "a\u2028b\x85c"}\r\n{"title": "two"}\r{"title": "three"}')
    assert read([path]).select("line", "title_raw").rows() == [(1, "a\u2028b\x85c"), (2, "two"), (3, "three")]


def test_id_clashes_are_renamed_and_noted(tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.jsonl", '{"id": "x", "title": "one"}')
    write(tmp_path / "in" / "b.jsonl", '{"id": "x", "title": "two"}')
    frame = read([tmp_path / "in"])
    assert frame["article_id"].to_list() == ["x", "x~2"]
    assert frame["note"].to_list() == [None, f"id clash: x is also the id of {tmp_path / 'in' / 'a.jsonl'}:1, renamed x~2"]


def test_files_that_are_not_regular_are_rejected_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jsonl")
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "missing.csv")
    frame = read([tmp_path])
    assert frame["reason"].to_list() == [
        f"{tmp_path / 'dangling.csv'}:1: cannot read file: No such file or directory",
        f"{tmp_path / 'pipe.jsonl'}:1: not a regular file",
    ]


SUFFIXES_TO_TRY = [".txt", ".md", ".html", ".json", ".jsonl", ".csv", ".parquet", ".jsonl.gz", ".csv.gz", ".txt.gz"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode), suffix=st.sampled_from(SUFFIXES_TO_TRY))
def test_any_bytes_are_read_or_rejected_with_file_and_line(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = write(tmp_path / f"input{suffix}", content)
    frame = read([path])
    assert frame.height >= 1
    for line, reason in frame.filter(pl.col("status") == "rejected").select("line", "reason").iter_rows():
        assert reason.startswith(f"{path}:{line}: ") and line >= 1


any_text = st.text(st.characters(exclude_categories=()), max_size=200)  # surrogates included


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({"id": any_text, "title": any_text, "text": any_text}), min_size=1, max_size=8))
def test_any_unicode_records_are_each_read_once(tmp_path: Path, records: list[dict[str, str]]) -> None:
    path = write(tmp_path / "any.jsonl", "\n".join(json.dumps(record) for record in records))
    frame = read([path])
    assert frame["line"].to_list() == list(range(1, len(records) + 1))
    assert (frame["status"] == "ok").all()
    assert frame["article_id"].n_unique() == len(records)
