from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupe import pipeline
from dedupe.config import Config

words = st.sampled_from(["council", "budget", "approved", "the", "école", "東京", "\u200b", "&amp;", "\x00", "-", "\n"])
any_text = st.one_of(st.text(st.characters(exclude_categories=()), max_size=300), st.lists(words, max_size=80).map(" ".join))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({"title": any_text, "text": any_text}), min_size=1, max_size=12), st.data())
def test_any_unicode_goes_through_matching_and_every_record_comes_out(
    tmp_path: Path, records: list[dict[str, str]], data: st.DataObject
) -> None:
    copies = data.draw(st.lists(st.sampled_from(records), max_size=4))  # some exact duplicates to match
    lines = [json.dumps(record) for record in records + copies]
    path = tmp_path / "any.jsonl"
    path.write_text("\n".join(lines))
    result = pipeline.run([path], Config())
    assert result.articles.height == len(lines)
    assert set(result.articles["status"]) <= {"kept", "duplicate", "rejected"}
