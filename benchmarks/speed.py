"""Speed and scale: our MinHash next to its peers, the pipeline's docs/s per stage, the scaling
curve and peak memory, on a corpus built from real text (the dev data) at any size.

    python benchmarks/speed.py                        # smoke: signatures on 1,000 docs, pipeline on 2,000
    python benchmarks/speed.py signatures --docs 5000 # ours vs datasketch update/bulk and rensa
    python benchmarks/speed.py pipeline --docs 10000 [--flow]   # one run, docs/s per stage, peak memory
    python benchmarks/speed.py profile --docs 100000  # one run: seconds, peak memory and bytes/doc per stage
    python benchmarks/speed.py profile --docs 30000 --chunk 10000 --workers 1 [--flow]  # each step of a chunked run
    python benchmarks/speed.py profile --docs 90000 --chunk 30000 --workers 1 --cprofile "cluster stories"  # and its calls
                                                      # (several steps: "minhash stories,commit state")
    python benchmarks/speed.py profile --corpus C --chunk 100000 --state-from S  # one late chunk: C's records not in state S
    python benchmarks/speed.py profile --corpus C4 --chunk 100000 --state-to S   # ... after making S from C's first parts
    python benchmarks/speed.py profile --docs 90000 --chunk 30000 --workers 1 --configs partner_block_records=100000
                                                      # the same with other settings (the first of --configs)
    python benchmarks/speed.py scaling --sizes 10000 100000     # pipeline runs in fresh processes
    python benchmarks/speed.py scaling --sizes 10000 100000 --workers 1 --chunk 100000 --unchunked-at 100000 [--flow]
                                                      # runs on a state in chunks, read to write, beside unchunked
    python benchmarks/speed.py candidates --sizes 10000 30000   # LSH buckets by size, candidates per bucket cap
    python benchmarks/speed.py stories --docs 30000 --configs "" story_pair_support=0.3  # story steps vs the events
    python benchmarks/speed.py history --generation STATE/generations/N  # what loading a state takes, table by table
    python benchmarks/speed.py seeds [--rounds 3] [--against DIR] [--workers N]  # the CLI on seeds/: wall, Prefect's share
    python benchmarks/speed.py server [--rounds 3] [--against DIR]  # the CLI's embedded server alone: start, CPU, stop
    python benchmarks/speed.py scale --docs 10000 [--workers 2]  # Dask workers vs one process; Redis bytes per article
    python benchmarks/speed.py copies --docs 30000 [--workers 2] [--rounds 3]  # clean with copies on workers vs here
    python benchmarks/speed.py blocks --docs 90000 --chunk 30000 --sizes 10000 1000000 [--rounds 3]
                                                      # the last chunk's candidates verified in partner blocks of each size
    python benchmarks/speed.py sketches --docs 30000  # the candidates the sketches drop, against exact containment

The corpus: originals of ~3 KB written by a word-bigram chain trained on the aeb pages (real
words, real word pairs, new documents), about events of Zipf-distributed size (most covered once
or twice, a few by hundreds), each headlined by a walk of a word-bigram chain trained on the
news-aggregator headlines, reworded by each original about it and carrying the event's own names
(capitalized aeb words drawn once per event); and `--duplicates` of the
documents copies of an original with a few words changed, a site template around them and its
headline lightly decorated, so the true duplicate groups (and events) are known. Timings are
wall clock on a shared machine (noisy); ratios within one process are steadier. Peak memory is
the process's maximum resident set.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pickle
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from dedupe import clean, minhash, normalize, pipeline, read, shards, state, write
from dedupe.config import Config
from dedupe.evaluate import evaluate
from dedupe.schema import CLEANED, READ

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]
WORDS_PER_DOC = 450  # ~3 KB of English with punctuation
WORDS_PER_PARAGRAPH = 60
CORPUS_PART = 50_000
TEMPLATES = [
    "Advertisement",
    "Share this article",
    "Sign up for our newsletter to get the latest news",
    "Home\nNews\nWorld\nBusiness\nSport\nOpinion",
    "Read more:",
    "Copyright 2014 All rights reserved.",
    "We use cookies to improve your experience on our site.",
]


def labeled_headlines(data: Path = DATA) -> pl.DataFrame:
    """The news-aggregator headlines with their story labels (`cluster`), as strings."""
    headlines = pl.read_csv(data / "news-aggregator/headlines.csv", infer_schema=False)
    return headlines.join(pl.read_csv(data / "news-aggregator/labels.csv", infer_schema=False), on="id")


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


class TreeMemory:
    """The resident memory of this process and its children (worker processes), and the frames
    in flight between them (`shards.FrameFile`s: in shared memory, no process's), sampled every
    20 ms on a thread: ru_maxrss counts one process, and a run with workers is several. `peak`
    is the largest sum seen since the last `reset`."""

    def __init__(self, every: float = 0.02) -> None:
        self.peak = self.overall = 0
        self._every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.peak = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def stop_at_peak_gib(self) -> float:
        """Stop sampling; the run's peak in GiB: the largest sum seen, or this process's own
        peak (ru_maxrss) where it was higher between two samples."""
        self.stop()
        return max(peak_memory_gib(), self.overall / 2**30)

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            now = sum(_rss_bytes(pid) for pid in _process_tree(os.getpid())) + _frames_in_flight()
            self.peak, self.overall = max(self.peak, now), max(self.overall, now)


CHUNK_LINE = "chunk figures: "
"""Marks the line `ChunkWatcher` prints at each commit, which `in_fresh_process` passes on at
once: a run stopped half-way (memory, time) still leaves its finished chunks' figures."""


class ChunkWatcher:
    """Per-chunk figures of a run on a state, taken as each chunk's generation appears in
    STATE/generations (its commit's rename; the flow and `pipeline.run_on_state` alike): seconds
    since the last one (or the start), the peak resident memory of the process tree meanwhile
    (`memory`, reset at each commit), the resident memory just after the commit, and the rows
    stored in the parts of the state tables that grow with the history (a keyed table's parts
    hold its replaced and deleted rows too, as loading reads them)."""

    TABLES = ("band_keys", "story_band_keys", "story_candidates", "pairs")

    def __init__(self, state: Path, memory: TreeMemory, every: float = 0.1) -> None:
        self.chunks: list[dict[str, float]] = []
        self._generations, self._memory, self._every = state / "generations", memory, every
        self._seen: set[str] = set()
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        self._thread.join()
        return self.chunks

    def _watch(self) -> None:
        while not self._stop.wait(self._every):
            try:
                names = sorted(name for name in os.listdir(self._generations) if name.isdigit())
            except OSError:
                continue
            for name in names:
                if name not in self._seen:
                    self._seen.add(name)
                    self._record(self._generations / name)

    def _record(self, generation: Path) -> None:
        now = time.perf_counter()
        after = sum(_rss_bytes(pid) for pid in _process_tree(os.getpid()))
        chunk = {"s": now - self._started, "peak_gib": self._memory.peak / 2**30, "after_commit_gib": after / 2**30}
        self._memory.reset()
        self._started = now
        for table in self.TABLES:
            folder = generation / table
            parts = [generation / "pairs.parquet"] if table == "pairs" else sorted(folder.glob("*.parquet"))
            chunk[table] = sum(pl.scan_parquet(part).select(pl.len()).collect().item() for part in parts)
        self.chunks.append(chunk)
        print(f"{CHUNK_LINE}chunk {len(self.chunks)} committed: {chunk['s']:.1f} s, peak {chunk['peak_gib']:.2f} GiB, "
              f"after the commit {chunk['after_commit_gib']:.2f} GiB; rows "
              + ", ".join(f"{table} {int(chunk[table]):,}" for table in self.TABLES), file=sys.stderr, flush=True)


def _frames_in_flight() -> int:
    """Bytes of the frame files in shared memory (`shards.FramesFolder`) now."""
    total = 0
    for path in shards.SHARED_MEMORY.glob(f"{shards.FramesFolder.PREFIX}*/*.arrow"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # read and removed meanwhile
            pass
    return total


def _process_tree(pid: int) -> list[int]:
    pids, found = [pid], 0
    while found < len(pids):
        try:
            children = Path(f"/proc/{pids[found]}/task/{pids[found]}/children").read_text().split()
        except OSError:
            children = []
        pids.extend(int(child) for child in children)
        found += 1
    return pids


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError):
        return 0


# --- corpus -----------------------------------------------------------------------------------


Chain = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""A word-bigram chain: (vocabulary, successor start per word, successor count per word, successors)."""
HEADLINE_START, HEADLINE_END = "\x02", "\x03"
"""Words that open and close every headline of the headline chain, so walks begin and end as headlines do."""
HEADLINE_WORDS = (5, 16)
"""A generated headline's words at least (shorter walks are walked again) and at most; the
news-aggregator headlines have 9.3 words on average."""
EVENT_SIZE_EXPONENT, EVENT_SHARE_MAX = 2.0, 0.005
"""Originals per event: Zipf with exponent 2 (most events are covered once or twice, a few by
hundreds: the heavy tail of news coverage), cut at 0.5% of the originals (a day's biggest
story; ~20 events reach it at any size), so a corpus has ~one event per 5 originals and a
bigger day has more events, not bigger ones only."""
NAMES_PER_EVENT, NAME_SHARE = 2, 0.75
"""Each event draws this many names once (from `name_pool`), and each original about it carries
each name with this probability, in place of a word of its headline: coverage of one event shares
its names ("Noyer", "Titanfall", "MH370"), which chain walks over a shared vocabulary lack. Without
them, the walks' headlines were ~3.4x as alike across events as news-aggregator's are
(`speed.py candidates`), and stories chained the events together at 100k (benchmarks/README.md,
2026-12-02)."""
NAME_PATTERN = r"^[A-Z][a-z]{3,}$"
"""A name of the pool: a capitalized word of at least four letters in the aeb pages (5,856 words)."""
DECORATIONS = ("{}", "{} - {source}", "{} | {source}", "UPDATE 1-{}", "{} (VIDEO)")
"""How a copy dresses its original's headline (a syndicated article keeps its title)."""


def bigram_chain(words: pl.Series, distinct: bool = False) -> Chain:
    """Every consecutive word pair of `words`, so a walk writes real word pairs in new orders;
    `distinct`: each pair once, so a walk takes a word's successors alike, rare or common."""
    codes, vocabulary = _codes(words)
    pairs = np.stack([codes[:-1], codes[1:]])
    if distinct:
        pairs = np.unique(pairs, axis=1)
    order = np.argsort(pairs[0], kind="stable")
    successors = pairs[1][order]
    counts = np.bincount(pairs[0], minlength=len(vocabulary))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return vocabulary, starts, counts, successors


def body_chain(data: Path) -> Chain:
    """The chain of the aeb pages' words, for bodies."""
    texts = pl.read_ndjson(data / "aeb/articles.jsonl")["text"].drop_nulls()
    words = texts.str.replace_all(r"\s+", " ").str.split(" ").explode().drop_nulls()
    return bigram_chain(words.filter(words.str.len_chars() > 0))


def headline_chain(data: Path) -> Chain:
    """The chain of the news-aggregator headlines' words, each headline between a start and an
    end word (a cut headline's "  ..." dropped), for new headlines in the style of real ones.
    Its pairs are distinct (a walk takes a word's successors alike): walked by frequency, the
    2,821 headlines lead walks down their own few paths, and unrelated originals share their
    keywords far more often than real headlines do (`python benchmarks/speed.py candidates`
    prints the rates of this corpus and of news-aggregator)."""
    titles = pl.read_csv(data / "news-aggregator/headlines.csv", infer_schema=False)["title"].drop_nulls()
    titles = titles.str.replace(r"\s*\.\.\.$", "").str.replace_all(r"\s+", " ").str.strip_chars()
    words = (HEADLINE_START + " " + titles + " " + HEADLINE_END).str.split(" ").explode()
    return bigram_chain(words.filter(words.str.len_chars() > 0), distinct=True)


def name_pool(data: Path) -> np.ndarray:
    """The capitalized words of the aeb pages (`NAME_PATTERN`), sorted: what events are named from."""
    texts = pl.read_ndjson(data / "aeb/articles.jsonl")["text"].drop_nulls()
    words = texts.str.replace_all(r"\s+", " ").str.split(" ").explode().drop_nulls()
    return words.filter(words.str.contains(NAME_PATTERN)).unique().sort().to_numpy()


def _codes(words: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    frame = pl.DataFrame({"word": words})
    vocabulary = frame.unique("word", maintain_order=True).with_row_index("code")
    codes = frame.join(vocabulary, on="word", how="left", maintain_order="left")["code"].to_numpy().astype(np.int64)
    return codes, vocabulary["word"].to_numpy()


def build_corpus(folder: Path, docs: int, duplicates: float, seed: int, data: Path = DATA) -> Path:
    """Write `docs` articles as Parquet parts in `folder`, their true duplicate groups to
    labels.parquet.truth and their events (stories) to stories.parquet.truth; a folder already
    built with the same arguments is used as it is (1M documents take ~7 minutes)."""
    titles = "headline chain, events, names"
    made = {"docs": docs, "duplicates": duplicates, "seed": seed, "data": str(data), "titles": titles}
    marker = folder / "corpus.json"
    if marker.exists() and json.loads(marker.read_text()) == made:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chains = body_chain(data), headline_chain(data), name_pool(data)
    originals = max(1, round(docs * (1 - duplicates)))
    copy_of = np.concatenate([np.arange(originals), rng.integers(0, originals, docs - originals)])
    event_of = _events(originals, rng)
    labels, stories = [], []
    for part, start in enumerate(range(0, docs, CORPUS_PART)):
        rows = np.arange(start, min(start + CORPUS_PART, docs))
        frame = _corpus_part(rows, copy_of[rows], event_of[copy_of[rows]], chains, seed)
        frame.write_parquet(folder / f"part-{part:04}.parquet")
        labels.append(frame.select("id", cluster=pl.Series([f"o{c}" for c in copy_of[rows]])))
        stories.append(frame.select("id", cluster=pl.Series([f"e{e}" for e in event_of[copy_of[rows]]])))
    pl.concat(labels).write_parquet(folder / "labels.parquet.truth")
    pl.concat(stories).write_parquet(folder / "stories.parquet.truth")
    marker.write_text(json.dumps(made))
    return folder


def _events(originals: int, rng: np.random.Generator) -> np.ndarray:
    """The event of each original: event sizes drawn from `EVENT_SIZE_EXPONENT`, members spread
    over the day in random order."""
    sizes = np.minimum(rng.zipf(EVENT_SIZE_EXPONENT, originals), max(1, round(originals * EVENT_SHARE_MAX)))
    events = int(np.searchsorted(np.cumsum(sizes), originals)) + 1
    return rng.permutation(np.repeat(np.arange(events), sizes[:events])[:originals])


def _corpus_part(rows: np.ndarray, copy_of: np.ndarray, event_of: np.ndarray,
                 chains: tuple[Chain, Chain, np.ndarray], seed: int) -> pl.DataFrame:
    (vocabulary, starts, counts, successors), headlines, names = chains
    words = np.empty((len(rows), WORDS_PER_DOC), dtype=np.int64)
    original_rng = [np.random.default_rng([seed, int(original)]) for original in copy_of]  # a copy rewrites its original
    words[:, 0] = [r.integers(len(vocabulary)) for r in original_rng]
    draws = np.array([r.random(WORDS_PER_DOC) for r in original_rng])
    for position in range(1, WORDS_PER_DOC):
        previous = words[:, position - 1]
        count = np.maximum(counts[previous], 1)
        pick = starts[previous] + (draws[:, position] * count).astype(np.int64)
        words[:, position] = np.where(counts[previous] > 0, successors[np.minimum(pick, len(successors) - 1)], previous)
    rng = np.random.default_rng([seed, int(rows[0]), 1])
    is_copy = rows != copy_of
    edits = rng.integers(0, WORDS_PER_DOC, (len(rows), 5))
    for column in range(edits.shape[1]):  # copies: five words changed
        words[is_copy, edits[is_copy, column]] = rng.integers(0, len(vocabulary), is_copy.sum())
    separator = np.where((np.arange(WORDS_PER_DOC) + 1) % WORDS_PER_PARAGRAPH == 0, "\n\n", " ")
    flat = pl.DataFrame(
        {
            "doc": np.repeat(np.arange(len(rows)), WORDS_PER_DOC),
            "piece": pl.Series(vocabulary[words.ravel()]) + pl.Series(np.tile(separator, len(rows))),
        }
    )
    bodies = flat.group_by("doc", maintain_order=True).agg(pl.col("piece").str.join(""))["piece"]
    before = np.where(is_copy, rng.integers(0, len(TEMPLATES), len(rows)), -1)
    after = np.where(is_copy, rng.integers(0, len(TEMPLATES), len(rows)), -1)
    template = np.array(["", *TEMPLATES], dtype=object)
    text = pl.Series(template[before + 1]) + "\n" + bodies + "\n" + pl.Series(template[after + 1])
    sources = [f"site{r % 97}" for r in rows]
    writer = _HeadlineWriter(headlines, names, seed)
    titles = [writer.title(int(row), int(original), int(event), source)
              for row, original, event, source in zip(rows, copy_of, event_of, sources)]
    ids = [f"d{row:07}" for row in rows]
    return pl.DataFrame({"id": ids, "title": titles, "text": text.str.strip_chars(), "source": sources})


class _HeadlineWriter:
    """New headlines from the headline chain: each event has one, walked from the start word;
    each original about it keeps a random head of it (a third to two thirds) and walks on from
    there, as coverage of one event rewords it (keeping at least half of it made most
    pairs of one event story candidates, far more than in news-aggregator's stories), and carries
    the event's names (`NAMES_PER_EVENT`, `NAME_SHARE`) in place of some of its words; a copy
    keeps its original's headline and decorates it (`DECORATIONS`). Every headline is a function
    of the seed and its event, original or row, so a part is written the same whatever other
    parts hold."""

    def __init__(self, chain: Chain, names: np.ndarray, seed: int) -> None:
        vocabulary, starts, counts, successors = chain
        self.words, self.names, self.seed = vocabulary, names, seed
        self.starts, self.counts, self.successors = starts.tolist(), counts.tolist(), successors.tolist()
        self.start = int(np.flatnonzero(vocabulary == HEADLINE_START)[0])
        self.end = int(np.flatnonzero(vocabulary == HEADLINE_END)[0])
        self.events: dict[int, tuple[list[int], list[str]]] = {}
        self.originals: dict[int, str] = {}

    def title(self, row: int, original: int, event: int, source: str) -> str:
        if original not in self.originals:
            head, names = self._event(event)
            rng = np.random.default_rng([self.seed, original, 2])
            kept = head[: rng.integers(max(1, len(head) // 3), 2 * len(head) // 3 + 1)]
            words = self.words[self._walk(kept, rng)].tolist()
            carried = [name for name in names if rng.random() < NAME_SHARE]
            for name, position in zip(carried, rng.choice(len(words), min(len(carried), len(words)), replace=False)):
                words[position] = name
            self.originals[original] = " ".join(words)
        if row == original:
            return self.originals[original]
        rng = np.random.default_rng([self.seed, row, 4])
        return DECORATIONS[rng.integers(len(DECORATIONS))].format(self.originals[original], source=source)

    def _event(self, event: int) -> tuple[list[int], list[str]]:
        """The event's headline walk and its names."""
        if event not in self.events:
            rng = np.random.default_rng([self.seed, event, 3])
            walk: list[int] = []
            while len(walk) < HEADLINE_WORDS[0]:
                walk = self._walk([], rng)
            self.events[event] = walk, self.names[rng.choice(len(self.names), NAMES_PER_EVENT, replace=False)].tolist()
        return self.events[event]

    def _walk(self, head: list[int], rng: np.random.Generator) -> list[int]:
        """`head` and the chain's words after it, up to the end word or `HEADLINE_WORDS`[1] words."""
        walk, draws = list(head), rng.random(HEADLINE_WORDS[1]).tolist()
        while len(walk) < HEADLINE_WORDS[1]:
            previous = walk[-1] if walk else self.start
            word = self.successors[self.starts[previous] + int(draws[len(walk)] * self.counts[previous])]
            if word == self.end:
                break
            walk.append(word)
        return walk


# --- signatures against the peers ---------------------------------------------------------------


def compare_signatures(texts: pl.Series, config: Config, peer_docs: int) -> None:
    """Signatures of the same documents with the same word 3-grams: datasketch per shingle
    (`update`), datasketch `bulk`, rensa (its fastest bulk call), and ours from the raw text."""
    ids = [str(i) for i in range(len(texts))]
    timed = _timer()
    word_lists = timed("polars tokens (shared by the peers)", lambda: minhash.tokens(texts).to_list())
    shingle_sets = timed("Python shingles for the peers", lambda: [minhash.shingles(None, 3, w or []) for w in word_lists])
    shingling = timed.last

    def ours() -> np.ndarray:
        sets, _ = minhash.ShingleSets.from_texts(ids, texts, config.shingle_words)
        return minhash.signatures(sets, config)

    timed("ours, first call (numba compiles, or loads its cache)", lambda: minhash.signatures(
        minhash.ShingleSets.from_texts(ids[:10], texts.head(10), config.shingle_words)[0], config))
    minhash.THREADS = 1
    timed("ours on one thread", ours)
    one_thread = len(texts) / timed.last
    minhash.THREADS = 2
    signatures = timed("ours: text -> signatures", ours)
    ours_rate = len(texts) / timed.last
    sample = shingle_sets[:peer_docs]
    peers: dict[str, float] = {}
    peers["datasketch MinHash.update per shingle"] = _rate(sample, lambda: _datasketch_update(sample, config))
    peers["datasketch MinHash.bulk"] = _rate(sample, lambda: _datasketch_bulk(sample, config))
    rensa_rate = _rensa_rate(shingle_sets, config)
    if rensa_rate:
        peers["rensa RMinHash.update per document"] = _rate(sample, lambda: _rensa_update(sample, config))
        peers["rensa RMinHash.digest_matrix_from_token_byte_sets"] = rensa_rate
    check = _datasketch_reference(shingle_sets[0], config)
    print(f"\nsignatures of {len(texts)} documents ({np.mean([len(s) for s in shingle_sets]):.0f} shingles each), "
          f"num_perm={config.num_perm}; ours bit-identical to datasketch: {np.array_equal(signatures[0], check)}")
    print(f"{'method':<52}{'docs/s':>10}{'ours / it':>12}{'ours / it+shingling':>22}")
    print(f"{'ours (compiled shingle hashes and permutations)':<52}{ours_rate:>10,.0f}")
    print(f"{'ours on one thread':<52}{one_thread:>10,.0f}{ours_rate / one_thread:>11.1f}x")
    for name, rate in peers.items():
        with_shingling = 1 / (1 / rate + shingling / len(texts))
        print(f"{name:<52}{rate:>10,.0f}{ours_rate / rate:>11.1f}x{ours_rate / with_shingling:>21.1f}x")
    print("(peers start from ready shingle sets; 'ours / it+shingling' also charges them the Python shingling)")


def _datasketch_update(sets: list[set[bytes]], config: Config) -> None:
    from datasketch import MinHash

    for shingle_set in sets:
        signature = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=minhash.minhash_input)
        for shingle in shingle_set:
            signature.update(shingle)


def _datasketch_bulk(sets: list[set[bytes]], config: Config) -> None:
    from datasketch import MinHash

    MinHash.bulk(sets, num_perm=config.num_perm, seed=config.seed, hashfunc=minhash.minhash_input)


def _datasketch_reference(shingle_set: set[bytes], config: Config) -> np.ndarray:
    from datasketch import MinHash

    signature = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=minhash.minhash_input)
    signature.update_batch(shingle_set)
    return signature.hashvalues


def _rensa_rate(sets: list[set[bytes]], config: Config) -> float | None:
    try:
        from rensa import RMinHash
    except ImportError:
        print("rensa: skipped (pip install -e '.[bench]')")
        return None
    lists = [list(s) for s in sets]
    return _rate(lists, lambda: RMinHash.digest_matrix_from_token_byte_sets(lists, config.num_perm, config.seed))


def _rensa_update(sets: list[set[bytes]], config: Config) -> None:
    from rensa import RMinHash

    for shingle_set in sets:
        signature = RMinHash(num_perm=config.num_perm, seed=config.seed)
        signature.update([shingle.decode() for shingle in shingle_set])
        signature.digest()


def _rate(items: list, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return len(items) / (time.perf_counter() - started)


class _timer:
    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, name: str, work: Callable[[], object]) -> object:
        started = time.perf_counter()
        result = work()
        self.last = time.perf_counter() - started
        print(f"  {name}: {self.last:.2f} s")
        return result


# --- the pipeline -------------------------------------------------------------------------------


def run_pipeline(corpus: Path, flow: bool, workers: int = 0, chunk: int | None = None) -> dict[str, object]:
    """One run over the corpus (Prefect flow with writing, or the plain pipeline) with the
    per-record stages on `workers` processes (`Config.workers`), as JSON-able figures. Peak
    memory is that of the process tree (the workers included). With `chunk` (`Config.chunk_records`,
    0: all at once) and no flow, the run is `pipeline.run_on_state` on a new state, with writing:
    the flow's sequence without Prefect. The flow and the state runs are timed read to write."""
    parts = sorted(corpus.glob("part-*.parquet"))
    docs = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in parts)
    config = Config(workers=workers) if chunk is None else Config(workers=workers, chunk_records=chunk)
    memory = TreeMemory()
    started = time.perf_counter()
    articles, chunks = None, []
    if flow or chunk is not None:
        with tempfile.TemporaryDirectory(dir=corpus.parent) as out:
            watcher = ChunkWatcher(Path(out) / "state", memory)  # the flow's state is OUT/state too
            if flow:
                summary = _flow_run(parts, out, config)
            else:
                summary = pipeline.run_on_state(parts, Path(out), Path(out) / "state", config)[0].summary
            wall = time.perf_counter() - started
            time.sleep(0.2)  # one more look: a one-chunk run commits just before publishing
            chunks = watcher.stop()
            peak = memory.stop_at_peak_gib()  # the run's, not the reading's below
            published = list(write.read_outputs(Path(out)))
            output_digest = _digest(*published)
            articles = published[0]
            del published
    else:
        result = pipeline.run(parts, config)
        summary, articles = result.summary, result.articles
        wall = time.perf_counter() - started
        peak = memory.stop_at_peak_gib()
        output_digest = _digest(articles, result.stories, result.pairs)
    figures: dict[str, object] = {"docs": docs, "wall_s": wall, "peak_gib": peak}
    figures["stages"] = summary.timings
    figures["candidates_per_doc"] = summary.candidates.get("duplicate", 0) / docs
    figures["output_digest"] = output_digest
    figures["chunks"] = chunks
    if articles is not None:
        truth = pl.read_parquet(corpus / "labels.parquet.truth")
        scores = evaluate(articles.select(id="article_id", cluster="duplicate_group"), truth)
        figures["duplicates_ari"], figures["duplicates_b3_f1"] = scores.ari, scores.bcubed_f1
        if (corpus / "stories.parquet.truth").exists():
            events = pl.read_parquet(corpus / "stories.parquet.truth")
            scores = evaluate(articles.select(id="article_id", cluster="story_id"), events)
            figures["stories_ari"], figures["stories_b3_f1"] = scores.ari, scores.bcubed_f1
            figures["largest_story"] = articles["story_id"].value_counts(sort=True)["count"][0] / docs
            figures["largest_event"] = events["cluster"].value_counts(sort=True)["count"][0] / docs
    return figures


def _flow_run(parts: list[Path], out: str, config: Config) -> object:
    """The Prefect flow, as `python -m dedupe run` starts it (`_as_the_cli_starts_prefect`)."""
    from dedupe import __main__ as cli

    embedded = _as_the_cli_starts_prefect()
    summary, _ = cli._run_flow(parts, Path(out), config, None, True, embedded)
    return summary


def _as_the_cli_starts_prefect() -> object:
    """Prefect as `python -m dedupe run` starts it, in a home of its own unless PREFECT_HOME is
    set: its defaults, and its embedded server on a copy of a migrated template database, started
    before Prefect is imported (stopped at exit), for `dedupe.__main__._run_flow` or
    `_embedded_api`. Before 2 December the benchmark's flows ran on Prefect's own ephemeral
    server, which migrates its database, registers block types and starts its event services at
    each start: 23.5 s of a 30k flow's 109 s at load 5-9 (`speed.py profile --flow`)."""
    from dedupe import __main__ as cli

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
    cli._prefect_defaults(embedded=True)
    return cli._start_embedded_server()


def _digest(*frames: pl.DataFrame) -> str:
    """A fingerprint of whole frames (every column, in row order): equal runs give equal ones."""
    return "-".join(f"{frame.height}:{frame.hash_rows(seed=0).sum()}" for frame in frames)


def show_pipeline(figures: dict[str, object]) -> None:
    docs = figures["docs"]
    print(f"\n{docs:,} docs: {figures['wall_s']:.1f} s wall, {docs / figures['wall_s']:,.0f} docs/s, "
          f"peak memory {figures['peak_gib']:.2f} GiB"
          + (f", duplicate groups vs truth ARI {figures['duplicates_ari']:.3f} B3 F1 {figures['duplicates_b3_f1']:.3f}"
             if "duplicates_ari" in figures else ""))
    if "stories_ari" in figures:
        print(f"  stories vs the corpus's events: ARI {figures['stories_ari']:.3f} "
              f"B3 F1 {figures['stories_b3_f1']:.3f}; the largest story holds {figures['largest_story']:.1%} "
              f"of the articles, the largest event {figures['largest_event']:.1%}")
    for stage, seconds in figures["stages"].items():
        print(f"  {stage:<22}{seconds:>8.2f} s{docs / max(seconds, 1e-9):>14,.0f} docs/s")
    print(f"  output digest (articles, stories, pairs): {figures['output_digest']}")
    show_chunks(figures.get("chunks", []))


def show_chunks(chunks: list[dict[str, float]]) -> None:
    """The per-chunk figures of `ChunkWatcher`, a line per chunk."""
    if not chunks:
        return
    print(f"{'':>10}{'chunk':>6}{'s':>8}{'peak GiB':>10}{'after commit GiB':>18}"
          + "".join(f"{table:>18}" for table in ChunkWatcher.TABLES))
    for number, chunk in enumerate(chunks, 1):
        print(f"{'':>10}{number:>6}{chunk['s']:>8.1f}{chunk['peak_gib']:>10.2f}{chunk['after_commit_gib']:>18.2f}"
              + "".join(f"{int(chunk[table]):>18,}" for table in ChunkWatcher.TABLES), flush=True)


def profile(
    corpus: Path, workers: int, chunk: int | None = None, flow: bool = False, step: str | None = None, settings: str = "",
    state_from: Path | None = None, state_to: Path | None = None,
) -> None:
    """One plain run, stage by stage: seconds (wall, and CPU of this process: all its threads, not
    the worker processes'; steadier than wall seconds on a shared machine), the peak resident
    memory of the process tree during the stage and after it, the frames still referenced after
    it, and the bytes per document of what the stage returns (the big frames column by column):
    where a run's time and bytes go. With `chunk`, a run on a new state in chunks of that many
    records (`pipeline.run_on_state`), each step of each chunk, and the digest of the published
    outputs (as `pipeline` prints it: run this script with PYTHONPATH at another checkout to
    compare its code's); with `flow` too, each step a Prefect task as the flow runs it
    (`flows.pipeline.as_task`, in a flow of this script's), with the seconds the task's machinery
    added to the step. Then where the time outside the steps went: before the first step (with a
    flow: importing Prefect, its server's start, the flow run's), and between and after them (the
    pipeline's own glue; with a flow, its end), the profile's own measuring taken out. With
    `step` (names separated by commas), those steps run under cProfile and the top of their calls
    by cumulative time is printed each time one runs (each chunk). `settings`: FIELD=VALUE,... of the run's `Config`. Each step's
    line is also printed as it ends, so that a run stopped half-way leaves its figures. With `chunk`, the run can start from
    a copy of the state in `state_from` (its records are then seen already: one late chunk of a big run, profiled
    alone) and leave a copy of its state in `state_to`."""
    parts = sorted(corpus.glob("part-*.parquet"))
    docs = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in parts)
    memory = TreeMemory()
    rows: list[tuple[str, float, float, int, int, int, dict[str, int]]] = []
    starts: list[float] = []
    measuring = 0.0
    digest = ""

    def recorded(name: str, function: Callable[..., object], *args: object) -> object:
        nonlocal measuring
        memory.reset()
        started, cpu = time.perf_counter(), time.process_time()
        starts.append(started)
        if step and name in step.split(","):
            profiler = cProfile.Profile()
            result = profiler.runcall(function, *args)
            print(f"{name}, its calls by cumulative time:", flush=True)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        else:
            result = function(*args)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        time.sleep(0.05)  # one more sample of what the stage left
        rows.append((name, seconds, cpu, memory.peak, _rss_bytes(os.getpid()), _live_frame_bytes(), _bytes_of(result)))
        # as it ends, too: a long run stopped half-way still leaves its steps' figures
        print(f"step {name}: {seconds:.2f} s, cpu {cpu:.2f} s, peak {memory.peak / 2**30:.2f} GiB", flush=True)
        measuring += time.perf_counter() - started - seconds
        return result

    own: list[float] = []  # with a flow: each step's own seconds, inside its task
    started = time.perf_counter()
    base = Config(workers=workers).with_settings(settings.split(",") if settings else [])
    if chunk is None:
        pipeline.run(parts, base, call=recorded)
    else:
        config = base.with_overrides(chunk_records=chunk)
        with tempfile.TemporaryDirectory(dir=corpus.parent) as out:
            if state_from is not None:
                shutil.copytree(state_from, Path(out) / "state", symlinks=True)
                started = time.perf_counter()
            if flow:
                _profiled_flow(parts, Path(out), config, recorded, own)
            else:
                pipeline.run_on_state(parts, Path(out), Path(out) / "state", config, call=recorded, log=print)
            wall = time.perf_counter() - started
            if state_to is not None:
                shutil.copytree(Path(out) / "state", state_to, symlinks=True)
            digest = _digest(*write.read_outputs(Path(out)))
    if chunk is None:
        wall = time.perf_counter() - started
    memory.stop()
    print(f"{docs:,} docs, workers={workers}: {wall:.1f} s wall, peak memory {memory.overall / 2**30:.2f} GiB (process tree)")
    print(f"{'stage':<22}{'s':>8}{'cpu s':>8}{'docs/s':>10}{'peak GiB':>10}{'after GiB':>10}{'live GiB':>10}{'out B/doc':>11}"
          + (f"{'task s':>8}" if own else "") + "  biggest columns of the output (B/doc)")
    for number, (name, seconds, cpu, peak, after, live, sizes) in enumerate(rows):
        total = sum(sizes.values())
        biggest = sorted(sizes.items(), key=lambda item: -item[1])[:6]
        print(f"{name:<22}{seconds:>8.2f}{cpu:>8.2f}{docs / max(seconds, 1e-9):>10,.0f}{peak / 2**30:>10.2f}{after / 2**30:>10.2f}"
              f"{live / 2**30:>10.2f}{total / docs:>11,.0f}" + (f"{seconds - own[number]:>8.2f}" if own else "") + "  "
              + ", ".join(f"{column} {size / docs:,.0f}" for column, size in biggest if size >= docs))
    print("cpu s: this process's CPU seconds in the step, every thread (not the workers'); "
          "live GiB: the frames and series still referenced after the step (found by the garbage collector; buffers "
          "two frames share count twice): what 'after GiB' holds beyond it, the allocators keep")
    steps = sum(seconds for _, seconds, *_ in rows)
    before = starts[0] - started if starts else 0.0
    print(f"the steps {steps:.1f} s" + (f" (their tasks' machinery {steps - sum(own):.1f} s)" if own else "")
          + f"; outside them {wall - steps - measuring:.1f} s: before the first {before:.1f} s, between and after them "
          f"{wall - steps - measuring - before:.1f} s (the profile's own measuring, {measuring:.1f} s, taken out)")
    if digest:
        print(f"output digest (articles, stories, pairs): {digest}")


def _profiled_flow(parts: list[Path], out: Path, config: Config, recorded: pipeline.Call, own: list[float]) -> None:
    """`pipeline.run_on_state` in a Prefect flow with each step a task, as `flows.pipeline.dedupe_flow`
    runs it, each task timed and measured by `recorded`, and each step's own seconds (inside its
    task) appended to `own`."""
    from dedupe import __main__ as cli

    embedded = _as_the_cli_starts_prefect()
    from prefect import flow

    from flows.pipeline import as_task

    @flow(name="dedupe-profile")
    def profiled() -> None:
        def call(name: str, function: Callable[..., object], *args: object) -> object:
            def timed(*inner: object) -> object:
                started = time.perf_counter()
                try:
                    return function(*inner)
                finally:
                    own.append(time.perf_counter() - started)

            return recorded(name, as_task, name, timed, *args)

        pipeline.run_on_state(parts, out, out / "state", config, call=call, log=print)

    with cli._embedded_api(embedded):  # type: ignore[arg-type]
        profiled()


def copies_on_workers(corpus: Path, workers: int, rounds: int) -> None:
    """Clean with copies as both pipelines run it (`shards.clean_by_groups`: the records cut by
    duplicate group, the decoration learnt once) on the corpus's records and groups, in this
    process and on `workers` worker processes (the plan `shards.on_cores` makes), alternating;
    the first call on the workers starts them, so it is shown apart and the rest give the best of
    `rounds`. The groups and the cleaned records are those of a plain run (`pipeline.run`), whose
    stage's arguments are kept; an update on a new state cleans the same records with the same groups."""
    parts = sorted(corpus.glob("part-*.parquet"))
    kept: dict[str, tuple[object, ...]] = {}

    def keeping(name: str, function: Callable[..., object], *args: object) -> object:
        kept.setdefault(name, args)
        return function(*args)

    pipeline.run(parts, Config(workers=1), call=keeping)
    cleaned, groups, config = kept["clean with copies"]
    assert isinstance(cleaned, pl.DataFrame) and isinstance(groups, pl.DataFrame) and isinstance(config, Config)
    decorations = clean.headline_decorations(cleaned, groups.select("article_id", "duplicate_group"))
    plans = {"1 process": shards.IN_PROCESS,
             f"{workers} workers": shards.plan_of(shards.on_cores(pipeline.direct, Config(workers=workers)))}
    seconds: dict[str, list[float]] = {name: [] for name in plans}
    outputs: dict[str, pl.DataFrame] = {}
    for _ in range(rounds + 1):
        for name, plan in plans.items():
            started = time.perf_counter()
            outputs[name] = shards.clean_by_groups(plan, cleaned, groups, config, decorations)
            seconds[name].append(time.perf_counter() - started)
    docs = cleaned.height
    print(f"clean with copies, {docs:,} records, {groups['duplicate_group'].n_unique():,} duplicate groups:")
    for name, times in seconds.items():
        best = min(times[1:])
        print(f"  {name:<12} best of {rounds} {best:6.2f} s {docs / best:>9,.0f} docs/s; the first {times[0]:6.2f} s")
    one, many = (min(times[1:]) for times in seconds.values())
    same = outputs["1 process"].equals(outputs[f"{workers} workers"])
    print(f"  {workers} workers: {one / many:.2f}x the one process; the same output: {same}")
    sent: list[int] = []

    def weighing(name: str, function: Callable[..., object], arguments: Iterable[tuple[object, ...]]) -> list[object]:
        given = list(arguments)
        sent.extend(len(pickle.dumps(args)) for args in given)
        return shards.in_process(name, function, given)

    shards.clean_by_groups(replace(plans[f"{workers} workers"], map=weighing), cleaned, groups, config, decorations)
    print(f"  the pieces for the workers, pickled: {sum(sent) / 1e6:,.1f} MB in {len(sent)} pieces")


def partner_blocks(corpus: Path, chunk: int, sizes: list[int], rounds: int) -> None:
    """The last `chunk` records' duplicate candidates verified against the history of the records
    before them (`state.verify_candidates`) with `partner_block_records` at each of `sizes`,
    alternating, in this process: CPU and wall seconds (best of `rounds`), the peak resident
    memory during the step, and whether the pairs are those of the first size. The history is
    committed once, by `pipeline.run_on_state` in chunks of `chunk`; the new records are read,
    normalized, cleaned and matched as `pipeline._update` does."""
    records = pl.concat([pl.read_parquet(part) for part in sorted(corpus.glob("part-*.parquet"))])
    config = Config(chunk_records=chunk)
    memory = TreeMemory()
    with tempfile.TemporaryDirectory(dir=corpus.parent) as folder:
        work = Path(folder)
        records.head(records.height - chunk).write_parquet(work / "history.parquet")
        records.tail(chunk).write_parquet(work / "batch.parquet")
        del records
        pipeline.run_on_state([work / "history.parquet"], work / "out", work / "state", config)
        history = state.load(work / "state", config)
        found = state.changed_files([work / "batch.parquet"], history).found
        fresh = state.new_records(read.read_found(found, config), history.records)
        normalized = normalize.normalize(fresh.select(list(READ))).with_columns(text_raw=pl.lit(None, pl.String))
        matched = state.new_candidates(state.with_keys(clean.clean(normalized), fresh), history, config)
        del fresh, normalized
        print(f"{history.records.height:,} history records, {chunk:,} new: {matched.candidates.height:,} candidates")
        figures: dict[int, list[tuple[float, float, int]]] = {size: [] for size in sizes}
        pairs: dict[int, pl.DataFrame] = {}
        for _ in range(rounds):
            for size in sizes:
                shards.release_free_memory()
                memory.reset()
                started, cpu = time.perf_counter(), time.process_time()
                pairs[size] = state.verify_candidates(matched, replace(history), config.with_overrides(partner_block_records=size))
                figures[size].append((time.process_time() - cpu, time.perf_counter() - started, memory.peak))
    memory.stop()
    partners = history.records.join(pl.concat([matched.candidates["article_id_a"], matched.candidates["article_id_b"]])
                                    .unique().to_frame("article_id"), on="article_id", how="semi").height
    print(f"{partners:,} history partners; {pairs[sizes[0]].height:,} pairs confirmed")
    for size, runs in figures.items():
        cpu, wall, peak = min(run[0] for run in runs), min(run[1] for run in runs), max(run[2] for run in runs)
        print(f"  blocks of {size:>9,}: {-(-partners // size):>3} blocks, CPU {cpu:6.2f} s, wall {wall:6.2f} s (best of "
              f"{rounds}), peak {peak / 2**30:.2f} GiB; the same pairs: {pairs[size].equals(pairs[sizes[0]])}")


def _live_frame_bytes() -> int:
    """Bytes of every polars frame and series this process still references (an upper bound:
    buffers shared between frames count once per frame)."""
    gc.collect()
    return sum(item.estimated_size() for item in gc.get_objects() if isinstance(item, (pl.DataFrame, pl.Series)))


def _bytes_of(result: object, prefix: str = "") -> dict[str, int]:
    """column (or array) -> bytes, for the frames and shingle sets in a stage's result."""
    if isinstance(result, pl.DataFrame):
        return {prefix + name: result[name].estimated_size() for name in result.columns}
    if isinstance(result, minhash.ShingleSets):
        return {prefix + "shingle hashes": result.hashes.nbytes + result.offsets.nbytes}
    if isinstance(result, tuple):
        return {k: v for i, part in enumerate(result) for k, v in _bytes_of(part, f"{prefix}{i}.").items()}
    return {}


def in_fresh_process(corpus: Path, flow: bool, workers: int, chunk: int | None = None) -> dict[str, object]:
    """The pipeline in its own process, so that its peak memory is its own."""
    command = [sys.executable, __file__, "pipeline", "--corpus", str(corpus), "--workers", str(workers), "--json"] + (["--flow"] if flow else [])
    command += ["--chunk", str(chunk)] if chunk is not None else []
    last_lines: deque[str] = deque(maxlen=40)
    with tempfile.TemporaryFile(mode="w+") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for line in process.stderr:  # type: ignore[union-attr]
            last_lines.append(line)
            if line.startswith(CHUNK_LINE):
                print(f"{'':>10}{line.removeprefix(CHUNK_LINE).rstrip()}", flush=True)
        if process.wait():
            print("".join(last_lines), file=sys.stderr)
            raise subprocess.CalledProcessError(process.returncode, command)
        output.seek(0)
        return json.loads(output.read().strip().splitlines()[-1])


def scaling(
    sizes: list[int], duplicates: float, workdir: Path, flow: bool, workers: int, chunk: int | None = None,
    unchunked_at: list[int] | None = None,
) -> None:
    """Each size in fresh processes: with `workers` worker processes, then (when that is more
    than one) in one process, the peer, right after it on the same corpus. With `chunk` the runs
    go through the state in chunks of that many records (`Config.chunk_records`), read to write;
    at the sizes in `unchunked_at` the same run unchunked (chunk 0) follows, for the ratio."""
    print(f"{'docs':>10}{'workers':>8}{'chunk':>9}{'wall s':>10}{'docs/s':>10}{'peak GiB':>10}{'candidates/doc':>16}  slowest stages")
    previous: tuple[int, float, dict[str, float]] | None = None
    for size in sizes:
        corpus = build_corpus(workdir / f"corpus-{size}", size, duplicates, seed=size)
        load = os.getloadavg()[0]
        figures = in_fresh_process(corpus, flow, workers, chunk)
        peers = [(1, chunk, "the in-process peer")] if workers != 1 else []
        peers += [(workers, 0, "unchunked")] if chunk and size in (unchunked_at or []) else []
        for peer_workers, peer_chunk, what in peers:
            peer = in_fresh_process(corpus, flow, peer_workers, peer_chunk)
            print(f"{size:>10,}{peer_workers or 'all':>8}{_chunk_name(peer_chunk):>9}{peer['wall_s']:>10.1f}"
                  f"{size / peer['wall_s']:>10,.0f}{peer['peak_gib']:>10.2f}"
                  f"  ({what}; the run above takes {figures['wall_s'] / peer['wall_s']:.2f}x its time and "
                  f"{figures['peak_gib'] / peer['peak_gib']:.2f}x its peak memory; "
                  f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}; the same articles, stories and pairs: "
                  f"{peer.get('output_digest') == figures.get('output_digest')})", flush=True)
            print(f"{'':>18}docs/s per stage: "
                  + ", ".join(f"{name} {size / max(seconds, 1e-9):,.0f}" for name, seconds in peer["stages"].items()), flush=True)
        rate = size / figures["wall_s"]
        slowest = sorted(figures["stages"].items(), key=lambda item: -item[1])[:4]
        print(f"{size:>10,}{workers or 'all':>8}{_chunk_name(chunk):>9}{figures['wall_s']:>10.1f}{rate:>10,.0f}{figures['peak_gib']:>10.2f}"
              f"{figures.get('candidates_per_doc', float('nan')):>16.2f}  "
              + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in slowest)
              + f" (load average {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
        print(f"{'':>10}docs/s per stage: "
              + ", ".join(f"{name} {size / max(seconds, 1e-9):,.0f}" for name, seconds in figures["stages"].items()), flush=True)
        print(f"{'':>10}duplicates vs truth ARI {figures.get('duplicates_ari', float('nan')):.3f}, "
              f"stories vs events ARI {figures.get('stories_ari', float('nan')):.3f} (largest story "
              f"{figures.get('largest_story', float('nan')):.1%} of the articles, largest event "
              f"{figures.get('largest_event', float('nan')):.1%}); per chunk:")
        show_chunks(figures.get("chunks", []))
        if previous:  # time ~ docs^k: k = 1 is linear
            exponent = np.log(figures["wall_s"] / previous[1]) / np.log(size / previous[0])
            print(f"{'':>10}time grows as docs^{exponent:.2f} from {previous[0]:,} to {size:,} "
                  f"(per stage: {_stage_exponents(previous[2], figures['stages'], size / previous[0])})", flush=True)
        previous = (size, figures["wall_s"], figures["stages"])


def _chunk_name(chunk: int | None) -> str:
    """How a run's records were taken: 'run' (`pipeline.run`), 'all' (state, unchunked) or the size."""
    return "run" if chunk is None else "all" if chunk == 0 else f"{chunk:,}"


def _stage_exponents(before: dict[str, float], after: dict[str, float], growth: float) -> str:
    slow = [name for name, seconds in after.items() if seconds >= 1.0]
    return ", ".join(f"{name} {np.log(after[name] / max(before[name], 1e-3)) / np.log(growth):.2f}" for name in slow)


def history_size(generation: Path) -> None:
    """What a run (or a run's next chunk) loads from a state generation: seconds, resident
    memory, and each table's rows and bytes, largest first."""
    from dataclasses import fields

    from dedupe import state

    before = _rss_bytes(os.getpid())
    started = time.perf_counter()
    history = state.load_generation(generation.resolve(), Config())
    seconds, after = time.perf_counter() - started, _rss_bytes(os.getpid())
    tables = {f.name: getattr(history, f.name) for f in fields(history) if isinstance(getattr(history, f.name), pl.DataFrame)}
    total = sum(table.estimated_size() for table in tables.values())
    print(f"{generation}: {history.records.height:,} records, loaded in {seconds:.1f} s, {total / 2**30:.2f} GiB of frames, "
          f"resident {before / 2**30:.2f} -> {after / 2**30:.2f} GiB")
    for name, table in sorted(tables.items(), key=lambda item: -item[1].estimated_size())[:10]:
        print(f"  {name:<20}{table.height:>13,} rows{table.estimated_size() / 2**20:>9,.0f} MiB")


# --- where duplicate candidates come from -------------------------------------------------------


def candidate_buckets(corpus: Path, caps: list[int]) -> None:
    """The duplicate LSH buckets of a corpus by size, the pairs each size class makes, and the
    candidates per document (and the true pairs among them) at each bucket cap."""
    from dedupe import clean, normalize, read

    config = Config()
    cleaned = clean.clean(normalize.normalize(read.read(sorted(corpus.glob("part-*.parquet")), config)))
    sets = minhash.duplicate_shingles(cleaned, config)["text"]
    keys = minhash.band_keys(sets, config.duplicate_lsh_threshold, config)
    sizes = keys.group_by("band", "key").len()["len"].to_numpy()
    docs = len(sets)
    print(f"\n{docs:,} documents, {keys['band'].n_unique()} bands: LSH buckets by size (the pairs each would make without the cap, repeats counted)")
    for low, high in [(2, 2), (3, 5), (6, 20), (21, 50), (51, 200), (201, None)]:
        chosen = (sizes >= low) & (sizes <= (high or sizes.max()))
        pairs = int((sizes[chosen] * (sizes[chosen] - 1) // 2).sum())
        print(f"  {low}-{high or 'more'} articles: {int(chosen.sum()):>8,} buckets, {pairs / docs:>7.2f} pairs per document")
    hashes = pl.DataFrame({"hash": sets.hashes, "doc": np.repeat(np.arange(docs), sets.counts)}).unique()
    common = hashes.group_by("hash").len().filter(pl.col("len") > docs / 100).height
    print(f"  word 3-grams found in more than 1% of the documents: {common:,}")
    truth = dict(pl.read_parquet(corpus / "labels.parquet.truth").iter_rows())
    for cap in caps:
        pairs = minhash.bucket_pairs(keys, "text", config.with_overrides(lsh_max_bucket=cap))
        true = sum(truth[a] == truth[b] for a, b in pairs.select("article_id_a", "article_id_b").iter_rows())
        print(f"  lsh_max_bucket {cap}: {pairs.height / docs:.2f} candidates per document, {true:,} true pairs among them")


def sketch_filter(corpus: Path) -> None:
    """Every LSH "text" candidate of aeb (the dev data) and of a corpus, in one run each: what
    `minhash.plausible` keeps, against each pair's exact containment (`verify.overlap`): the
    pairs verification could confirm (containment >= `duplicate_unsure_containment`) that it
    dropped (it must drop none), and how often a pair's Jaccard lies above its bound at a miss
    of 1e-3 and 1e-6 (the binomial model of the equal signature values, checked on real pairs)."""
    from dedupe import verify

    config = Config()
    for name, paths in (("aeb", [DATA / "aeb" / "articles.jsonl"]), (corpus.name, sorted(corpus.glob("part-*.parquet")))):
        cleaned = clean.clean(normalize.normalize(read.read(paths, config)))
        keys, sets, sketched = minhash.duplicate_keys(cleaned, config)
        pairs = minhash.bucket_pairs(keys.filter(pl.col("level") == "text").drop("level"), "text", config)
        started = time.process_time()
        kept = minhash.plausible(pairs, cleaned["article_id"], sketched, config)
        cpu = time.process_time() - started
        scored = verify.overlap(pairs, sets).join(kept.with_columns(kept=pl.lit(True)), on=list(kept.columns), how="left")
        confirmable = scored.filter(pl.col("containment") >= config.duplicate_unsure_containment)
        row = {article_id: i for i, article_id in enumerate(cleaned["article_id"])}
        first, second = (np.array([row[i] for i in pairs[side]], dtype=np.int64) for side in ("article_id_a", "article_id_b"))
        equal = (sketched[first, 1:] == sketched[second, 1:]).sum(axis=1)
        jaccard = scored["jaccard"].to_numpy()
        beyond = {miss: float((jaccard > minhash.jaccard_bounds(config.num_perm, miss)[equal]).mean()) for miss in (1e-3, 1e-6)}
        print(f"{name}: {cleaned.height:,} records, {pairs.height:,} text candidates, {kept.height:,} kept "
              f"({kept.height / max(1, pairs.height):.1%}, {cpu:.2f} CPU s); containment >= "
              f"{config.duplicate_unsure_containment}: {confirmable.height:,}, dropped among them: "
              f"{confirmable.filter(pl.col('kept').is_null()).height}; Jaccard above its bound: "
              + ", ".join(f"{share:.1e} at a miss of {miss:g}" for miss, share in beyond.items()), flush=True)


def story_buckets(corpus: Path, caps: list[int]) -> None:
    """The story LSH buckets of a corpus by size, as story matching sees them when every
    duplicate group is found (one group per original, its headline as story text), and the
    story candidates per group (and those of one event among them) at each story bucket cap."""
    config = Config()
    parts = sorted(corpus.glob("part-*.parquet"))
    originals = pl.concat([pl.read_parquet(part, columns=["id", "title"]) for part in parts])
    groups = originals.join(pl.read_parquet(corpus / "labels.parquet.truth"), on="id").filter(
        pl.col("id").str.slice(1).cast(pl.Int64) == pl.col("cluster").str.slice(1).cast(pl.Int64)
    )
    sets = minhash.ShingleSets.from_sets(dict(zip(groups["id"], map(minhash.keywords, groups["title"]))))
    keys = minhash.band_keys(sets, config.story_lsh_threshold, config)
    sizes = keys.group_by("band", "key").len()["len"].to_numpy()
    print(f"\n{len(sets):,} duplicate groups, {keys['band'].n_unique()} story bands: buckets by size "
          "(the pairs each would make without the cap, repeats counted)")
    for low, high in [(2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 200), (201, None)]:
        chosen = (sizes >= low) & (sizes <= (high or sizes.max()))
        pairs = int((sizes[chosen] * (sizes[chosen] - 1) // 2).sum())
        print(f"  {low}-{high or 'more'} groups: {int(chosen.sum()):>8,} buckets, "
              f"{pairs / len(sets):>8.2f} pairs per group")
    event = dict(pl.read_parquet(corpus / "stories.parquet.truth").iter_rows())
    sample = groups.head(3_000)
    aggregator = labeled_headlines()
    for name, titles, events in [
        ("news-aggregator headlines (stories)", aggregator["title"].fill_null(""), aggregator["cluster"]),
        (f"{sample.height:,} originals of this corpus (events)", sample["title"], sample["id"].replace_strict(event)),
    ]:
        within, across = _candidate_rates(titles.to_list(), events.to_numpy(), config)
        print(f"  {name}: story candidates (no cap) in {within:.2f} of the pairs of one story, "
              f"{across:.5f} of the others")
    for cap in caps:
        pairs = minhash.bucket_pairs(keys, "story", config.with_overrides(story_lsh_max_bucket=cap))
        same = sum(event[a] == event[b] for a, b in pairs.select("article_id_a", "article_id_b").iter_rows())
        print(f"  story_lsh_max_bucket {cap}: {pairs.height / len(sets):.2f} candidates per group, "
              f"{same / max(pairs.height, 1):.0%} of them within one event")


def _candidate_rates(titles: list[str], events: np.ndarray, config: Config) -> tuple[float, float]:
    """The share of the title pairs of one event, and of different events, that are story
    candidates (keyword LSH at `story_lsh_threshold`, buckets uncapped)."""
    sets = minhash.ShingleSets.from_sets({str(i): minhash.keywords(title) for i, title in enumerate(titles)})
    uncapped = config.with_overrides(story_lsh_max_bucket=len(titles))
    pairs = minhash.candidates(sets, config.story_lsh_threshold, "story", uncapped)
    same = events[pairs["article_id_a"].cast(pl.Int64)] == events[pairs["article_id_b"].cast(pl.Int64)]
    sizes = np.unique(events, return_counts=True)[1]
    within = int((sizes * (sizes - 1) // 2).sum())
    return same.sum() / max(within, 1), (~same).sum() / (len(titles) * (len(titles) - 1) // 2 - within)


def story_steps(corpus: Path, configs: list[Config]) -> None:
    """Where the corpus's stories come from, step by step: one plain run (`pipeline.run`, with the
    first config), then the story steps again from its articles and story pairs with each config:
    single-link components of the story pairs, the story components (`cluster.story_components`:
    less unsupported pairs and weak bridges), and the attached stories (`cluster.attached_story_ids`).
    For each: ARI and B3 F1 against the events, the largest story's share, and the pairs of
    articles in one story (what each step added)."""
    from dedupe import cluster

    parts = sorted(corpus.glob("part-*.parquet"))
    started = time.perf_counter()
    result = pipeline.run(parts, configs[0])
    print(f"\n{result.articles.height:,} docs, one plain run in {time.perf_counter() - started:.1f} s")
    articles = result.articles.filter(pl.col("duplicate_group").is_not_null())
    events = pl.read_parquet(corpus / "stories.parquet.truth")
    canonical = articles["duplicate_group"].unique().sort()
    story_pairs = result.pairs.filter(pl.col("relation") == "same_story").select("article_id_a", "article_id_b")
    a, b = cluster.numbered_pairs(canonical, story_pairs)
    single = canonical.gather(cluster.smallest_of_components(len(canonical), a, b)).cast(pl.String)
    keywords = cluster.story_keywords(articles)
    groups = articles.select("article_id", "duplicate_group", "duplicate_of")
    largest_event = events["cluster"].value_counts(sort=True)["count"][0] / events.height
    print(f"  {len(canonical):,} duplicate groups, {story_pairs.height:,} story pairs; "
          f"the largest event holds {largest_event:.1%} of the articles")
    steps = {"duplicate groups": articles.select("article_id", story="duplicate_group"),
             "story pairs, single link": _group_story(articles, canonical, single)}
    for config in configs:
        changed = ", ".join(f"{f}={value}" for f, value in vars(config).items() if value != getattr(Config(), f))
        started = time.perf_counter()
        roots = cluster.story_components(canonical, story_pairs, config)
        seconds = time.perf_counter() - started
        label = changed or "defaults"
        steps[f"story components ({label}; {seconds:.2f} s)"] = _group_story(articles, canonical, roots["root"])
        attached = cluster.attached_story_ids(groups, roots, keywords, config)[0]
        steps[f"attached ({label})"] = attached.select("article_id", story="story_id")
    for name, frame in steps.items():
        scores = evaluate(frame.select(id="article_id", cluster="story"), events)
        sizes = frame.group_by("story").len()["len"].cast(pl.Int64)
        print(f"  {name:<60} ARI {scores.ari:.3f} B3 F1 {scores.bcubed_f1:.3f}, {sizes.len():>7,} stories, "
              f"largest {sizes.max() / frame.height:6.1%}, "
              f"article pairs in one story {int((sizes * (sizes - 1) // 2).sum()):>13,}")


def _group_story(articles: pl.DataFrame, canonical: pl.Series, root: pl.Series) -> pl.DataFrame:
    """article_id, story: each article in the story of its duplicate group's `root`."""
    roots = pl.DataFrame({"duplicate_group": canonical, "story": root})
    return articles.join(roots, on="duplicate_group").select("article_id", "story")


# --- `python -m dedupe run seeds/` ----------------------------------------------------------------


def seeds_run(rounds: int, against: Path | None = None, workers: int | None = None) -> None:
    """Wall time of `python -m dedupe run seeds/`: the first run on a fresh PREFECT_HOME (the
    embedded server's template database is made from the schema shipped in
    flows/prefect_schemas), a later run on the same PREFECT_HOME (a copy of the template),
    Prefect's own embedded server with its own defaults
    (database file in PREFECT_HOME migrated at each start, block registration, event services),
    and the same work without Prefect. Rounds interleaved, so that a busy neighbour slows all
    alike; medians. The server's start-up is also timed from the run's log: from the process
    start to Prefect's first line of the flow run. `against`: another checkout of the project (a
    git worktree of an older commit), whose CLI's first and later runs join the same rounds;
    `workers`: this checkout's CLI runs get `--workers N` (the other's keep its default). CPU:
    user + system seconds of the run's process tree (the CLI and its embedded server), median,
    steadier than the wall time on a shared machine."""
    from dedupe.__main__ import PREFECT_DEFAULTS

    def prefect_own(home: str) -> dict[str, str]:
        services = {name: "true" for name in PREFECT_DEFAULTS if name.startswith("PREFECT_SERVER_SERVICES_")}
        database = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db"}
        return {**services, **database, "PREFECT_API_BLOCKS_REGISTER_ON_START": "true"}

    plain = "from dedupe import pipeline, write; from dedupe.config import Config; from pathlib import Path; import sys;" \
            "r = pipeline.run(['seeds'], Config()); write.write_outputs(Path(sys.argv[1]), r.articles, r.stories, r.pairs, r.summary)"
    from flows.server import local_server

    names = ["CLI, first run on a fresh PREFECT_HOME", "CLI, a later run", "CLI, Prefect's own embedded server",
             "CLI, against a running prefect server", "no Prefect"]
    if against is not None:
        names[2:2] = [f"{names[0]} ({against.name})", f"{names[1]} ({against.name})"]
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
    to_flow: dict[str, list[float]] = {name: [] for name in names if name != "no Prefect"}
    with tempfile.TemporaryDirectory() as server_home, local_server(
        Path(server_home) / "server.log", env={**os.environ, "PREFECT_HOME": server_home}
    ) as api:
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as shared_home, tempfile.TemporaryDirectory() as against_home:
                for name in names:
                    other = against is not None and name.endswith(f"({against.name})")
                    checkout = against if other and against is not None else ROOT
                    with tempfile.TemporaryDirectory() as own_home, tempfile.TemporaryDirectory() as out:
                        # the first and the later run of one checkout share a PREFECT_HOME
                        home = (against_home if other else shared_home) if name.startswith(tuple(names[:2])) else own_home
                        options = ["--workers", str(workers)] if workers is not None and not other else []
                        _seeds_once(name, home, out, api, prefect_own, plain, times, cpu_seconds, to_flow, checkout, options)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:<54}{median:>6.1f} s  (runs: {', '.join(f'{t:.1f}' for t in times[name])})"
              + (f"; until the flow run begins {np.median(to_flow[name]):.1f} s" if name in to_flow else "")
              + f"; CPU {np.median(cpu_seconds[name]):.1f} s")
    plain_s = medians["no Prefect"]
    print("Prefect's share: " + ", ".join(f"{name.removeprefix('CLI, ')} {medians[name] - plain_s:.1f} s" for name in to_flow))


def _seeds_once(name: str, home: str, out: str, api: str, prefect_own: Callable[[str], dict[str, str]], plain: str,
                times: dict[str, list[float]], cpu_seconds: dict[str, list[float]], to_flow: dict[str, list[float]],
                checkout: Path, options: list[str]) -> None:
    """One run of `seeds_run` (the later run shares the first run's PREFECT_HOME), the CLI of `checkout`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": home}
    env["PYTHONPATH"] = str(checkout)
    env |= prefect_own(home) if "own" in name else {}
    env |= {"PREFECT_API_URL": api} if "running" in name else {}
    cli = [sys.executable, "-m", "dedupe", "run", "seeds", "--out", out, *options]
    command = [sys.executable, "-c", plain, out] if name == "no Prefect" else cli
    started, wall, cpu = time.time(), time.perf_counter(), _children_cpu()
    output = subprocess.run(command, check=True, cwd=checkout, env=env, capture_output=True, text=True)
    times[name].append(time.perf_counter() - wall)
    cpu_seconds[name].append(_children_cpu() - cpu)
    if name in to_flow:
        to_flow[name].append(_seconds_to_flow_run(output.stdout + output.stderr, started))


EMBEDDED_SERVER_ALONE = """
import os, sys, time
from pathlib import Path
from dedupe import __main__ as cli
cli._prefect_defaults(embedded=True)
started = time.perf_counter()
embedded = cli._start_embedded_server()
embedded.wait()
healthy = time.perf_counter() - started
fields = Path(f"/proc/{embedded.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
started = time.perf_counter()
embedded.stop()
print(healthy, cpu, time.perf_counter() - started)
"""


def embedded_server_alone(rounds: int, against: Path | None = None) -> None:
    """The embedded server that `python -m dedupe run` starts, alone (no flow run): seconds until
    it answers, its process's CPU seconds by then, and seconds to stop it, each checkout's in
    interleaved rounds (a fresh PREFECT_HOME each: the template made from the shipped schema);
    medians. Linux (/proc)."""
    checkouts = [ROOT] + ([against] if against is not None else [])
    figures: dict[Path, list[list[float]]] = {checkout: [] for checkout in checkouts}
    for _ in range(rounds):
        for checkout in checkouts:
            with tempfile.TemporaryDirectory() as home:
                env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
                env |= {"PREFECT_HOME": home, "PYTHONPATH": str(checkout)}
                output = subprocess.run([sys.executable, "-c", EMBEDDED_SERVER_ALONE], check=True, cwd=checkout,
                                        env=env, capture_output=True, text=True)
                figures[checkout].append([float(value) for value in output.stdout.split()])
    for checkout, runs in figures.items():
        healthy, cpu, stop = (np.median([run[i] for run in runs]) for i in range(3))
        print(f"{checkout.name:<20} answers after {healthy:.2f} s, {cpu:.2f} s of its CPU by then, stopped in {stop:.2f} s  "
              f"(runs: {', '.join(f'{run[0]:.1f}/{run[1]:.1f}/{run[2]:.2f}' for run in runs)}; load {os.getloadavg()[0]:.1f})")


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished and waited-for descendants: a CLI
    run's own process and the embedded server it waited for."""
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _seconds_to_flow_run(log: str, started: float) -> float:
    """From the process start to Prefect's 'Beginning flow run' line (its HH:MM:SS.mmm stamp)."""
    import datetime as dt
    import re

    stamp = re.search(r"^(\d\d:\d\d:\d\d\.\d+) .*Beginning flow run", log, re.MULTILINE)
    if not stamp:
        return float("nan")
    day = dt.datetime.fromtimestamp(started)
    began = dt.datetime.combine(day.date(), dt.time.fromisoformat(stamp.group(1)))
    return (began - day).total_seconds()


# --- beyond one process ----------------------------------------------------------------------------


def scale(docs: int, duplicates: float, workdir: Path, workers: int) -> None:
    """The sharded pipeline on `workers` Dask worker processes (a LocalCluster, one thread each)
    against the one-process run on the same corpus and state; then the Redis index's memory and
    commands per article, next to datasketch's own Redis storage holding the same articles."""
    import pickle
    import warnings

    from distributed import Client, LocalCluster

    from dedupe import shards, state

    # each shard is sent with its task, as Prefect's task runner sends it; Dask would rather load it itself
    warnings.filterwarnings("ignore", message="Sending large graph")

    corpus = _split_corpus(build_corpus(workdir / f"corpus-{docs}", docs, duplicates, seed=docs), 4 * workers)
    paths = sorted(corpus.glob("part-*.parquet"))
    config = Config(workers=1)  # the one-process peer; the sharded call runs on Dask
    with tempfile.TemporaryDirectory(prefix="dedupe-scale-") as scratch:
        work = Path(scratch)
        print(f"{docs:,} docs in {len(paths)} files; one process, then {workers} Dask workers "
              f"(load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        started = time.perf_counter()
        local, _ = pipeline.run_on_state(paths, work / "local" / "out", work / "local" / "state", config)
        local_s = time.perf_counter() - started
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
            plan = shards.Plan(map=_dask_map(client), shards=workers, partitions=workers)
            started = time.perf_counter()
            sharded, _ = pipeline.run_on_state(
                paths, work / "dask" / "out", work / "dask" / "state", config, call=shards.sharded_call(pipeline.direct, plan)
            )
            sharded_s = time.perf_counter() - started
        same = all(getattr(local, name).equals(getattr(sharded, name)) for name in ("articles", "stories", "pairs"))
        print(f"  one process  {local_s:8.1f} s {docs / local_s:8,.0f} docs/s")
        print(f"  {workers} workers    {sharded_s:8.1f} s {docs / sharded_s:8,.0f} docs/s   "
              f"{local_s / sharded_s:.2f}x the one process; identical articles, stories, pairs: {same}")
        print(f"  {'stage':<22}{'one process s':>14}{f'{workers} workers s':>14}")
        for stage, seconds in local.summary.timings.items():
            print(f"  {stage:<22}{seconds:>14.2f}{sharded.summary.timings.get(stage, float('nan')):>14.2f}")
        per_record = sum(local.summary.timings[stage] for stage in PER_RECORD_STAGES)
        print(f"  per-record stages ({', '.join(PER_RECORD_STAGES)}) in one process: {per_record:.1f} s, "
              f"{docs / per_record:,.0f} docs/s per core")
        records = state.stored_records((work / "local" / "state" / "current").resolve())  # RECORDS, texts and all
        sent = [len(pickle.dumps(frame)) / records.height for frame in (records, shards.matching_columns(records))]
        print(f"  a record sent to a shard (pickled): {sent[0] / 1e3:.1f} KB whole, {sent[1] / 1e3:.1f} KB with the matching columns")
        _index_memory(records, config, work, docs)


PER_RECORD_STAGES = ("read", "normalize and clean", "minhash duplicates", "verify duplicates")
"""The stages that run in shards (dedupe/shards.py): their cost grows with the batch alone."""


def _split_corpus(corpus: Path, files: int) -> Path:
    """The corpus again in `files` Parquet files, so that reading, too, has shards."""
    target = corpus.with_name(f"{corpus.name}-in-{files}")
    if not target.exists():
        frame = pl.concat([pl.read_parquet(part) for part in sorted(corpus.glob("part-*.parquet"))])
        target.mkdir(parents=True)
        size = -(-frame.height // files)
        for number, start in enumerate(range(0, frame.height, size)):
            frame.slice(start, size).write_parquet(target / f"part-{number:04}.parquet")
    return target


def _dask_map(client: object) -> Callable[..., list]:
    """A `shards.Map` on a Dask client: what flows/scale.py does through Prefect tasks, without
    Prefect's per-task bookkeeping."""

    def run(name: str, function: Callable[..., object], arguments: list[tuple]) -> list:
        return client.gather([client.submit(function, *args, pure=False) for args in arguments])  # type: ignore[attr-defined]

    return run


def _index_memory(records: pl.DataFrame, config: Config, work: Path, docs: int) -> None:
    """Redis memory and commands per indexed article: our layout at the default and at a sized
    `bits`, and datasketch's MinHashLSH Redis storage with the same signatures and bands."""
    import redis as redis_client

    from dedupe import index, shards

    keys, _ = shards.shard_band_keys(records.select(list(CLEANED)), config, None)
    articles = keys["article_id"].n_unique()
    sized = max(1, int(np.ceil(np.log2(articles / 100))))
    print(f"\nRedis index of the {articles:,} matched articles ({keys.height:,} bucket entries, "
          f"{keys.height / articles:.1f} per article)")
    with index.temporary_server(work) as url:
        server = redis_client.Redis.from_url(url)
        for bits in (index.DEFAULT_BITS, sized):
            server.flushall()
            server.config_resetstat()
            shared = index.RedisIndex(f"{url}?bits={bits}", config)
            started = time.perf_counter()
            shared.add(keys)
            seconds = time.perf_counter() - started
            calls = _command_calls(server)
            print(f"  ours, bits={bits:<3} {shared.memory() / articles:8,.0f} bytes/article, "
                  f"{calls / articles:6.1f} commands/article (in scripts too), {articles / seconds:8,.0f} articles/s added")
        server.flushall()
        server.config_resetstat()
        started = time.perf_counter()
        _datasketch_insert(records, keys, config, url)
        seconds = time.perf_counter() - started
        memory = server.info("memory")
        used = int(memory["used_memory"]) - int(memory["used_memory_startup"])
        print(f"  datasketch MinHashLSH redis storage {used / articles:8,.0f} bytes/article, "
              f"{_command_calls(server) / articles:6.1f} commands/article, {articles / seconds:8,.0f} articles/s added")



def _command_calls(server: object) -> int:
    return sum(int(stats["calls"]) for stats in server.info("commandstats").values())  # type: ignore[attr-defined]


def _datasketch_insert(records: pl.DataFrame, keys: pl.DataFrame, config: Config, url: str) -> None:
    """The same articles in datasketch's MinHashLSH with Redis storage, one LSH per level."""
    from urllib.parse import urlsplit

    from datasketch import MinHashLSH

    parts = urlsplit(url)
    by_level = minhash.duplicate_shingles(records.select(list(CLEANED)), config)
    for level, sets in by_level.items():
        kept = sets.subset(np.flatnonzero(sets.counts))
        lsh = MinHashLSH(
            threshold=minhash.DUPLICATE_THRESHOLDS[level](config), num_perm=config.num_perm,
            storage_config={"type": "redis", "basename": f"ds-{level}".encode(), "redis": {"host": parts.hostname, "port": parts.port}},
        )
        with lsh.insertion_session(buffer_size=5_000) as session:
            for article_id, signature in zip(kept.ids, minhash.signatures(kept, config)):
                session.insert(article_id.encode(), minhash.as_minhash(signature, config), check_duplication=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ["smoke", "signatures", "pipeline", "profile", "scaling", "candidates", "seeds", "server", "scale", "history",
            "stories", "copies", "blocks", "sketches"]
    parser.add_argument("what", nargs="?", default="smoke", choices=what)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--duplicates", type=float, default=0.3, help="share of the documents that copy another")
    parser.add_argument("--peer-docs", type=int, default=300, help="documents for datasketch's slow per-shingle loop")
    parser.add_argument("--corpus", type=Path, help="an existing corpus folder (pipeline)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dedupe-speed")
    parser.add_argument("--flow", action="store_true", help="run the Prefect flow (with writing), not the plain pipeline")
    parser.add_argument("--rounds", type=int, default=3, help="seeds, server, copies: interleaved rounds")
    parser.add_argument("--against", type=Path, help="seeds, server: another checkout (a git worktree) run beside")
    parser.add_argument("--workers", type=int, help="worker processes (Config.workers; scale: Dask workers; default 2; "
                        "seeds: given to this checkout's CLI, else its default); 1: in process")
    parser.add_argument("--chunk", type=int, help="pipeline, scaling: run on a new state in chunks of this many records (0: unchunked)")
    parser.add_argument("--unchunked-at", type=int, nargs="*", help="scaling with --chunk: also run these sizes unchunked")
    parser.add_argument("--state-from", type=Path, help="profile with --chunk: start from a copy of this state folder")
    parser.add_argument("--state-to", type=Path, help="profile with --chunk: leave a copy of the run's state here (a new folder)")
    parser.add_argument("--generation", type=Path, help="history: a state generation folder (STATE/generations/N)")
    parser.add_argument("--configs", nargs="+", default=[""], metavar="FIELD=VALUE,...",
                        help="stories: the story steps again with each of these settings ('': the defaults); "
                        "profile: the run's settings (the first)")
    parser.add_argument("--cprofile", metavar="STEP", help="profile: this step (or steps, comma-separated) under cProfile (its seconds then include the profiler's)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workers = 2 if args.workers is None else args.workers
    config = Config()
    print(f"machine: {os.cpu_count()} cores; numpy {np.__version__}, polars {pl.__version__}", file=sys.stderr)
    if args.what in ("smoke", "signatures"):
        docs = 1_000 if args.what == "smoke" else args.docs
        corpus = build_corpus(args.workdir / f"corpus-{docs}", docs, args.duplicates, seed=docs)
        texts = pl.read_parquet(corpus / "part-0000.parquet")["text"]
        compare_signatures(texts, config, min(args.peer_docs, docs))
    if args.what in ("smoke", "pipeline"):
        docs = 2_000 if args.what == "smoke" else args.docs
        corpus = args.corpus or build_corpus(args.workdir / f"corpus-{docs}", docs, args.duplicates, seed=docs)
        figures = run_pipeline(corpus, args.flow, workers, args.chunk)
        print(json.dumps(figures)) if args.json else show_pipeline(figures)
    if args.what == "profile":
        docs = args.docs
        corpus = args.corpus or build_corpus(args.workdir / f"corpus-{docs}", docs, args.duplicates, seed=docs)
        profile(corpus, workers, args.chunk, args.flow, args.cprofile, args.configs[0], args.state_from, args.state_to)
    if args.what == "copies":
        corpus = args.corpus or build_corpus(args.workdir / f"corpus-{args.docs}", args.docs, args.duplicates, seed=args.docs)
        copies_on_workers(corpus, workers, args.rounds)
    if args.what == "blocks":
        corpus = args.corpus or build_corpus(args.workdir / f"corpus-{args.docs}", args.docs, args.duplicates, seed=args.docs)
        partner_blocks(corpus, args.chunk or args.docs // 3, args.sizes, args.rounds)
    if args.what == "sketches":
        corpus = args.corpus or build_corpus(args.workdir / f"corpus-{args.docs}", args.docs, args.duplicates, seed=args.docs)
        sketch_filter(corpus)
    if args.what == "scaling":
        scaling(args.sizes, args.duplicates, args.workdir, args.flow, workers, args.chunk, args.unchunked_at)
    if args.what == "candidates":
        for size in args.sizes:
            corpus = build_corpus(args.workdir / f"corpus-{size}", size, args.duplicates, seed=size)
            candidate_buckets(corpus, [200, 50, 20])
            story_buckets(corpus, [50, 30, 15, 10])
    if args.what == "stories":
        folder = args.workdir / f"corpus-{args.docs}"
        corpus = args.corpus or build_corpus(folder, args.docs, args.duplicates, seed=args.docs)
        configs = [config.with_settings(settings.split(",") if settings else []) for settings in args.configs]
        story_steps(corpus, configs)
    if args.what == "seeds":
        seeds_run(args.rounds, args.against, args.workers)
    if args.what == "server":
        embedded_server_alone(args.rounds, args.against)
    if args.what == "history":
        history_size(args.generation)
    if args.what == "scale":
        scale(args.docs, args.duplicates, args.workdir, workers)


if __name__ == "__main__":
    main()
