from __future__ import annotations

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
