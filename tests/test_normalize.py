from __future__ import annotations

import re
import sys

import ftfy
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dedupe.normalize import normalize, normalize_text, normalize_title
from dedupe.read import read
from dedupe.schema import NORMALIZED
from tests.conftest import ROOT, SEEDS

AEB = ROOT.parent / "shared" / "data" / "aeb" / "articles.jsonl"


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
    from dedupe.normalize import _INVISIBLE

    changed = [
        hex(code) for code in range(sys.maxunicode + 1)
        if (c := chr(code)).isprintable() and c != " "
        and (_INVISIBLE.match(c) or WHITESPACE.match(c) or c.strip() != c)
    ]
    assert changed == []


WHITESPACE = re.compile(r"\s+")
"""What `_normalize_line` makes one space of, as a regex; it splits with `str.split` instead."""


def test_str_split_splits_on_what_the_whitespace_regex_matches() -> None:
    """`" ".join(line.split())` is `WHITESPACE.sub(" ", line).strip()` only if `\\s` and
    `str.isspace` (which `split` and `strip` use) agree on every code point; no printable
    character is invisible, so printable lines skip `_INVISIBLE`."""
    from dedupe.normalize import _INVISIBLE

    characters = [chr(code) for code in range(sys.maxunicode + 1)]
    assert [c for c in characters if bool(WHITESPACE.match(c)) != c.isspace()] == []
    assert [c for c in characters if c.isprintable() and _INVISIBLE.match(c)] == []


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_characters="\n\r"), max_size=80))
def test_a_line_comes_out_as_the_regexes_and_ftfy_make_it(line: str) -> None:
    from dedupe.normalize import _FTFY, _FTFY_SUSPECT, _INVISIBLE, _normalize_line

    fixed = ftfy.fix_text(line, _FTFY) if _FTFY_SUSPECT.search(line) else line
    assert _normalize_line(line) == WHITESPACE.sub(" ", _INVISIBLE.sub("", fixed)).strip()


def test_the_fixers_ftfy_runs_are_the_ones_the_fast_path_knows() -> None:
    """`_fix_text` skips ftfy on lines that none of these fixers changes (the mojibake fixers act
    only where `is_bad` holds); a fixer turned on in `_FTFY` (say `uncurl_quotes`) would need its
    own characters in `_FTFY_FIXER_CHARACTERS`."""
    from ftfy import FIXERS

    from dedupe.normalize import _FTFY

    mojibake = {"fix_encoding", "restore_byte_a0", "replace_lossy_sequences", "decode_inconsistent_utf8"}
    assert {name for name in [*FIXERS, "fix_encoding"] if getattr(_FTFY, name)} == {
        *mojibake, *CHARACTER_FIXERS, "fix_c1_controls",
    }
    assert _FTFY.normalization == "NFC"


CHARACTER_FIXERS = (
    "fix_latin_ligatures", "fix_character_width", "fix_line_breaks", "fix_surrogates",
    "remove_terminal_escapes", "remove_control_chars",
)


def test_no_character_fixer_of_ftfy_changes_a_character_outside_the_fast_paths_class() -> None:
    """Every code point but those of `_FTFY_FIXER_CHARACTERS`, in one string, goes through each of
    ftfy's character fixers (and its C1 fixer) unchanged."""
    from ftfy import fixes

    from dedupe.normalize import _FTFY_FIXER_CHARACTERS

    others = "".join(c for code in range(sys.maxunicode + 1) if not _FTFY_FIXER_CHARACTERS.match(c := chr(code)))
    assert len(others) > 1_000_000
    for name in (*CHARACTER_FIXERS, "fix_c1_controls"):
        assert getattr(fixes, name)(others) == others, name


def test_the_mojibake_regex_matches_near_a_non_ascii_character_only() -> None:
    """What `_looks_like_mojibake` rests on, read from the parsed regex of `ftfy.badness.is_bad`:
    its matches are at most `_BADNESS_REACH` + 1 long, its only anchor is `^` (which `pos` keeps at
    the true start), no lookaround, and each alternative needs a character that is not ASCII."""
    import re._constants as sre
    import re._parser as parser

    from ftfy.badness import BADNESS_RE

    from dedupe.normalize import _BADNESS_REACH

    parsed = parser.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    assert parsed.getwidth()[1] <= _BADNESS_REACH + 1

    def opcodes(node):
        if isinstance(node, parser.SubPattern):
            for op, argument in node:
                yield op, argument
                yield from opcodes(argument)
        elif isinstance(node, (list, tuple)):
            for item in node:
                yield from opcodes(item)

    assert {op for op, _ in opcodes(parsed)} & {sre.ASSERT, sre.ASSERT_NOT, sre.GROUPREF} == set()
    assert {argument for op, argument in opcodes(parsed) if op is sre.AT} == {sre.AT_BEGINNING}

    def only_non_ascii(op, argument) -> bool:
        if op is sre.LITERAL:
            return argument > 0x7F
        if op is sre.IN:
            return all(
                (kind is sre.LITERAL and value > 0x7F) or (kind is sre.RANGE and value[0] > 0x7F)
                for kind, value in argument
            )
        return False

    [(branch, (_, alternatives))] = list(parsed)
    assert branch is sre.BRANCH and len(alternatives) > 30
    for alternative in alternatives:
        assert any(only_non_ascii(op, argument) for op, argument in alternative), alternative


def test_a_mojibake_match_holds_a_character_that_stands_alone_or_two_mojibake_characters() -> None:
    """What `_looks_like_mojibake`'s first test rests on, read from the parsed regex: each of its
    alternatives needs (as characters of its sequence, not repeated or optional) two characters of
    `_MOJIBAKE_CHARACTERS` side by side, or one of `_MOJIBAKE_ALONE`."""
    import re
    import re._constants as sre
    import re._parser as parser

    from ftfy.badness import BADNESS_RE

    from dedupe.normalize import _MOJIBAKE_ALONE, _MOJIBAKE_CHARACTERS

    mojibake = re.compile(f"[{_MOJIBAKE_CHARACTERS}]")

    def characters(op, argument) -> set[str]:
        """The characters one element of a sequence matches (empty: any that is not a class of
        literals and ranges)."""
        if op is sre.LITERAL:
            return {chr(argument)}
        if op is sre.IN and all(kind in (sre.LITERAL, sre.RANGE) for kind, _ in argument):
            return {
                chr(code) for kind, value in argument
                for code in ([value] if kind is sre.LITERAL else range(value[0], value[1] + 1))
            }
        return set()

    [(_, (_, alternatives))] = list(parser.parse(BADNESS_RE.pattern, BADNESS_RE.flags))
    for alternative in alternatives:
        sequence = [characters(op, argument) for op, argument in alternative]
        of_mojibake = [bool(found) and all(mojibake.match(c) for c in found) for found in sequence]
        alone = [found for found in sequence if found and all(_MOJIBAKE_ALONE.match(c) for c in found)]
        assert any(map(bool.__and__, of_mojibake, of_mojibake[1:])) or alone, alternative


MOJIBAKE_ALPHABET = st.sampled_from(
    [
        *"abcXYZ .,!?'\"-19\t", *"ÃÂâ€œ™šžŸ¢£¤¥¦§¨©ª«¬®¯°±²³´µ¶·¸¹º»¼½¾¿àáçéêëñöüßŒœ", *"вЂГРСВΒΓΞΟāβ√≈‚",
        "\x81", "\x9d", "ﬁ", "Ｆ", "\u00a0", "\u2019", "\u201c", "о", "の", "─", "\x1b[1m", "e\u0301",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(MOJIBAKE_ALPHABET, max_size=40).map("".join))
@example("voilÃ le travail, la Ã  b")  # the ASCII of a match furthest from its non-ASCII character
@example("xГўВЂВ.a")
def test_the_ftfy_fast_path_returns_what_ftfy_returns(line: str) -> None:
    """Lines dense in the characters of mojibake, next to ASCII, where ftfy's test and fixers act."""
    from ftfy.badness import is_bad

    from dedupe.normalize import _FTFY, _fix_text, _looks_like_mojibake

    assert _looks_like_mojibake(line) == is_bad(line)
    assert _fix_text(line) == ftfy.fix_text(line, _FTFY)


@pytest.mark.skipif(not AEB.exists(), reason="../shared/data is not beside the project")
def test_the_ftfy_fast_path_on_every_line_of_aeb() -> None:
    from ftfy.badness import is_bad

    from dedupe.normalize import _FTFY, _FTFY_SUSPECT, _fix_text, _looks_like_mojibake

    texts = read([AEB])["text_raw"].drop_nulls()
    lines = [line for text in texts for line in text.splitlines() if _FTFY_SUSPECT.search(line)]
    assert len(lines) > 1000
    assert [_looks_like_mojibake(line) for line in lines] == [is_bad(line) for line in lines]
    assert any(is_bad(line) for line in lines)
    assert [_fix_text(line) for line in lines] == [ftfy.fix_text(line, _FTFY) for line in lines]
