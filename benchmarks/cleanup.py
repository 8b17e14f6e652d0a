"""Cleanup quality on the dev data, with the aeb benchmark's own metric (token 4-gram P/R/F1).

Prints, per extractor, raw and cleaned F1/precision/recall of the aeb versions; the score of our
HTML input path next to trafilatura's on the same pages, in the same run; the headline agreement
rate on aeb; and the headline checks on news-aggregator.

    python benchmarks/cleanup.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from collections import defaultdict
from pathlib import Path

import polars as pl
from rapidfuzz import fuzz

from dedupe import pipeline
from dedupe.config import Config

DUMPS = ("html-text", "html2text", "inscriptis", "beautifulsoup")
ALREADY_CLEAN = ("trafilatura", "readability", "reference")


def load_evaluate(data: Path):
    spec = importlib.util.spec_from_file_location("aeb_evaluate", data / "aeb" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores(evaluate, pairs: list[tuple[str, str]]) -> dict[str, float]:
    return evaluate.metrics_from_tp_fp_fns([evaluate.string_shingle_matching(true, pred) for true, pred in pairs])


def text_input(data: Path, evaluate, config: Config) -> dict[str, float]:
    """Raw and cleaned scores per extractor; the reference bodies go through as a version too."""
    truth = {json.loads(line)["cluster"]: json.loads(line)["article_body"] for line in open(data / "aeb/truth.jsonl")}
    labels = pl.read_csv(data / "aeb/labels.csv", infer_schema=False)
    raw = pl.read_ndjson(data / "aeb/articles.jsonl").select("id", raw="text")
    result = pipeline.run([data / "aeb/articles.jsonl"], config)
    rows = (
        result.articles.select(id="article_id", cleaned="text")
        .join(labels, on="id")
        .join(raw, on="id")
        .with_columns(pl.col("raw", "cleaned").fill_null(""))
    )
    by_extractor: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for row in rows.iter_rows(named=True):
        by_extractor[row["extractor"]].append((truth[row["cluster"]], row["raw"], row["cleaned"]))
    print(f"\n## Text input: aeb versions, raw -> cleaned ({rows.height} records)\n")
    print(f"{'extractor':<18} {'n':>4}  {'raw F1':>7} {'P':>6} {'R':>6}  {'clean F1':>8} {'P':>6} {'R':>6}  {'dR':>6}")
    summary = {}
    groups = sorted(by_extractor.items()) + [("DUMPS (4 tools)", [t for e in DUMPS for t in by_extractor.get(e, [])])]
    for extractor, triples in groups:
        before = scores(evaluate, [(t, r) for t, r, _ in triples])
        after = scores(evaluate, [(t, c) for t, _, c in triples])
        summary[extractor] = after | {"recall_loss": before["recall"] - after["recall"]}
        print(
            f"{extractor:<18} {len(triples):>4}  {before['f1']:>7.3f} {before['precision']:>6.3f} {before['recall']:>6.3f}"
            f"  {after['f1']:>8.3f} {after['precision']:>6.3f} {after['recall']:>6.3f}  {after['recall'] - before['recall']:>+6.3f}"
        )
    return summary


def html_input(data: Path, evaluate, config: Config) -> None:
    """Our HTML path against trafilatura's own extraction of the same pages."""
    import trafilatura

    truth = {json.loads(line)["page"]: json.loads(line)["article_body"] for line in open(data / "aeb/truth.jsonl")}
    pages = sorted((data / "aeb/html").glob("*.html"))
    result = pipeline.run(pages, config)
    ours = dict(result.articles.select(pl.col("source_file").map_elements(lambda p: Path(p).stem, return_dtype=pl.String), "text").iter_rows())
    baseline = {page.stem: trafilatura.extract(page.read_bytes()) or "" for page in pages}
    print(f"\n## HTML input: {len(pages)} aeb pages\n")
    for name, texts in (("trafilatura.extract", baseline), ("dedupe", ours)):
        s = scores(evaluate, [(truth[page], texts.get(page) or "") for page in truth if page in texts])
        print(f"{name:<20} F1 {s['f1']:.3f}  precision {s['precision']:.3f}  recall {s['recall']:.3f}")


SEPARATOR = re.compile(r"\s+(?:[|\-–—·:»«]{1,2}|::)\s+")


def decoration_only(a: str, b: str) -> bool:
    """`a` and `b` differ only by a piece glued on with a separator (a site name, a section)."""
    short, long = sorted((a.casefold().strip(), b.casefold().strip()), key=len)
    if short == long or not short:
        return False
    if long.startswith(short):
        return bool(SEPARATOR.match(long[len(short) :]))
    if long.endswith(short):
        return bool(SEPARATOR.search(long[: -len(short)] + " "))
    return False


def headline_agreement(data: Path, config: Config) -> None:
    labels = pl.read_csv(data / "aeb/labels.csv", infer_schema=False)
    result = pipeline.run([data / "aeb/articles.jsonl"], config)
    rows = result.articles.select(id="article_id", raw="title_raw", clean="headline").join(labels, on="id")
    rows = rows.filter(pl.col("raw").is_not_null())
    considered = agreed = 0
    for (_cluster,), page in rows.group_by("cluster"):
        raws = page["raw"].unique().to_list()
        if len(raws) < 2 or not all(decoration_only(a, b) or a == b for a in raws for b in raws):
            continue
        considered += 1
        cleaned = page["clean"].fill_null("").unique().to_list()
        agreed += all(fuzz.ratio(a.casefold(), b.casefold()) >= 95 for a in cleaned for b in cleaned)
    print(f"\n## Headlines on aeb\n\npages whose titles differ only by decoration: {considered}; cleaned headlines agree on "
          f"{agreed} ({agreed / max(considered, 1):.1%})")


def news_aggregator_headlines(data: Path, config: Config) -> None:
    result = pipeline.run([data / "news-aggregator/headlines.csv"], config)
    rows = result.articles.select("title_raw", "headline", "source")
    suffix = rows.filter(
        pl.struct("headline", "source").map_elements(
            lambda r: any(
                fuzz.ratio(part.casefold(), (r["source"] or "").casefold()) >= 85 for part in SEPARATOR.split(r["headline"] or "")[-1:]
            )
            and len(SEPARATOR.split(r["headline"] or "")) > 1,
            return_dtype=pl.Boolean,
        )
    )
    truncated = rows.filter(pl.col("headline").str.contains(r"(\.\.\.|…)\s*$"))
    changed = rows.filter(pl.col("headline") != pl.col("title_raw"))
    print(f"\n## Headlines on news-aggregator ({rows.height})\n")
    print(f"changed by cleanup: {changed.height}; still with a ' - Source' suffix: {suffix.height}; "
          f"still with a truncation mark: {truncated.height}")
    print("what cleanup removed (most common endings):")
    removed = changed.select(
        removed=pl.struct("title_raw", "headline").map_elements(
            lambda r: r["title_raw"].replace(r["headline"], "", 1).strip(), return_dtype=pl.String
        )
    )
    for text, count in removed["removed"].value_counts(sort=True).head(15).iter_rows():
        print(f"  {count:>4}  {text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    config = Config()
    evaluate = load_evaluate(args.data)
    text_input(args.data, evaluate, config)
    html_input(args.data, evaluate, config)
    headline_agreement(args.data, config)
    news_aggregator_headlines(args.data, config)


if __name__ == "__main__":
    main()
