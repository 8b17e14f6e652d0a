from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dedupe.clean import clean, clean_headline, clean_text, clean_with_copies, headline_decorations
from dedupe.normalize import normalize
from dedupe.read import read
from dedupe.schema import CLEANED
from tests.conftest import SEED_ARTICLE

GOLDEN = Path(__file__).parent / "golden" / "seed_article.json"
SEED_TITLE = "Iraq-Syria Airstrikes: President Biden Orders 2nd Attack On Iran Backed Militias"


def test_seed_article_matches_its_golden_file() -> None:
    row = clean(normalize(read([SEED_ARTICLE]))).row(0, named=True)
    cleaned = {"headline": row["headline"], "text": row["body"], "removed_lines": row["removed_lines"]}
    assert cleaned == json.loads(GOLDEN.read_text())


def test_seed_article_loses_the_repeated_kicker_and_keeps_its_subhead() -> None:
    row = clean(normalize(read([SEED_ARTICLE]))).row(0, named=True)
    assert row["headline"] == SEED_TITLE
    assert row["body"].startswith("For the second time")
    lines = row["body"].split("\n")
    assert "Iraq-Syria Airstrikes" not in lines
    assert "Iraq-Syria Airstrikes Against Militia Weapons Storage And Operational Facilities" in lines
    assert row["removed_lines"] == [
        {"line": 1, "text": "Iraq-Syria Airstrikes", "rule": "repeated_headline"},
        {"line": 2, "text": "Iraq-Syria Airstrikes", "rule": "repeated_headline"},
    ]


def test_the_headline_repeated_as_the_first_line_goes() -> None:
    # trafilatura's output of an aeb page starts with the page title
    title = "Google Stadia, Microsoft xCloud, Apple Arcade: So Many Ways to Play…and Pay"
    text = f"{title}\nThere are more devices, platforms and services to choose from than ever before. Here's how."
    body, removed = clean_text(text, title)
    assert body.startswith("There are more devices")
    assert [r.rule for r in removed] == ["repeated_headline"]


def test_piece_of_the_title_far_into_the_body_stays() -> None:
    text = "A first paragraph that is long enough to start the article body for real.\nIraq-Syria Airstrikes"
    body, removed = clean_text(text, SEED_TITLE)
    assert removed == [] and body == text


def test_boilerplate_links_and_menus_from_real_page_dumps() -> None:
    # lines taken from the html2text and inscriptis dumps in aeb
    text = "\n".join(
        [
            "Skip to main content",
            "* Facebook",
            "* Twitter",
            "* Barron's (https://www.barrons.com)",
            "* Real estate",
            "Advertisement",
            "Gaming used to be so simple. We'd buy a game, sit down in front of a console or PC, grind our way to the end.",
            "Sign up for our daily newsletter",
            "Now we spend money over and over on virtual perks.",
            "News",
            "Business",
            "Opinion",
            "Sports",
            "Politics",
            "Copyright © 2019 Dow Jones & Company, Inc. All Rights Reserved",
        ]
    )
    body, removed = clean_text(text)
    assert body.split("\n") == [
        "Gaming used to be so simple. We'd buy a game, sit down in front of a console or PC, grind our way to the end.",
        "Now we spend money over and over on virtual perks.",
    ]
    assert {r.text: r.rule for r in removed} == {
        "Skip to main content": "boilerplate",
        "* Facebook": "boilerplate",
        "* Twitter": "boilerplate",
        "* Barron's (https://www.barrons.com)": "link",
        "* Real estate": "short_bullet",
        "Advertisement": "boilerplate",
        "Sign up for our daily newsletter": "boilerplate",
        "News": "navigation",
        "Business": "navigation",
        "Opinion": "navigation",
        "Sports": "navigation",
        "Politics": "navigation",
        "Copyright © 2019 Dow Jones & Company, Inc. All Rights Reserved": "boilerplate",
    }


def test_lists_inside_the_article_stay() -> None:
    # from the trafilatura extraction of an aeb recipe page: a list between paragraphs
    text = "\n".join(
        [
            "This homemade jam is easy to make and keeps for weeks in the fridge, if it lasts that long.",
            "- 6 tbsp fruit pectin powder",
            "- 1 tsp cinnamon",
            "Workout Supplement",
            "Drink during your workout",
            "Beachbody Performance Hydrate",
            "Post-Workout Supplement",
            "Nighttime Supplement",
            "Stir the fruit and the pectin together, then bring the pot to a full boil for one minute.",
        ]
    )
    assert clean_text(text) == (text, [])


def test_symbol_lines_go_and_repeated_lines_stay() -> None:
    # a line repeated in one article is as often a recipe's or a list's as a menu's: on aeb,
    # removing repeats cost clean versions 0.7 points of recall and gained nothing on dumps
    body, removed = clean_text("A sentence that says something.\n* * *\nA sentence that says something.")
    assert body == "A sentence that says something.\nA sentence that says something."
    assert [(r.line, r.rule) for r in removed] == [(2, "no_words")]


def test_headlines_lose_site_names_and_truncation_marks_only() -> None:
    assert clean_headline("ECB unlikely to end sterilisation of SMP purchases - traders", "Interactive Investor") == (
        "ECB unlikely to end sterilisation of SMP purchases - traders"
    )
    assert clean_headline("Europe reaches crunch point on banking union - Reuters", "Reuters") == (
        "Europe reaches crunch point on banking union"
    )
    assert clean_headline("Sbarro files for bankruptcy | Business Insider", None, "http://www.businessinsider.com/x") == (
        "Sbarro files for bankruptcy"
    )
    assert clean_headline("Apple releases iOS 7.1 with CarPlay, Siri  ...", "CNET") == "Apple releases iOS 7.1 with CarPlay, Siri"
    assert clean_headline("Fed holds rates - WSJ.com") == "Fed holds rates"
    assert clean_headline("Play…and Pay") == "Play…and Pay"
    assert clean_headline(None) is None


def test_frame_schema_and_rejects_records_with_nothing_left() -> None:
    frame = read([SEED_ARTICLE]).with_columns(title_raw=pl.lit(None, pl.String), text_raw=pl.lit("Advertisement\nShare"))
    out = clean(normalize(frame))
    assert dict(out.schema) == CLEANED
    assert out["status"][0] == "rejected"
    assert "nothing left after cleanup" in out["reason"][0]
    assert [r["rule"] for r in out["removed_lines"][0]] == ["boilerplate", "boilerplate"]



def test_each_row_gets_its_own_removed_lines_and_a_second_pass_keeps_the_rest() -> None:
    """`removed_lines` is gathered flat and nested by row: each row's list must be its own, in order."""
    texts = ["Advertisement\nA line of the article itself, which stays.\nShare", None, "Plain text", "Home\nMenu"]
    frame = pl.concat([read([SEED_ARTICLE])] * 4).with_columns(
        article_id=pl.Series(["a", "b", "c", "d"]), text_raw=pl.Series(texts)
    )
    first = clean(normalize(frame))
    expected = [
        [{"line": r.line, "text": r.text, "rule": r.rule} for r in clean_text(text, title)[1]]
        for text, title in first.select("text", "title").iter_rows()
    ]
    assert first["removed_lines"].to_list() == expected
    assert [len(removed) for removed in expected] == [2, 0, 0, 2]
    kept = first.with_columns(removed_lines=pl.when(pl.col("article_id") == "c").then(None).otherwise("removed_lines"))
    again = clean(kept, {"d": lambda piece: piece == "Menu"})
    assert again["removed_lines"].to_list() == [
        expected[0], [], None,
        [
            {"line": 1, "text": "Home", "rule": "outside_shared_body"},
            {"line": 2, "text": "Menu", "rule": "boilerplate"},
        ],
    ]

lines = st.one_of(
    st.sampled_from(["", "Advertisement", "* Home", "News", "Iraq-Syria Airstrikes", "* * *", "https://x.com/a"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80).map(lambda s: " ".join(s.split())),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=30), st.sampled_from([None, SEED_TITLE, "News"]))
def test_cleaning_a_cleaned_text_removes_nothing(body_lines: list[str], title: str | None) -> None:
    once, _ = clean_text("\n".join(body_lines), title)
    twice, removed = clean_text(once, title)
    assert removed == [] and twice == once


def titles_frame(rows: list[tuple[str, str, str | None]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(cleaned, groups) frames for (article_id, title, url) rows, each id its own group but
    those sharing a letter prefix: "a1", "a2" are copies."""
    cleaned = pl.DataFrame(
        {"article_id": [r[0] for r in rows], "title": [r[1] for r in rows], "url": [r[2] for r in rows]},
        schema={"article_id": pl.String, "title": pl.String, "url": pl.String},
    )
    groups = cleaned.select("article_id", duplicate_group=pl.col("article_id").str.slice(0, 1))
    return cleaned, groups


def test_decoration_is_learnt_from_copies_titles() -> None:
    # real titles from aeb and news-aggregator
    cleaned, groups = titles_frame(
        [
            ("a1", "US service members killed in Afghanistan helicopter crash", None),
            ("a2", "US service members killed in Afghanistan helicopter crash | Afghanistan News | Al Jazeera", None),
            ("b1", "Germany's dependence on Russian gas poses risks for Europe - Polish PM", None),
            ("b2", "Germany's dependence on Russian gas poses risks for Europe", None),
            ("b3", "Polish PM: Germany's dependence on Russian gas poses risks for Europe", None),
            ("c1", "Titanfall Review", None),
            ("d1", "Titanfall Review - Mechs and the City", "http://www.escapistmagazine.com/11098-Titanfall-Review-Mechs-and-the-City"),
            ("e1", "Esper accuses China of intimidating smaller Asian nations - Houston Chronicle", None),
            ("e2", "Esper accuses China of intimidating smaller Asian nations", None),
            ("f1", "New car sales plunge 10 percent in October - Houston Chronicle", None),
            ("f2", "New car sales plunge 10 percent in October", None),
        ]
    )
    decorations = headline_decorations(cleaned, groups)
    assert decorations.bare_titles == {
        "a2": "US service members killed in Afghanistan helicopter crash",
        "e1": "Esper accuses China of intimidating smaller Asian nations",
        "f1": "New car sales plunge 10 percent in October",
    }
    assert "houston chronicle" in decorations.pieces and "polish pm" not in decorations.pieces
    assert clean_headline("Sheriff says - Houston Chronicle", decorations=decorations.pieces) == "Sheriff says"


def test_a_few_title_case_words_ending_many_titles_are_decoration() -> None:
    cleaned, groups = titles_frame(
        [(f"{letter}1", f"Stock number {letter} looks cheap - Analyst Blog", None) for letter in "abc"]
        + [(f"{letter}1", f"Bond number {letter} rallies - traders", None) for letter in "def"]
    )
    pieces = headline_decorations(cleaned, groups).pieces
    assert pieces == {"analyst blog"}


def test_copies_teach_what_is_article_and_what_is_template() -> None:
    from dedupe.cluster import duplicate_groups
    from dedupe.config import Config
    from dedupe.minhash import duplicate_candidates
    from dedupe.verify import verify_duplicates
    from tests.conftest import SEEDS, cleaned_frame

    config = Config()
    cleaned = cleaned_frame(SEEDS / "aeb-sample.jsonl")
    candidates, sets = duplicate_candidates(cleaned, config)
    groups = duplicate_groups(cleaned, verify_duplicates(cleaned, candidates, sets, config), config)
    again = clean_with_copies(cleaned, groups, config)
    assert dict(again.schema) == CLEANED
    dump = again.filter(pl.col("article_id") == "14cc2a0ca59c-html-text").row(0, named=True)
    first_pass = cleaned.filter(pl.col("article_id") == "14cc2a0ca59c-html-text").row(0, named=True)
    assert any(r["rule"] == "outside_shared_body" for r in dump["removed_lines"])
    assert len(dump["body"]) < len(first_pass["body"])
    reference = again.filter(pl.col("article_id") == "14cc2a0ca59c-reference").row(0, named=True)
    assert len(reference["body"]) > 0.9 * len(reference["text"])


def test_cleaning_with_copies_in_batches_of_groups_gives_what_one_batch_gives() -> None:
    """`clean_by_groups` cleans a batch of whole groups at a time (to hold one batch's 3-gram
    counts): with batches of one group each, the rows and their order are those of one batch;
    a batch that cut a group in two would learn less from its copies."""
    from dedupe.clean import clean_by_groups, shared_in_groups
    from dedupe.cluster import duplicate_groups
    from dedupe.config import Config
    from dedupe.minhash import duplicate_candidates
    from dedupe.verify import verify_duplicates
    from tests.conftest import SEEDS, cleaned_frame

    config = Config()
    cleaned = cleaned_frame(SEEDS / "aeb-sample.jsonl")
    candidates, sets = duplicate_candidates(cleaned, config)
    groups = duplicate_groups(cleaned, verify_duplicates(cleaned, candidates, sets, config), config)
    sizes = groups["duplicate_group"].value_counts()["count"]
    assert (sizes >= config.consensus_min_copies).sum() >= 3  # several groups whose copies teach something
    decorations = headline_decorations(cleaned, groups)
    shuffled = cleaned.sample(fraction=1.0, shuffle=True, seed=7)  # a group's rows apart from each other
    whole = clean(shuffled, shared_in_groups(shuffled, groups, config), decorations)
    assert clean_by_groups(shuffled, groups, config, decorations, batch_bytes=1).equals(whole)
    assert clean_by_groups(shuffled, groups, config, decorations).equals(whole)
    assert not clean(shuffled, {}, decorations).equals(whole)  # the copies changed some rows


# Lone surrogates never reach cleaning: no polars string holds one, and the reader makes them U+FFFD.
frame_text = st.characters(exclude_categories=("Cs",))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(frame_text, max_size=120), st.text(frame_text, max_size=600)), max_size=6))
def test_cleaning_any_unicode_never_raises_and_keeps_every_row(records: list[tuple[str, str]]) -> None:
    frame = read([SEED_ARTICLE]).clear(len(records)).with_columns(
        article_id=pl.Series([str(i) for i in range(len(records))], dtype=pl.String),
        source_file=pl.lit("any.jsonl"),
        line=pl.int_range(1, len(records) + 1, dtype=pl.Int64),
        title_raw=pl.Series([title for title, _ in records], dtype=pl.String),
        text_raw=pl.Series([text for _, text in records], dtype=pl.String),
        status=pl.lit("ok"),
    )
    out = clean(normalize(frame))
    assert out.height == len(records)
    kept = out.filter(pl.col("status") == "ok")
    assert kept.filter(pl.col("headline").is_null() & pl.col("body").is_null()).height == 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_the_shortcuts_of_the_line_rules_agree_with_the_regexes(line: str) -> None:
    """`fold` of ASCII text, word counts, the sentence-end test and the URL pre-check give what
    the plain regexes give."""
    from dedupe.clean import _WORD, SENTENCE_END, _ends_sentence, _may_be_link, _word_count, fold

    assert fold(line) == " ".join(_WORD.findall(line.casefold()))
    assert _word_count(fold(line)) == len(fold(line).split())
    assert _ends_sentence(line) == bool(SENTENCE_END.search(line))
    assert _may_be_link(line) or not link_rule(line)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(max_codepoint=127), max_size=120))
def test_ascii_shortcuts_agree_with_the_regexes(line: str) -> None:
    from dedupe.clean import _WORD, _may_be_link, fold

    assert fold(line) == " ".join(_WORD.findall(line.casefold()))
    assert _may_be_link(line) or not link_rule(line)


def link_rule(line: str) -> bool:
    """The link rule as the regexes say it, before `_may_be_link` and `subn` came in front."""
    from dedupe.clean import BULLET, NAVIGATION_MAX_WORDS, URL, _word_count, fold

    return bool(URL.search(line)) and _word_count(fold(URL.sub(" ", BULLET.sub("", line)))) <= NAVIGATION_MAX_WORDS


LINK_PIECES = st.sampled_from(
    ["http://a.b/c", "https://x.io", "WWW.", "www.y", "HTTP://", "(", ")", "( /", "/x", "#", "(#top)", "(/a b)", "word",
     "Word9", "é", "é1", "x-y", "a.b", "_", "*", "1.", "•", "-", ">", "’", ":", "//"]
)

LINK_SEPARATORS = st.sampled_from(["", " ", "  ", "\t", " * ", "\x1f", "\u00a0", "\u2003"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(LINK_PIECES, LINK_SEPARATORS), max_size=24))
@example([("word", " ")] * 2 + [("(", " "), ("/x", " "), (")", " ")] + [("word", " ")] * 2)  # at the bound
@example([("* ", ""), ("[Help](https://support.microsoft.com/kb/2999557/)", " "), ("word", " ")])
def test_the_link_rule_holds_only_where_its_pre_check_lets_it(pieces: list[tuple[str, str]]) -> None:
    """Lines dense in URL marks, bullets and plain words: `_may_be_link` never rules out a link,
    and URL finds a match after the bullet is cut exactly where it finds one in the line."""
    from dedupe.clean import BULLET, URL, _line_rule, _may_be_link, fold

    line = "".join(piece + separator for piece, separator in pieces)
    assert _may_be_link(line) or not link_rule(line)
    assert bool(URL.subn(" ", BULLET.sub("", line))[1]) == bool(URL.search(line))
    rule = _line_rule(line, fold(line), "", False)
    assert (rule == "link") == (link_rule(line) and rule not in {"no_words", "boilerplate"})


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("aZ _-'.9é" + "’‘“”—–…«»•·─©®€£°"), max_size=60))
def test_fold_of_ascii_with_common_punctuation_agrees_with_the_regex(line: str) -> None:
    """The separators `fold` turns into spaces split words as the regex does, with and without
    other non-ASCII beside them."""
    from dedupe.clean import _WORD, NON_ASCII_SEPARATORS, fold

    assert not any(_WORD.search(mark.casefold()) for mark in NON_ASCII_SEPARATORS)
    assert fold(line) == " ".join(_WORD.findall(line.casefold()))
