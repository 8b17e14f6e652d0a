"""Strip scraper artifacts from article text and headlines, recording every removed line and why.

Line rules run first, each on its own line (`LINE_RULES`, in order); then block rules look at
what is left. Cleaning is idempotent: cleaning a cleaned text removes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import polars as pl
from rapidfuzz import fuzz

from dedupe.schema import CLEANED, NORMALIZED, check

# Whole lines that are page furniture, compared after folding (lower case, words only), so that
# "* Facebook", "Share:" and "SHARE" all match. Only words that never stand alone in a body.
BOILERPLATE_LINES = frozenset(
    """advertisement|advertising|adchoices|sponsored|sponsored content|ad|story continues below advertisement
    share|share this|share this article|share this story|share on facebook|share on twitter|tweet|email|print
    facebook|twitter|instagram|youtube|linkedin|pinterest|reddit|whatsapp|rss|copy link|link copied
    home|menu|search|close|sections|subscribe|subscribe now|sign in|sign up|log in|login|log out|register
    newsletters|newsletter|skip to main content|skip to content|skip to navigation|back to top|top
    read more|view comments|comments|show comments|most popular|most read|trending|trending now
    related|related articles|related stories|related content|recommended|you may also like
    privacy policy|privacy notice|terms of use|terms of service|terms conditions|cookie policy|cookies
    contact us|about us|advertise|advertise with us|careers|follow us|back to gallery|next|previous
    loading|image|photo|video|watch|listen|play|more|see more|show more|load more|expand|collapse""".replace(
        "\n", "|"
    ).replace("    ", "").split("|")
)
# Lines that begin like a notice or a call to action; only short lines, so a paragraph that
# merely starts the same way stays.
BOILERPLATE_STARTS = re.compile(
    r"^\W*(sign up (for|to)|subscribe (to|for|now)|we use cookies|this (site|website) uses cookies|"
    r"by (continuing|using) (to use )?(this|our) (site|website)|click here|follow us|copyright\b|©|"
    r"all rights reserved|read more\W|related\W|share (this|on)\b|you may also like|recommended for you|"
    r"more from\b|get the latest|download (the|our) app|listen to this (article|story)|"
    r"please enable javascript|javascript is (disabled|required)|your browser (does not|doesn't))",
    re.IGNORECASE,
)
BOILERPLATE_START_MAX_WORDS = 30
URL = re.compile(r"(https?://|www\.)\S+|\(\s*(/|#)\S*\s*\)", re.IGNORECASE)
BULLET = re.compile(r"^\s*([*\-•·>]|\d+\.)\s+")
SHORT_BULLET_MAX_WORDS = 5
NAVIGATION_RUN = 3
"""Consecutive short lines that make a menu; a subhead stands alone between paragraphs."""
NAVIGATION_MAX_WORDS = 4
LEADING_BLOCK_MIN_WORDS = 10
"""The repeated-headline rule looks at lines above the first line this long: the article's start."""
SENTENCE_END = re.compile(r"[.!?:;\"'”’)]$")
TITLE_SEPARATOR = re.compile(r"\s+(?:[|\-–—·:»«]{1,2}|::)\s+")
TRUNCATION = re.compile(r"\s*(\.{3,}|…)\s*$")
DOMAIN = re.compile(r"\b[\w-]+\.(com|org|net|co\.uk|co|uk|io|news|info|de|fr|ca|au|in)\b", re.IGNORECASE)
SITE_NAME_SIMILARITY = 85.0


@dataclass(frozen=True)
class Removal:
    line: int  # 1-based, in the normalized text
    text: str
    rule: str


def clean(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the cleaned `headline`, replace `text` by its cleaned version, record `removed_lines`;
    reject records with nothing left."""
    check(frame, NORMALIZED, "clean input")
    headlines, texts, removed = [], [], []
    for title, text, source, url in frame.select("title", "text", "source", "url").iter_rows():
        headline = clean_headline(title, source, url)
        body, removals = clean_text(text, title)
        headlines.append(headline)
        texts.append(body)
        removed.append([{"line": r.line, "text": r.text, "rule": r.rule} for r in removals])
    out = frame.with_columns(
        pl.Series("text", texts, dtype=pl.String),
        pl.Series("headline", headlines, dtype=pl.String),
        pl.Series("removed_lines", removed, dtype=CLEANED["removed_lines"]),
    )
    emptied = (pl.col("status") == "ok") & pl.col("headline").is_null() & pl.col("text").is_null()
    out = out.with_columns(
        status=pl.when(emptied).then(pl.lit("rejected")).otherwise("status"),
        reason=pl.when(emptied)
        .then(pl.format("{}:{}: nothing left after cleanup (all lines were artifacts)", "source_file", "line"))
        .otherwise("reason"),
    )
    return check(out, CLEANED, "clean output")


def clean_text(text: str | None, title: str | None = None) -> tuple[str | None, list[Removal]]:
    """The text without artifact lines, and the removed lines with their rule."""
    if not text:
        return None, []
    lines = text.split("\n")
    rules: dict[int, str] = {}
    leading = True
    folded_title = fold(title or "")
    seen: set[str] = set()
    for index, line in enumerate(lines):
        folded = fold(line)
        if not line:
            continue
        rule = _line_rule(line, folded, folded_title, leading, seen)
        if rule:
            rules[index] = rule
        elif len(folded.split()) >= LEADING_BLOCK_MIN_WORDS:
            leading = False
        seen.add(line)
    rules.update(_navigation_runs(lines, rules))
    kept = [line for index, line in enumerate(lines) if index not in rules]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n") or None
    removals = [Removal(index + 1, lines[index], rule) for index, rule in sorted(rules.items())]
    return body, removals


def _line_rule(line: str, folded: str, folded_title: str, leading: bool, seen: set[str]) -> str | None:
    if folded_title and _repeats_title(folded, folded_title, leading):
        return "repeated_headline"
    if not folded:
        return "no_words"
    if folded in BOILERPLATE_LINES:
        return "boilerplate"
    if BOILERPLATE_STARTS.match(line) and len(folded.split()) <= BOILERPLATE_START_MAX_WORDS:
        return "boilerplate"
    if URL.search(line) and len(fold(URL.sub(" ", BULLET.sub("", line))).split()) <= NAVIGATION_MAX_WORDS:
        return "link"
    if BULLET.match(line) and len(folded.split()) <= SHORT_BULLET_MAX_WORDS:
        return "short_bullet"
    if line in seen:
        return "repeated_line"
    return None


def _repeats_title(folded: str, folded_title: str, leading: bool) -> bool:
    """The headline itself anywhere, or, above the article's first long line, a piece of it (a
    kicker such as "Iraq-Syria Airstrikes" above "Iraq-Syria Airstrikes: President Biden ...")."""
    if folded == folded_title:
        return True
    if not leading or not folded:
        return False
    return f" {folded} " in f" {folded_title} " and len(folded) < len(folded_title)


def _navigation_runs(lines: list[str], rules: dict[int, str]) -> dict[int, str]:
    """Runs of short lines without sentence punctuation, blank lines aside: menus and link lists."""
    found: dict[int, str] = {}
    run: list[int] = []
    for index, line in enumerate([*lines, "an end marker that is long enough to close any run"]):
        if not line or index in rules:
            continue
        if len(fold(line).split()) <= NAVIGATION_MAX_WORDS and not SENTENCE_END.search(line):
            run.append(index)
            continue
        if len(run) >= NAVIGATION_RUN:
            found.update(dict.fromkeys(run, "navigation"))
        run = []
    return found


def clean_headline(title: str | None, source: str | None = None, url: str | None = None) -> str | None:
    """The title without a truncation mark or a site name glued to its end or start."""
    if not title:
        return None
    headline = TRUNCATION.sub("", title)
    names = _site_names(source, url)
    for _ in range(2):  # "Headline - Section - Site": at most two pieces of decoration
        parts = TITLE_SEPARATOR.split(headline)
        if len(parts) < 2:
            break
        if _is_site_name(parts[-1], names):
            headline = headline[: headline.rfind(parts[-1])].rstrip(" |-–—·:»«")
        elif _is_site_name(parts[0], names):
            headline = headline[len(parts[0]) :].lstrip(" |-–—·:»«")
        else:
            break
    return headline.strip() or None


def _site_names(source: str | None, url: str | None) -> list[str]:
    names = [fold(source)] if source else []
    if url:
        host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
        labels = [label for label in host.split(".") if label not in {"www", "m", "com", "co", "uk", "org", "net"}]
        names.extend(labels)
    return [name for name in names if name]


def _is_site_name(piece: str, names: list[str]) -> bool:
    folded = fold(piece)
    if not folded:
        return False
    if DOMAIN.search(piece) and len(folded.split()) <= 3:
        return True
    squashed = folded.replace(" ", "")
    return any(
        fuzz.ratio(folded, name) >= SITE_NAME_SIMILARITY or (len(squashed) >= 3 and squashed == name.replace(" ", ""))
        for name in names
    )


def fold(text: str) -> str:
    """Lower case words only, one space apart: how lines and titles are compared."""
    return " ".join(_WORD.findall(text.casefold()))


_WORD = re.compile(r"\w+")
