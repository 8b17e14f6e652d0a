"""Normalize text: HTML entities, mojibake and Unicode forms (ftfy), control characters, whitespace.

`normalize_text` is idempotent: normalizing twice changes nothing (a property test holds it to that).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache

import ftfy
import polars as pl
from ftfy.badness import BADNESS_RE, MOJIBAKE_CATEGORIES
from ftfy.chardata import CONTROL_CHARS, LIGATURES, WIDTH_MAP

from dedupe.schema import NORMALIZED, READ, check

# Curly quotes are content, not noise: we keep them (ftfy would straighten them).
_FTFY = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, explain=False)
# ftfy is slow on long clean text, so it only sees lines that could hold what it fixes: mojibake
# always has a character of U+0080-U+00FF (Ã, Â, â, ¬, C1 controls), and ftfy also folds
# ligatures, fullwidth forms and lone surrogates. On aeb this is 2.6% of lines, 10x faster.
_FTFY_SUSPECT = re.compile("[\x80-\xff\ufb00-\ufb06\uff01-\uff5e\ud800-\udfff]")
# What ftfy (with `_FTFY`) can change on a line without mojibake: the characters its character fixers map
# (ligatures, widths, control characters with the escape of terminal codes, C1, line breaks, surrogates).
# A line with none of them, NFC, and no match of ftfy's mojibake test leaves `ftfy.fix_text` as it came,
# so it is not called (a test applies each fixer to every other code point).
_FTFY_FIXER_CHARACTERS = re.compile(
    "["
    + "".join(re.escape(chr(code)) for code in sorted({*LIGATURES, *WIDTH_MAP, *CONTROL_CHARS}))
    + "\n\r\x80-\x9f\u2028\u2029\ud800-\udfff]"
)
_NON_ASCII_RUN = re.compile("[^\x00-\x7f]+")
_BADNESS_REACH = 6
"""Every match of ftfy's mojibake regex holds a non-ASCII character and is at most this + 1 long
(a test reads the regex to hold it), so it lies within this many characters of a non-ASCII run."""
_MOJIBAKE_CHARACTERS = "".join(MOJIBAKE_CATEGORIES.values())
"""The ~300 characters ftfy writes its mojibake regex with, as character class contents: ftfy puts
these strings into that regex's classes, so they read the same here."""
_MOJIBAKE_ALONE = re.compile("[\x80-\x9fŒœÂÃ]")
_MOJIBAKE_PAIR = re.compile(f"[{_MOJIBAKE_CHARACTERS}][{_MOJIBAKE_CHARACTERS}]")
"""A match of ftfy's mojibake regex holds a character of `_MOJIBAKE_ALONE` or two of
`_MOJIBAKE_CHARACTERS` side by side (a test reads the regex to hold it). Most suspect lines have
neither (quotes and dashes stand between ASCII letters, Japanese or Chinese prose holds none), and
two scans tell, where the regex needs a search per non-ASCII run: normalize 1.09-1.16x on the speed
corpus, the same output (benchmarks/README.md, 2026-12-02)."""
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\u200b-\u200d\u2060\ufeff\u00ad]")
_MAX_PASSES = 8


def normalize(frame: pl.DataFrame) -> pl.DataFrame:
    """Add normalized `title` (one line) and `text`; reject records left with neither."""
    check(frame, READ, "normalize input")
    title = pl.Series("title", [normalize_title(t) for t in frame["title_raw"]], dtype=pl.String)
    text = pl.Series("text", [normalize_text(t) for t in frame["text_raw"]], dtype=pl.String)
    empty = (pl.col("status") == "ok") & pl.col("title").is_null() & pl.col("text").is_null()
    out = frame.with_columns(title, text).with_columns(
        status=pl.when(empty).then(pl.lit("rejected")).otherwise("status"),
        reason=pl.when(empty)
        .then(pl.format("{}:{}: empty record (no title and no text)", "source_file", "line"))
        .otherwise("reason"),
    )
    return check(out, NORMALIZED, "normalize output")


def normalize_text(text: str | None) -> str | None:
    """Entities decoded, mojibake fixed, NFC, no control or zero-width characters, one space
    between words, stripped lines, at most one blank line between paragraphs. Empty -> None.

    Run to a fixed point: a fix can expose another (an entity inside an entity, or text that ftfy
    reads as mojibake only once the spaces around it are gone)."""
    return _fixed_point(_normalize_once, text)


def normalize_title(title: str | None) -> str | None:
    """A title is one line: `normalize_text` with line breaks turned into spaces."""
    return _fixed_point(_title_once, title)


def _fixed_point(step: Callable[[str | None], str | None], text: str | None) -> str | None:
    for _ in range(_MAX_PASSES):
        previous, text = text, step(text)
        if text == previous or text is None:
            break
    return text


def _title_once(title: str | None) -> str | None:
    text = _normalize_once(title)
    return " ".join(text.split()) if text else None


def _normalize_once(text: str | None) -> str | None:
    if not text:
        return None
    text = unicodedata.normalize("NFC", html.unescape(text))
    paragraphs: list[str] = []
    blank = False
    for line in text.splitlines():  # splits on every Unicode line break, not only "\n"
        line = _normalize_line(line)
        if line:
            if blank and paragraphs:
                paragraphs.append("")
            paragraphs.append(line)
        blank = not line
    return "\n".join(paragraphs) or None


@lru_cache(maxsize=1 << 16)  # wire copy repeats the same lines across many records
def _normalize_line(line: str) -> str:
    if line.isprintable() and "  " not in line and (line.isascii() or not _FTFY_SUSPECT.search(line)):
        # Nothing for ftfy, no invisible character (all are unprintable) and no whitespace but
        # single spaces (every other whitespace character is unprintable; a test checks every
        # code point): the regexes below would change nothing. Most lines of news are like this;
        # normalize ran 1.15-1.5x faster with the same output (`benchmarks/text_stages.py`).
        return line.strip()
    if _FTFY_SUSPECT.search(line):
        line = _fix_text(line)
        if line.isprintable() and "  " not in line:
            return line.strip()  # as above: the regexes below would change nothing
    if not line.isprintable():  # a printable line has no invisible character (a test checks every code point)
        line = _INVISIBLE.sub("", line)
    # every run of whitespace one space, none at the ends: `re.sub(r"\s+", " ", line).strip()`, since `\s` is
    # `str.isspace` (a test checks every code point), without the regex: faster on aeb (benchmarks/README.md)
    return " ".join(line.split())


def _fix_text(line: str) -> str:
    """`ftfy.fix_text(line, _FTFY)`, not called where it would return the line unchanged (most
    accented or non-Latin lines): normalize ran ~2x faster on the speed corpus (benchmarks/README.md)."""
    if (
        _FTFY_FIXER_CHARACTERS.search(line)
        or not unicodedata.is_normalized("NFC", line)
        or len(line) > _FTFY.max_decode_length
        or _looks_like_mojibake(line)
    ):
        return ftfy.fix_text(line, _FTFY)
    return line


def _looks_like_mojibake(line: str) -> bool:
    """`ftfy.badness.is_bad(line)`: none where the line lacks what every match holds, otherwise
    searched only within `_BADNESS_REACH` of the line's non-ASCII runs, where ftfy searches every
    position of the line. `pos` keeps the regex's `^` at the line's true start."""
    if not (_MOJIBAKE_ALONE.search(line) or _MOJIBAKE_PAIR.search(line)):
        return False
    return any(
        BADNESS_RE.search(line, max(run.start() - _BADNESS_REACH, 0), run.end() + _BADNESS_REACH)
        for run in _NON_ASCII_RUN.finditer(line)
    )


def clear_line_cache() -> None:
    """Empty `_normalize_line`'s cache: it serves the wire copies within a stage, not a run's chunks."""
    _normalize_line.cache_clear()
