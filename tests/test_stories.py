from __future__ import annotations

import random

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupe import pipeline, stories
from dedupe.cluster import duplicate_groups, semantic_story_ids, story_ids
from dedupe.config import Config
from dedupe.evaluate import evaluate, read_labels
from dedupe.minhash import duplicate_candidates, story_candidates
from dedupe.schema import STORIES
from dedupe.stories import build_stories, central_headline, group_headlines, slug_words, story_text
from dedupe.verify import semantic_story_pairs, verify_duplicates, verify_stories
from dedupe.write import assemble_articles
from tests.conftest import SEEDS, cleaned_frame

GOLDEN = SEEDS.parent / "tests" / "golden"


def test_central_headline_is_the_most_typical_not_the_first() -> None:
    headlines = [
        "Metro-North worker killed",
        "Metro-North worker struck and killed by train in Manhattan",
        "Metro-North worker struck and killed by train",
        "Metro-North worker struck and killed by train",
        "Metro-North employee struck by train",
    ]
    assert central_headline(headlines) == "Metro-North worker struck and killed by train"
    assert central_headline([]) is None


def test_stories_of_the_headline_sample() -> None:
    config = Config()
    frame = cleaned_frame(SEEDS / "headlines-sample.csv")
    candidates, sets = duplicate_candidates(frame, config)
    groups = duplicate_groups(frame, verify_duplicates(frame, candidates, sets, config), config)
    headlines = group_headlines(frame, groups)
    pairs_candidates, keywords = story_candidates(headlines, config)
    groups = story_ids(frame, groups, verify_stories(headlines, pairs_candidates, keywords, config), config)
    articles = assemble_articles(frame, groups)
    stories = build_stories(articles)
    assert dict(stories.schema) == STORIES
    assert stories["n_articles"].sum() == articles.height
    assert stories["n_articles"].to_list() == sorted(stories["n_articles"].to_list(), reverse=True)
    top = stories.row(0, named=True)
    assert top["n_articles"] >= 20
    assert top["headline"] in articles.filter(pl.col("story_id") == top["story_id"])["headline"].to_list()
    assert top["representative_id"] in top["article_ids"]
    assert top["first_seen"] <= top["last_seen"]
    assert len(top["sources"]) > 10


def test_slug_words_are_the_story_the_url_spells() -> None:
    url = "http://www.washingtonpost.com/blogs/compost/wp/2014/03/10/dont-ban-bossy-sheryl-sandberg-tell-us/"
    assert slug_words(url) == ["dont", "ban", "bossy", "sheryl", "sandberg", "tell", "us"]
    assert slug_words("http://blog.pennlive.com/business/2014/03/mens_warehouse_finalizes_deal.html") == [
        "mens", "warehouse", "finalizes", "deal"
    ]
    assert slug_words("http://www.hellomagazine.com/celebrities-news-in-pics/10-03-2014/61370/") == [
        "celebrities", "news", "in", "pics"
    ]
    assert slug_words("https://example.com/article/540157") == [] == slug_words(None) == slug_words("http://[bad")
    assert story_text("Maybe ban these instead?", url) == "Maybe ban these instead? dont ban bossy sheryl sandberg tell us"
    assert story_text(None, url) is None
    assert story_text("Headline", None) == "Headline"


def test_semantic_model_finds_the_sample_stories_the_keywords_split() -> None:
    labels = read_labels(GOLDEN / "headlines-sample-labels.csv")

    def ari(model: str) -> float:
        articles = pipeline.run([SEEDS / "headlines-sample.csv"], Config(story_model=model)).articles
        return evaluate(articles.select(id="article_id", cluster="story_id"), labels).ari

    semantic = ari("minilm")
    assert semantic > 0.95
    assert semantic > ari("keywords") + 0.1


def test_semantic_stories_do_not_depend_on_the_input_order() -> None:
    config = Config(story_model="minilm")
    frame = cleaned_frame(SEEDS / "headlines-sample.csv")

    def story_groups(cleaned: pl.DataFrame) -> pl.DataFrame:
        candidates, sets = duplicate_candidates(cleaned, config)
        groups = duplicate_groups(cleaned, verify_duplicates(cleaned, candidates, sets, config), config)
        headlines = group_headlines(cleaned, groups)
        story_candidates_, keywords = story_candidates(headlines, config)
        scored, _ = semantic_story_pairs(headlines, story_candidates_, keywords)
        return semantic_story_ids(cleaned, groups, scored, config).sort("article_id")

    expected = story_groups(frame)
    assert expected["story_id"].n_unique() == 4
    assert story_groups(frame.sample(fraction=1.0, shuffle=True, seed=3)).equals(expected)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 8))
def test_central_headlines_from_kept_totals_are_those_of_a_single_run(seed: int, cap: int) -> None:
    """Totals updated from the last run's (`known`) are the very floats, and give the very
    central headlines, of totals computed whole: stories that gain, lose and re-count
    headlines, with new ones pushing others out of the candidates (a small cap), under ids
    that moved (the totals updated are then another story's)."""
    pool = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False)["title"].head(40).to_list()
    rng = random.Random(seed)
    first = [(f"s{story}", rng.choice(pool[story * 10 : story * 10 + 12])) for story in range(3) for _ in range(rng.randint(1, 15))]
    second = [row for row in first if rng.random() > 0.1] + [
        (f"s{rng.randrange(4)}", rng.choice(pool)) for _ in range(rng.randint(0, 3))
    ]
    renamed = {f"s{story}": f"s{rng.randrange(5)}" for story in range(4)}  # ids given again, as chunks name them
    second = [(renamed[story], headline) for story, headline in second]
    schema = {"story_id": pl.String, "headline": pl.String}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stories, "CENTRAL_HEADLINE_CANDIDATES", cap)
        before = stories.headline_totals(stories.central_candidates(pl.DataFrame(first, schema=schema, orient="row")))
        candidates = stories.central_candidates(pl.DataFrame(second, schema=schema, orient="row"))
        updated = stories.headline_totals(candidates, before.filter("exact").drop("exact"))
        whole = stories.headline_totals(candidates)
    assert updated.drop("exact").equals(whole.drop("exact"))  # bit for bit, in the same order
    assert stories.central_headlines(updated) == stories.central_headlines(whole)


def test_a_story_that_gains_an_article_scores_its_headline_only(monkeypatch: pytest.MonkeyPatch) -> None:
    headlines = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False)["title"].head(30).to_list()
    members = pl.DataFrame({"headline": headlines}).with_columns(story_id=pl.lit("s"))
    known = stories.headline_totals(stories.central_candidates(members)).drop("exact")
    scored = []
    similarities = stories._similarities
    monkeypatch.setattr(stories, "_similarities", lambda a, b: scored.append(len(a) * len(b)) or similarities(a, b))
    grown = stories.central_candidates(pl.concat([members, members.head(1)]))
    updated = stories.headline_totals(grown, known)
    assert scored == [len(set(headlines))]  # each kept candidate against the one recounted headline
    assert updated["exact"].all() and updated.drop("exact").equals(stories.headline_totals(grown).drop("exact"))


def test_a_renamed_story_starts_from_the_totals_of_the_story_sharing_most_headlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A story whose id changed (a chunk names stories against the history its run started
    from) is updated from the known story sharing most of its candidates, not scored whole;
    scores to a new candidate are read off its row, not scored twice."""
    headlines = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False)["title"].head(30).to_list()
    members = pl.DataFrame({"headline": headlines, "story_id": ["old"] * 25 + ["other"] * 5})
    known = stories.headline_totals(stories.central_candidates(members)).drop("exact")
    scored = []
    similarities = stories._similarities
    monkeypatch.setattr(stories, "_similarities", lambda a, b: scored.append((len(a), len(b))) or similarities(a, b))
    renamed = pl.DataFrame({"headline": headlines[:25] + headlines[:1] + headlines[29:], "story_id": "new"})
    updated = stories.headline_totals(stories.central_candidates(renamed), known)
    distinct = len(set(headlines[:25] + headlines[29:]))
    assert scored == [(1, distinct), (25, 1)]  # the new headline against all; the kept against the recounted one
    whole = stories.headline_totals(stories.central_candidates(renamed))
    assert updated["exact"].all() and updated.drop("exact").equals(whole.drop("exact"))
