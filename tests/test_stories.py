from __future__ import annotations

import polars as pl

from dedupe.cluster import duplicate_groups, story_ids
from dedupe.config import Config
from dedupe.minhash import duplicate_candidates, story_candidates
from dedupe.schema import STORIES
from dedupe.stories import build_stories, central_headline, group_headlines
from dedupe.verify import verify_duplicates, verify_stories
from dedupe.write import assemble_articles
from tests.conftest import SEEDS, cleaned_frame


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
