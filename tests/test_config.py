from __future__ import annotations

import pytest

from dedupe.config import Config


def test_overrides_are_checked() -> None:
    assert Config().with_overrides(story_model="minilm").story_model == "minilm"
    with pytest.raises(ValueError, match="unknown config fields: nope"):
        Config().with_overrides(nope=1)
    with pytest.raises(ValueError, match="expected one of keywords, minilm"):
        Config(story_model="bert")
    with pytest.raises(ValueError, match=r"expected a cosine in \(0, 1\]"):
        Config(story_semantic_similarity=0.0)


def test_settings_are_read_as_their_fields_types() -> None:
    config = Config().with_settings(["num_perm=256", "story_model=minilm", "story_semantic_similarity=0.2"])
    assert (config.num_perm, config.story_model, config.story_semantic_similarity) == (256, "minilm", 0.2)
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        Config().with_settings(["num_perms=3"])
    with pytest.raises(ValueError, match="'many' is not a valid int"):
        Config().with_settings(["num_perm=many"])
