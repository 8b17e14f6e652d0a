from __future__ import annotations

import sys

import ftfy
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupe.normalize import normalize, normalize_text, normalize_title
from dedupe.read import read
from dedupe.schema import NORMALIZED
from tests.conftest import SEEDS


def test_mojibake_entities_and_whitespace() -> None:
    assert normalize_text("The Iraq-Syria airstrikes â€” a â€œnecessaryâ€\x9d action") == (
        "The Iraq-Syria airstrikes — a “necessary” action"
    )
    assert normalize_text("Fish &amp;amp; chips&nbsp;&#8212; caf&eacute;") == "Fish & chips — café"
    assert normalize_text("  one\t two \u00a0three  \r\n\n\n\nfour\u200b\u2028five ") == "one two three\n\nfour\nfive"
    assert normalize_text("ﬁnancial ＦＵＬＬ\x00\x07") == "financial FULL"


def test_curly_quotes_are_content_and_stay() -> None:
    assert normalize_text("the ‘necessary, appropriate’ action") == "the ‘necessary, appropriate’ action"


def test_empty_becomes_none() -> None:
    assert normalize_text(" \n\t\u200b ") is None
    assert normalize_text(None) is None


def test_titles_are_one_line() -> None:
    assert normalize_title("Biden orders\n  strikes\u00a0 ") == "Biden orders strikes"


def test_frame_rejects_records_left_empty() -> None:
    frame = read([SEEDS]).head(3).with_columns(
        title_raw=pl.lit(None, pl.String), text_raw=pl.Series(["", None, " \u200b "])
    )
    out = normalize(frame)
    assert dict(out.schema) == NORMALIZED
    assert out["status"].to_list() == ["rejected"] * 3
    assert out["reason"][0].endswith(": empty record (no title and no text)")


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_normalizing_twice_changes_nothing(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    title = normalize_title(text)
    assert normalize_title(title) == title


def test_every_character_the_fast_path_lets_through_is_one_the_regexes_keep() -> None:
    """`_normalize_line` returns a printable line without double spaces or ftfy suspects as it is
    (stripped): that holds only if no printable character but the space is whitespace or
    invisible, for every code point."""
    from dedupe.normalize import _HORIZONTAL_SPACE, _INVISIBLE

    changed = [
        hex(code) for code in range(sys.maxunicode + 1)
        if (c := chr(code)).isprintable() and c != " " and (_INVISIBLE.match(c) or _HORIZONTAL_SPACE.match(c) or c.strip() != c)
    ]
    assert changed == []


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_characters="\n\r"), max_size=80))
def test_a_line_comes_out_as_the_regexes_and_ftfy_make_it(line: str) -> None:
    from dedupe.normalize import _FTFY, _FTFY_SUSPECT, _HORIZONTAL_SPACE, _INVISIBLE, _normalize_line

    fixed = ftfy.fix_text(line, _FTFY) if _FTFY_SUSPECT.search(line) else line
    assert _normalize_line(line) == _HORIZONTAL_SPACE.sub(" ", _INVISIBLE.sub("", fixed)).strip()
