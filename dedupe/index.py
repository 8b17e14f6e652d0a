"""A shared LSH index in Redis: the band buckets of every indexed article, so that several
workers and several runs match new articles against one index.

Layout (all under a prefix that names the settings the keys were made with, so an index never
mixes keys of other settings):

    PREFIX:bits                         how many high bits of a bucket key pick its hash (fixed
                                        when the index is made: `?bits=N` in the URL, default 10)
    PREFIX:b:LEVEL:BAND:SLOT  (hash)    bucket key (8 bytes) -> the 8-byte ids of its articles,
                                        concatenated; SLOT is the key's top `bits` bits
    PREFIX:a:SLOT             (hash)    8-byte article id (xxh64 of the id) -> the article id
    PREFIX:generation:STATE   (string)  the state generation whose keys are all in the index

Buckets are fields of a few hashes rather than keys of their own: a Redis key costs ~70 bytes of
overhead, a field of a small (listpack) hash ~2 bytes, and an article sits in 25-28 buckets.
`python benchmarks/speed.py scale` prints the memory per article of this layout next to
datasketch's own Redis storage (one Redis set per bucket, plus a list of keys per article).

Writes are atomic and idempotent: appending an id to a bucket is a read-modify-write, done by a
Lua script (Redis runs a script alone, so two writers appending to one bucket at once both
land), which skips an id already there (a retried or repeated insert adds nothing). The id map
is written with HSETNX, atomic and idempotent by itself; the same script reports an 8-byte id
already taken by another article (a 64-bit collision: never expected, but never silent).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import polars as pl
import polars_hash as plh
import redis
import xxhash

from dedupe.config import Config
from dedupe.schema import BAND_KEYS, LEVEL_BAND_KEYS, check

DEFAULT_BITS = 10
"""1,024 hashes per level and band: each stays a compact listpack (at most 128 fields by Redis'
default) up to ~100,000 indexed articles. Beyond that a hash turns into a hash table, which
costs ~4x per field; a larger index is made with `?bits=N`, N = log2(articles / 100)."""
BATCH = 2_000
"""Bucket entries per script call: a call blocks Redis while it runs, so calls stay short."""
KEY_SETTINGS = (
    "num_perm", "seed", "shingle_words", "min_text_words", "duplicate_lsh_threshold", "headline_duplicate_lsh_threshold",
)
"""The settings that decide an article's band keys."""

_APPEND = """
for i = 1, #KEYS do
  local field, member = ARGV[2 * i - 1], ARGV[2 * i]
  local members = redis.call('HGET', KEYS[i], field)
  if not members then
    redis.call('HSET', KEYS[i], field, member)
  else
    local present = false
    for at = 1, #members, 8 do
      if string.sub(members, at, at + 7) == member then present = true break end
    end
    if not present then redis.call('HSET', KEYS[i], field, members .. member) end
  end
end
return #KEYS
"""
_NAME = """
local clashes = {}
for i = 1, #KEYS do
  local short, name = ARGV[2 * i - 1], ARGV[2 * i]
  if redis.call('HSETNX', KEYS[i], short, name) == 0 and redis.call('HGET', KEYS[i], short) ~= name then
    table.insert(clashes, name)
  end
end
return clashes
"""


class RedisIndexError(RuntimeError):
    """The index cannot be used as asked."""


class RedisIndex:
    """The LSH buckets of indexed articles in one Redis database (see the module docstring)."""

    def __init__(self, url: str, config: Config) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise RedisIndexError(f"{url!r}: expected redis://HOST:PORT/DB")
        requested = parse_qs(parts.query).pop("bits", [None])[0]
        self.url = url
        self.redis = redis.Redis.from_url(parts._replace(query="").geturl())
        settings = json.dumps({name: asdict(config)[name] for name in KEY_SETTINGS}, sort_keys=True)
        self.prefix = f"dedupe:{xxhash.xxh64_hexdigest(settings.encode())[:8]}"
        self.redis.set(f"{self.prefix}:bits", int(requested or DEFAULT_BITS), nx=True)
        self.bits = int(self.redis.get(f"{self.prefix}:bits"))  # type: ignore[arg-type]
        if requested is not None and int(requested) != self.bits:
            raise RedisIndexError(f"index {url} was made with bits={self.bits}; drop ?bits= or use another database")
        self._append = self.redis.register_script(_APPEND)
        self._name = self.redis.register_script(_NAME)

    def add(self, keys: pl.DataFrame) -> int:
        """Put articles in their buckets (LEVEL_BAND_KEYS rows); returns the rows written.
        Safe to repeat and to run from many processes at once."""
        check(keys, LEVEL_BAND_KEYS, "index input")
        if keys.is_empty():
            return 0
        ids = keys["article_id"].unique(maintain_order=True)
        short = _short_ids(ids)
        name_keys = [f"{self.prefix}:a:{slot}" for slot in (short >> np.uint64(64 - self.bits)).tolist()]
        clashes: list[bytes] = []
        for start in range(0, len(ids), BATCH):
            stop = start + BATCH
            argv = _interleave(_as_bytes(short[start:stop]), [name.encode() for name in ids[start:stop]])
            clashes += self._name(keys=name_keys[start:stop], args=argv)
        if clashes:
            raise RedisIndexError(f"8-byte id clash in {self.url} for {', '.join(c.decode() for c in clashes[:5])}")
        members = dict(zip(ids, _as_bytes(short)))
        hashes = self._bucket_hashes(keys)
        fields = _as_bytes(keys["key"].to_numpy())
        entries = [members[article_id] for article_id in keys["article_id"]]
        for start in range(0, keys.height, BATCH):
            stop = start + BATCH
            self._append(keys=hashes[start:stop], args=_interleave(fields[start:stop], entries[start:stop]))
        return keys.height

    def members(self, level: str, buckets: pl.DataFrame) -> pl.DataFrame:
        """BAND_KEYS: every indexed article in the `buckets` (band, key) of `level`."""
        if buckets.is_empty():
            return pl.DataFrame(schema=BAND_KEYS)
        buckets = buckets.select("band", "key").unique()
        hashes = self._bucket_hashes(buckets.select(pl.lit(level).alias("level"), "band", "key"))
        fields = _as_bytes(buckets["key"].to_numpy())
        by_hash: dict[str, list[int]] = defaultdict(list)
        for row, name in enumerate(hashes):
            by_hash[name].append(row)
        pipe = self.redis.pipeline(transaction=False)
        for name, rows in by_hash.items():
            pipe.hmget(name, [fields[row] for row in rows])
        found: list[tuple[int, bytes]] = []
        for rows, values in zip(by_hash.values(), pipe.execute()):
            found += [(row, value) for row, value in zip(rows, values) if value]
        rows = np.repeat([row for row, _ in found], [len(value) // 8 for _, value in found]).astype(np.int64)
        short = np.frombuffer(b"".join(value for _, value in found), dtype=">u8").astype(np.uint64)
        names = self._names(short)
        frame = buckets.select("band", "key")[rows].select(pl.Series("article_id", names, dtype=pl.String), "band", "key")
        return check(frame, BAND_KEYS, "indexed members")

    def generation(self, state: str) -> int:
        """The state generation whose band keys are all in the index (0: none)."""
        return int(self.redis.get(f"{self.prefix}:generation:{state}") or 0)

    def mark(self, state: str, generation: int) -> None:
        """Record that the keys of `state` up to `generation` are indexed."""
        self.redis.set(f"{self.prefix}:generation:{state}", generation)

    def memory(self) -> int:
        """Bytes Redis holds for its data (INFO used_memory, less its own start-up overhead)."""
        info = self.redis.info("memory")
        return int(info["used_memory"]) - int(info["used_memory_startup"])

    def _bucket_hashes(self, keys: pl.DataFrame) -> list[str]:
        slots = (keys["key"].to_numpy() >> np.uint64(64 - self.bits)).tolist()
        return [f"{self.prefix}:b:{level}:{band}:{slot}" for level, band, slot in zip(keys["level"], keys["band"], slots)]

    def _names(self, short: np.ndarray) -> list[str]:
        """The article ids of 8-byte ids, in order."""
        unique, inverse = np.unique(short, return_inverse=True)
        slots = (unique >> np.uint64(64 - self.bits)).tolist()
        pipe = self.redis.pipeline(transaction=False)
        for slot, field in zip(slots, _as_bytes(unique)):
            pipe.hget(f"{self.prefix}:a:{slot}", field)
        names = pipe.execute()
        missing = [i for i, name in enumerate(names) if name is None]
        if missing:
            raise RedisIndexError(f"index {self.url} has bucket entries of {len(missing)} articles it cannot name")
        decoded = [name.decode() for name in names]
        return [decoded[i] for i in inverse.tolist()]


def _short_ids(ids: pl.Series) -> np.ndarray:
    """xxh64 of each article id (polars-hash, as minhash hashes shingles)."""
    frame = pl.DataFrame({"article_id": ids})
    return frame.select(plh.col("article_id").nchash.xxhash64()).to_series().to_numpy().astype(np.uint64)


def _as_bytes(values: np.ndarray) -> list[bytes]:
    """Each uint64 as 8 big-endian bytes."""
    raw = np.ascontiguousarray(values, dtype=">u8").tobytes()
    return [raw[i : i + 8] for i in range(0, len(raw), 8)]


def _interleave(first: Iterable[bytes], second: Iterable[bytes]) -> list[bytes]:
    return [value for pair in zip(first, second) for value in pair]


@contextmanager
def temporary_server(folder: Path, *settings: str) -> Iterator[str]:
    """A throwaway `redis-server` on 127.0.0.1 on a free port, nothing saved to disk, stopped by
    its process id on exit: the URL of its database 0. For tests and benchmarks; a deployment
    points `--index` at its own Redis."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RedisIndexError("redis-server is not installed (Debian: apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [executable, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder), "--save", "", "--appendonly", "no", *settings]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None:
                    raise RedisIndexError(f"redis-server exited with {server.returncode}") from None
                time.sleep(0.1)
        else:
            raise RedisIndexError(f"redis-server on port {port} did not answer in 10 s")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
