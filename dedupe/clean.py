"""Strip scraper artifacts from article text and headlines, recording every removed line and why.

First pass (`clean`): line rules (`_line_rule`, in order), then runs of short lines; rules that
only guess from a line's shape hold outside the article's prose. Second pass, once duplicate
groups are known (`clean_with_copies`): what most copies of an article share is the article,
and the titles of the day teach which title pieces are decoration. Cleaning is idempotent:
cleaning a cleaned text removes nothing.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, islice
from urllib.parse import urlsplit

import polars as pl
from rapidfuzz import fuzz

from dedupe.config import Config
from dedupe.schema import CLEANED, GROUP_BARE_TITLES, NORMALIZED, TITLE_PIECES, check

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
NAVIGATION_RUN = 5
"""Consecutive short lines that make a menu; a subhead stands alone between paragraphs, and a
short list (ingredients, steps) rarely reaches five: on aeb HTML, 3 cost 0.3 points of F1."""
NAVIGATION_MAX_WORDS = 4
LEADING_BLOCK_MIN_WORDS = 10
"""The repeated-headline rule looks at lines above the first line this long: the article's start."""
SENTENCE_END = re.compile(r"[.!?:;\"'”’)]$")
TITLE_SEPARATOR = re.compile(r"\s+(?:[|\-–—·:»«]{1,2}|::)\s+")
TRUNCATION = re.compile(r"\s*(\.{3,}|…)\s*$")
DOMAIN = re.compile(r"\b[\w-]+\.(com|org|net|co\.uk|co|uk|io|news|info|de|fr|ca|au|in)\b", re.IGNORECASE)
SITE_NAME_SIMILARITY = 85.0
DECORATION_MIN_TITLES = 3
DECORATION_MAX_WORDS = 4
"""Site names and section labels are short: "NBC 5 Dallas-Fort Worth", "pv magazine International"."""
DECORATION_MAX_TITLES_PER_GROUP = 200
"""Titles of one group read to tell decoration from attribution, so a huge group costs O(200) a title."""


WEAK_RULES = frozenset({"link", "short_bullet", "navigation", "no_words"})
"""Rules that guess from a line's shape; the copies of an article overrule them (see `clean_text`)."""
LONG_LINE = 400
"""Lines longer than this are judged sentence by sentence against the copies: a page dump with
no line breaks holds menu, article and footer in one line."""
_BLANK_LINES = re.compile("\n\n\n+")
"""Not "\\n{3,}", which the regex engine tries at every position: a literal start lets it skip
ahead to the next blank line, far faster on a long body."""
SENTENCE_BREAK = re.compile(r"(?<=[.!?\"”])\s+(?=[\"“‘'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class Removal:
    line: int  # 1-based, in the normalized text
    text: str
    rule: str


WRITTEN = ("status", "reason", "headline", "body", "removed_lines")
"""The columns `clean` writes; it passes the others on as they came."""

Shared = Callable[[str], bool]
"""Whether a piece of text is shared by most copies of its article (see `shared_by_copies`)."""


def clean(
    frame: pl.DataFrame, shared: Mapping[str, Shared] | None = None, decorations: Decorations | None = None
) -> pl.DataFrame:
    """Add the cleaned `headline` and `body` and the `removed_lines`; reject records with nothing
    left. Second pass, on a cleaned frame after grouping: `shared` maps article ids to what their
    copies share (the other bodies stay as they were), and `decorations` is what the titles
    taught about decoration."""
    second_pass = "body" in frame.columns
    check(frame, CLEANED if second_pass else NORMALIZED, "clean input")
    shared = shared or {}
    decorations = decorations or Decorations()
    again = pl.col("article_id").is_in(list(shared)) if second_pass else pl.lit(True)
    first_removals = iter(frame.filter(again)["removed_lines"].to_list()) if second_pass else None
    # the texts and bodies of the rows not cleaned again stay in the frame, not copied through Python strings
    bodies: list[str | None] = [None] * frame.height
    headlines: list[str | None] = []
    removals = _RemovedLines()
    rows = frame.select("article_id", "title", pl.when(again).then("text"), "source", "url").iter_rows()
    for row, (article_id, title, text, source, url) in enumerate(rows):
        if first_removals is None or article_id in shared:
            line_rules = _first_pass_rules(next(first_removals)) if first_removals is not None else None
            bodies[row], found = clean_text(text, title, shared.get(article_id), line_rules)
            removals.add(row, found)
        title = decorations.bare_titles.get(article_id, title)
        headlines.append(clean_headline(title, source, url, decorations.pieces))
    removed, body = removals.column(frame.height), pl.Series("body", bodies, dtype=pl.String)
    out = frame.select(list(NORMALIZED)).with_columns(
        pl.Series("headline", headlines, dtype=pl.String),
        body=pl.when(again).then(body).otherwise(frame["body"]) if second_pass else body,
        removed_lines=pl.when(again).then(removed).otherwise(frame["removed_lines"]) if second_pass else removed,
    )
    emptied = (pl.col("status") == "ok") & pl.col("headline").is_null() & pl.col("body").is_null()
    out = out.with_columns(
        status=pl.when(emptied).then(pl.lit("rejected")).otherwise("status"),
        reason=pl.when(emptied)
        .then(pl.format("{}:{}: nothing left after cleanup (all lines were artifacts)", "source_file", "line"))
        .otherwise("reason"),
    )
    return check(out, CLEANED, "clean output")


def clean_with_copies(cleaned: pl.DataFrame, groups: pl.DataFrame, config: Config) -> pl.DataFrame:
    """Clean again, now that duplicate groups are known: in a group of at least
    `consensus_min_copies`, what most copies share is the article. What one copy has before the
    first or after the last shared piece is its site's template (rule `outside_shared_body`), and
    a line the copies share is kept even if its shape looks like an artifact."""
    check(cleaned, CLEANED, "clean with copies input")
    decorations = headline_decorations(cleaned, groups.select("article_id", "duplicate_group"))
    return clean_by_groups(cleaned, groups, config, decorations)


COPIES_BATCH_BYTES = 16 * 2**20
"""Bytes of text whose groups `clean_by_groups` cleans at once (~4,500 speed-corpus texts). What
the copies share is counted as Python tuples of word 3-grams (with the per-line caches and each
group's answers): built for every group of a chunk at once, they made the peak of a chunk full of
copies (60k speed-corpus records in chunks of 20k: 3.26 GiB, in batches 2.10 GiB; 4 MiB saved
0.09 GiB more at 30k for more batches: benchmarks/README.md, *A chunk's working set*). A module
constant: batches do not change the output (tests/test_clean.py)."""


def clean_by_groups(
    frame: pl.DataFrame,
    groups: pl.DataFrame,
    config: Config,
    decorations: Decorations | None = None,
    batch_bytes: int = COPIES_BATCH_BYTES,
) -> pl.DataFrame:
    """`clean` (second pass) of a cleaned `frame` with what the copies share in each group of
    `groups`, in batches of whole groups holding about `batch_bytes` of text (a record in
    no group counts as a group of its own; a group larger than that is a batch alone), so that
    the 3-gram counts held are those of a batch: each row's cleaning depends on its group's
    texts and `decorations` alone. The rows come back in `frame`'s order."""
    membership = groups.select("article_id", "duplicate_group")
    keyed = frame.select("article_id", size=pl.col("text").str.len_bytes().fill_null(0)).join(
        membership, on="article_id", how="left", maintain_order="left"
    ).select(key=pl.coalesce("duplicate_group", "article_id"), size="size")
    keys = keyed.group_by("key", maintain_order=True).agg(pl.col("size").sum())
    keys = keys.with_columns(batch=(pl.col("size").cum_sum() - pl.col("size")) // max(1, batch_bytes))
    batch = keyed.join(keys.select("key", "batch"), on="key", how="left", maintain_order="left")["batch"]
    parts, rows = [], []
    for number in batch.unique(maintain_order=True):
        in_batch = batch == number
        part = frame.filter(in_batch)
        parts.append(clean(part, shared_in_groups(part, membership, config), decorations).select(WRITTEN))
        rows.append(in_batch.arg_true())
        clear_line_caches()  # the next batch holds other groups' lines
    if not parts:
        return clean(frame, {}, decorations)
    written = pl.concat(parts)  # the texts read, not written, are not gathered again
    return check(frame.with_columns(written[pl.concat(rows).arg_sort()]), CLEANED, "clean by groups output")


def with_copies(cleaned: pl.DataFrame, groups: pl.DataFrame, config: Config) -> pl.DataFrame:
    """article_id, duplicate_group of the records of `cleaned` cleaned against their copies: the
    members of groups of `groups` with at least `consensus_min_copies` of them."""
    members = cleaned.select("article_id").join(groups.select("article_id", "duplicate_group"), on="article_id")
    return members.filter(pl.len().over("duplicate_group") >= config.consensus_min_copies)


def shared_in_groups(cleaned: pl.DataFrame, groups: pl.DataFrame, config: Config) -> dict[str, Shared]:
    """article_id -> what its copies share, for the members of groups of at least
    `consensus_min_copies` (only the groups in `groups`: a later run passes those that changed)."""
    members = (
        with_copies(cleaned, groups, config)
        .join(cleaned.select("article_id", "text"), on="article_id")
        .group_by("duplicate_group")  # one aggregation: iterating the groups gathered a frame for each, costly
        .agg("article_id", pl.col("text").drop_nulls())
    )
    shared: dict[str, Shared] = {}
    for article_ids, texts in members.select("article_id", "text").iter_rows():
        shared.update(dict.fromkeys(article_ids, shared_by_copies(texts, config)))
    return shared


def shared_by_copies(texts: list[str], config: Config) -> Shared:
    """A piece of text is shared when most of its word 3-grams occur in at least
    `consensus_share` of the copies.

    The loops over 3-grams are C's (`map`, `chain`, a set's membership), not Python generators,
    and the lines' pieces are cut once for both: clean with copies 1.05x where most records have
    copies, the same output (`benchmarks/text_stages.py --speed-duplicates 0.7`; benchmarks/README.md,
    session 20)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:  # piece by piece, as `_apply_copies` will ask, so the caches serve both
        counts.update(set(chain.from_iterable(map(_trigrams, chain.from_iterable(map(_pieces, text.split("\n")))))))
    needed = config.consensus_share * len(texts)
    common = {gram for gram, count in counts.items() if count >= needed}

    @lru_cache(maxsize=None)  # the copies ask about the same pieces; the cache lives with the group
    def shared(piece: str) -> bool:
        grams = _trigrams(piece)
        return bool(grams) and sum(map(common.__contains__, grams)) >= 0.5 * len(grams)

    return shared


def clean_text(
    text: str | None, title: str | None = None, shared: Shared | None = None, line_rules: dict[int, str] | None = None
) -> tuple[str | None, list[Removal]]:
    """The text without artifact lines, and the removed lines (or pieces of lines) with their rule.

    With `shared` (what the copies of this article share): pieces outside the shared body go, and
    weak rules never remove a line that holds a shared piece."""
    if not text:
        return None, []
    lines = text.split("\n")
    rules = dict(line_rules) if line_rules is not None else _line_rules(lines, fold(title or ""))
    kept = list(lines)
    removals: list[Removal] = []
    if shared is not None:
        rules = _apply_copies(lines, rules, shared, kept, removals)
    for index, rule in rules.items():
        if kept[index]:
            removals.append(Removal(index + 1, kept[index], rule))
            kept[index] = ""
    dropped = {removal.line - 1 for removal in removals if not kept[removal.line - 1]}
    body = "\n".join(line for index, line in enumerate(kept) if index not in dropped)
    body = _BLANK_LINES.sub("\n\n", body).strip("\n") or None
    return body, sorted(removals, key=lambda removal: removal.line)


class _RemovedLines:
    """The `removed_lines` column, gathered flat (row, line, text, rule) and nested by one polars
    group_by: building it from a Python dict per removal was, after the line rules, the largest
    part of clean on the speed corpus (cProfile)."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.removals: list[Removal] = []

    def add(self, row: int, removals: list[Removal]) -> None:
        self.rows.extend([row] * len(removals))
        self.removals.extend(removals)

    def column(self, height: int) -> pl.Series:
        """One list per row, empty for the rows without removals."""
        flat = pl.DataFrame(
            {
                "row": self.rows,
                "line": [removal.line for removal in self.removals],
                "text": [removal.text for removal in self.removals],
                "rule": [removal.rule for removal in self.removals],
            },
            schema={"row": pl.Int64, **CLEANED["removed_lines"].inner.to_schema()},
        )
        nested = flat.group_by("row", maintain_order=True).agg(removed_lines=pl.struct(pl.exclude("row")))
        every_row = pl.DataFrame({"row": pl.int_range(height, eager=True)})
        return every_row.join(nested, on="row", how="left", maintain_order="left")["removed_lines"].fill_null([])


def _first_pass_rules(removals: list[dict[str, object]] | None) -> dict[int, str] | None:
    """The line rules of a first pass, read back from its removals (0-based line -> rule), so the
    second pass need not find them again; None if the removals are not a first pass's."""
    rules = {int(r["line"]) - 1: str(r["rule"]) for r in removals or []}
    return None if "outside_shared_body" in rules.values() else rules


def _apply_copies(
    lines: list[str], rules: dict[int, str], shared: Shared, kept: list[str], removals: list[Removal]
) -> dict[int, str]:
    """Cut what lies outside the shared body (updating `kept` and `removals`); return the line
    rules that still stand."""
    pieces = [(index, piece) for index, line in enumerate(lines) for piece in _pieces(line)]
    flags = [shared(piece) for _, piece in pieces]
    if not any(flags):
        return rules
    first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
    inside: dict[int, list[str]] = defaultdict(list)
    outside: dict[int, list[str]] = defaultdict(list)
    for position, (index, piece) in enumerate(pieces):
        (inside if first <= position <= last else outside)[index].append(piece)
    for index, removed in outside.items():
        removals.append(Removal(index + 1, " ".join(removed), "outside_shared_body"))
        kept[index] = " ".join(inside.get(index, []))
    protected = {index for (index, _), flag in zip(pieces, flags) if flag}
    return {index: rule for index, rule in rules.items() if not (rule in WEAK_RULES and index in protected)}


def _line_rules(lines: list[str], folded_title: str) -> dict[int, str]:
    rules: dict[int, str] = {}
    leading = True
    for index, line in enumerate(lines):
        if not line:
            continue
        folded = fold(line)
        rule = _line_rule(line, folded, folded_title, leading)
        if rule:
            rules[index] = rule
        elif _word_count(folded) >= LEADING_BLOCK_MIN_WORDS:
            leading = False
    rules.update(_navigation_runs(lines, rules))
    prose = [index for index, line in enumerate(lines) if index not in rules and _is_prose(line)]
    if prose:  # lists and short lines between the first and last paragraph of prose are the article's
        rules = {i: rule for i, rule in rules.items() if rule not in WEAK_RULES or not prose[0] < i < prose[-1]}
    return rules


def _is_prose(line: str) -> bool:
    return _ends_sentence(line) and len(line.split()) >= LEADING_BLOCK_MIN_WORDS


def _ends_sentence(line: str) -> bool:
    """`SENTENCE_END` searched in the last two characters, all that its `$` can reach: a search
    of the whole line tries every position, and lines are long."""
    return bool(SENTENCE_END.search(line[-2:]))


def _word_count(folded: str) -> int:
    """The words of a folded text (one space apart), without splitting it."""
    return folded.count(" ") + 1 if folded else 0


@lru_cache(maxsize=1 << 18)  # what the copies share and the cleaning against it cut the same lines
def _pieces(line: str) -> tuple[str, ...]:
    if len(line) <= LONG_LINE:
        return (line,) if line else ()
    return tuple(piece for piece in SENTENCE_BREAK.split(line) if piece)


@lru_cache(maxsize=1 << 18)  # copies repeat the same lines
def _trigrams(text: str) -> tuple[tuple[str, ...], ...]:
    words = fold(text).split()
    if len(words) < 3:
        return (tuple(words),) if words else ()
    return tuple(zip(words, words[1:], words[2:]))


def _line_rule(line: str, folded: str, folded_title: str, leading: bool) -> str | None:
    if folded_title and _repeats_title(folded, folded_title, leading):
        return "repeated_headline"
    if not folded:
        return "no_words"
    if folded in BOILERPLATE_LINES:
        return "boilerplate"
    if BOILERPLATE_STARTS.match(line) and _word_count(folded) <= BOILERPLATE_START_MAX_WORDS:
        return "boilerplate"
    if _may_be_link(line):
        without_urls, urls = URL.subn(" ", BULLET.sub("", line))  # URL finds the same in either (a test holds it)
        if urls and _word_count(fold(without_urls)) <= NAVIGATION_MAX_WORDS:
            return "link"
    if BULLET.match(line) and _word_count(folded) <= SHORT_BULLET_MAX_WORDS:
        return "short_bullet"
    return None


def _may_be_link(line: str) -> bool:
    """False where the link rule cannot hold, found without its regexes (two scans of the line and
    a fold: the bulk of clean where lines carry links). URL needs a "://", "(" or "www.", and every
    token that URL or the bullet touches holds one of their marks, so each token of ASCII letters
    and digits stays a word: a line with more of those than NAVIGATION_MAX_WORDS is no link (a
    Hypothesis test compares this with the rule)."""
    if not ("://" in line or "(" in line or "www." in line.lower()):
        return False
    return next(islice(_PLAIN_TOKEN.finditer(line), NAVIGATION_MAX_WORDS, None), None) is None


_PLAIN_TOKEN = re.compile(r"(?<!\S)[A-Za-z0-9]+(?!\S)")
"""A whitespace-separated token of ASCII letters and digits; found by a regex that stops at the
sixth, faster than splitting the line and testing every token."""


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
        if _word_count(fold(line)) <= NAVIGATION_MAX_WORDS and not _ends_sentence(line):
            run.append(index)
            continue
        if len(run) >= NAVIGATION_RUN:
            found.update(dict.fromkeys(run, "navigation"))
        run = []
    return found


def clean_headline(
    title: str | None, source: str | None = None, url: str | None = None, decorations: frozenset[str] = frozenset()
) -> str | None:
    """The title without a truncation mark or a site name glued to its end or start: one that
    matches the record's source or URL, looks like a domain, or is a known decoration."""
    if not title:
        return None
    headline = TRUNCATION.sub("", title)
    names = _site_names(source, url)
    for _ in range(2):  # "Headline - Section - Site": at most two pieces of decoration
        parts = TITLE_SEPARATOR.split(headline)
        if len(parts) < 2:
            break
        if _is_site_name(parts[-1], names, decorations):
            headline = headline[: headline.rfind(parts[-1])].rstrip(" |-–—·:»«")
        elif _is_site_name(parts[0], names, decorations):
            headline = headline[len(parts[0]) :].lstrip(" |-–—·:»«")
        else:
            break
    return headline.strip() or None


def _site_names(source: str | None, url: str | None) -> list[str]:
    names = [fold(source)] if source else []
    if url:
        host = url_host(url) or ""
        labels = [label for label in host.split(".") if label not in {"www", "m", "com", "co", "uk", "org", "net"}]
        names.extend(labels)
    return [name for name in names if name]


@dataclass(frozen=True)
class Decorations:
    """What the day's titles teach about decoration (see `headline_decorations`)."""

    pieces: frozenset[str] = frozenset()
    """Folded title pieces that are decoration wherever they appear."""
    bare_titles: Mapping[str, str] = field(default_factory=dict)
    """article_id -> a copy's title that this record's title extends with `|`-separated decoration."""


def headline_decorations(cleaned: pl.DataFrame, groups: pl.DataFrame) -> Decorations:
    """Decoration learnt from the titles themselves.

    - A title that is another title plus decoration ("Crash kills 3 | Asia News | Al Jazeera"
      beside "Crash kills 3") is that title (see `bare_titles_in_groups`), unless the record's
      URL path spells the rest out ("Titanfall Review - Mechs and the City" is a subtitle).
    - A piece glued to copies' titles in two or more groups ("- Houston Chronicle") is decoration
      everywhere.
    - A title suffix of a few words, not all lower case, that ends `DECORATION_MIN_TITLES`
      different titles (" - Analyst Blog") is decoration; "- traders" or "- study" stay.
    A run on a state learns the same from what changed (`state.headline_decorations`), with
    these same steps."""
    titles = decoration_titles(cleaned, groups)
    titles_of_group = dict(titles.group_by("duplicate_group").agg(pl.col("title").unique()).iter_rows())
    bare = bare_titles_in_groups(titles_of_group, set(titles["title"]))
    pieces = decoration_pieces(titles, bare, title_pieces(titles["title"].unique().to_list()))
    return Decorations(pieces, record_bare_titles(titles, bare))


def decoration_titles(cleaned: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """article_id, title, url, duplicate_group of the grouped records that have a title."""
    return cleaned.select("article_id", "title", "url").drop_nulls("title").join(groups, on="article_id")


def title_pieces(titles: list[str]) -> pl.DataFrame:
    """TITLE_PIECES of each title: the text before each separator (the bare titles it may
    extend), and its last piece as a suffix candidate (folded, with the folded rest before it)
    when that piece is a few words, not all lower case, after a separator other than ":"."""
    rows = []
    for title in titles:
        separators = list(TITLE_SEPARATOR.finditer(title))
        suffix = head = None
        if separators and separators[-1].group().strip() != ":":
            tail = title[separators[-1].end() :]
            if len(tail.split()) <= DECORATION_MAX_WORDS and not tail.islower():
                suffix, head = fold(tail), fold(title[: separators[-1].start()])
        rows.append((title, [title[: separator.start()] for separator in separators], suffix, head))
    return pl.DataFrame(rows, schema=TITLE_PIECES, orient="row")


def bare_titles_in_groups(titles_of_group: Mapping[str, list[str]], known: set[str]) -> pl.DataFrame:
    """GROUP_BARE_TITLES: in each group, the titles that extend a `known` title with decoration.
    The rest after the separator must not stand elsewhere in a title of the same group (in
    "Germany's gas risks - Polish PM" beside "Polish PM: Germany's gas risks", "Polish PM" is an
    attribution, not decoration). A lookup per separator, and at most
    `DECORATION_MAX_TITLES_PER_GROUP` titles of a group read for that check: linear in titles.
    A title's bare title is the same in every group (the first known one before a separator)."""
    rows = []
    for group, titles in titles_of_group.items():
        others = sorted(titles)[:DECORATION_MAX_TITLES_PER_GROUP]
        for title in titles:
            for separator in TITLE_SEPARATOR.finditer(title):
                bare = title[: separator.start()]
                piece = fold(title[separator.start() :])
                if bare not in known or not piece:
                    continue
                if any(len(part.split()) > DECORATION_MAX_WORDS for part in TITLE_SEPARATOR.split(title[separator.end() :])):
                    break
                if not any(piece in fold(other) for other in others if not other.startswith(bare)):
                    rows.append((group, title, bare, piece))
                break
    return pl.DataFrame(rows, schema=GROUP_BARE_TITLES, orient="row")


def decoration_pieces(titles: pl.DataFrame, bare: pl.DataFrame, pieces: pl.DataFrame) -> frozenset[str]:
    """The folded pieces that are decoration wherever they appear: glued to bare titles (in any
    group, `bare`) in titles of two or more groups, or a suffix (`pieces`, TITLE_PIECES) after
    `DECORATION_MIN_TITLES` different heads. Joins and counts over the titles, no Python loop."""
    glued = (
        titles.select("title", "duplicate_group").join(bare.select("title", "piece").unique("title"), on="title")
        .group_by("piece").agg(pl.col("duplicate_group").n_unique())
        .filter(pl.col("duplicate_group") >= 2)["piece"]
    )
    suffixes = (
        pieces.drop_nulls("suffix").group_by("suffix").agg(pl.col("suffix_head").n_unique())
        .filter(pl.col("suffix_head") >= DECORATION_MIN_TITLES)["suffix"]
    )
    return frozenset(piece for piece in [*glued, *suffixes] if piece)


def record_bare_titles(titles: pl.DataFrame, bare: pl.DataFrame) -> dict[str, str]:
    """article_id -> bare title, for the `titles` rows whose title extends one (`bare`) with a
    piece that the record's URL path does not spell out."""
    rows = titles.select("article_id", "title", "url").join(bare.select("title", "bare_title").unique("title"), on="title")
    return {
        article_id: bare_title
        for article_id, title, url, bare_title in rows.iter_rows()
        if not _in_url_path(title[len(bare_title) :], url)
    }


def _in_url_path(piece: str, url: str | None) -> bool:
    """Whether the URL's path spells out `piece`: then it is part of the headline (a subtitle in
    the slug), not the site's name, which lives in the host."""
    folded = fold(piece)
    return bool(url and folded) and f" {folded} " in f" {fold(urlsplit(url).path)} "


def url_host(url: str) -> str | None:
    """The host of a URL, with or without its scheme ("reuters.com/x" works too)."""
    return urlsplit(url if "//" in url else f"//{url}").hostname


def _is_site_name(piece: str, names: list[str], decorations: frozenset[str]) -> bool:
    folded = fold(piece)
    if not folded:
        return False
    if folded in decorations:
        return True
    if DOMAIN.search(piece) and len(folded.split()) <= 3:
        return True
    squashed = folded.replace(" ", "")
    return any(
        fuzz.ratio(folded, name) >= SITE_NAME_SIMILARITY or (len(squashed) >= 3 and squashed == name.replace(" ", ""))
        for name in names
    )


@lru_cache(maxsize=1 << 17)  # copies repeat the same lines
def fold(text: str) -> str:
    """Lower case words only, one space apart: how lines and titles are compared."""
    if not text.isascii():
        for mark in NON_ASCII_SEPARATORS:  # each `replace` is one C pass, skipped where absent
            if mark in text:
                text = text.replace(mark, " ")
        if not text.isascii():
            return " ".join(_WORD.findall(text.casefold()))
    # the same words (a test holds it), found by str methods rather than the slower regex
    return " ".join(text.lower().translate(_ASCII_NON_WORD_TO_SPACE).split())


_WORD = re.compile(r"\w+")
_ASCII_NON_WORD_TO_SPACE = str.maketrans({chr(c): " " for c in range(128) if not _WORD.fullmatch(chr(c))})
NON_ASCII_SEPARATORS = "’‘“”—–…«»•·─©®€£°"
"""Punctuation that is most of the non-ASCII in English news. None is a word character nor
case-folds to one (a test holds it), so each splits words as a space does: a line whose only
non-ASCII characters are these takes the ASCII way instead of the regex (clean's speed-up:
`python benchmarks/text_stages.py --against COMMIT`, benchmarks/README.md)."""


def clear_line_caches() -> None:
    """Empty the per-line caches (`fold`, `_trigrams`, `_pieces`): they serve the copies within a stage;
    kept, a run in chunks held what every chunk filled them with (up to 2^18 tuples of 3-grams)."""
    fold.cache_clear()
    _trigrams.cache_clear()
    _pieces.cache_clear()
