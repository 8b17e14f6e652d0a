from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dedupe.clean import clean
from dedupe.normalize import normalize
from dedupe.read import read

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SEED_ARTICLE = SEEDS / "000_dc6af5a75e8b8c84.txt"


def cleaned_frame(*paths: Path) -> pl.DataFrame:
    return clean(normalize(read(paths)))


@pytest.fixture(scope="session")
def seed_cleaned() -> pl.DataFrame:
    return cleaned_frame(SEEDS)
