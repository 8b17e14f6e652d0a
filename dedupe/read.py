"""Read articles from files and folders into one frame, one row per input record.

Nothing is lost: a record that cannot be read becomes a `rejected` row whose reason names the file
and line, and one bad file never stops the others. Files are streamed record by record (JSONL,
CSV, text), with a size limit on each record and on what a `.gz` file may decompress to, so no
input can hold the run or take the machine's memory. What was read but is worth knowing (a
guessed encoding, an id used twice) goes in the row's `note`.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import itertools
import json
import os
import re
import stat
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any

import charset_normalizer
import polars as pl
import xxhash

from dedupe.config import Config
from dedupe.schema import READ, check

FIELDS = ("id", "title", "text", "url", "source", "published_at")
ALIASES = {
    "id": ("id", "article_id", "doc_id", "guid", "uuid"),
    "title": ("title", "headline", "heading", "name"),
    "text": ("text", "body", "content", "article", "article_body", "maintext"),
    "url": ("url", "link", "href", "uri"),
    "source": ("source", "publisher", "site", "sitename", "domain", "outlet"),
    "published_at": ("published_at", "date", "published", "publish_date", "pubdate", "timestamp", "datetime"),
}
TEXT_SUFFIXES = (".txt", ".md")
HTML_SUFFIXES = (".html", ".htm")
SUFFIXES = (*TEXT_SUFFIXES, *HTML_SUFFIXES, ".json", ".jsonl", ".ndjson", ".csv", ".parquet")
GZIP_SUFFIX = ".gz"
_SNIFF_BYTES = 65536
_CHUNK_ROWS = 10_000  # rows held as Python dicts before they become a polars frame: with 50,000 the
# read stage peaked at 1.39 MiB per MiB of valid JSONL, with 10,000 at 1.14 (faults.py --read-memory 512)
_DRAIN_CHARS = 1 << 20
# Bytes that do not occur in text, for the binary test: C0 controls but tab, newlines, form feed, escape.
_BINARY_BYTES = bytes(set(range(32)) - {9, 10, 12, 13, 27}) + b"\x7f"
_BINARY_SHARE = 0.05  # random (compressed) bytes have 11% of them, text with a stray NUL or bell far less
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # from JSON escapes such as "\ud800": not storable
_FALLBACK_ENCODING = "cp1252"


class InputError(ValueError):
    """Nothing usable could be read from the given paths."""


def read(paths: Iterable[str | Path], config: Config = Config()) -> pl.DataFrame:  # noqa: B008 (frozen)
    """Every record of every supported file under `paths`, in a stable order (READ schema)."""
    return read_found(discover(paths), config)


def read_found(found: Iterable[tuple[Path, str]], config: Config = Config()) -> pl.DataFrame:  # noqa: B008 (frozen)
    """`read` for (file, key) pairs from `discover`: an incremental run reads only changed files."""
    return check(unique_ids(read_files(found, config)), READ, "read")


def read_files(found: Iterable[tuple[Path, str]], config: Config = Config()) -> pl.DataFrame:  # noqa: B008 (frozen)
    """The records of the files in order, ids not yet made unique: sharded reads concatenate
    these and make ids unique once over all of them (`unique_ids` numbers repeats in order)."""
    frames = [frame for frame, _ in _frames(found, config)]
    return pl.concat(frames, rechunk=False) if frames else pl.DataFrame(schema=READ)  # no copy of all the text


class Chunks:
    """`read_found` in frames of at most `size` records (0: one frame), read as they are asked
    for, so that a run over a big input never holds all of its raw text. Ids are made unique
    over everything read so far (`unique_ids` on the ids before, which later records never
    change), so the frames put together are `read_found`'s frame: same rows, ids and notes."""

    def __init__(self, found: Iterable[tuple[Path, str]], config: Config, size: int) -> None:
        self._frames = _frames(found, config, size or None)
        self._earlier = pl.DataFrame(schema={name: READ[name] for name in _ID_COLUMNS})

    def next(self) -> tuple[pl.DataFrame, bool]:
        """(the next frame, whether it is the last); an empty last frame for no input."""
        frame, last = next(self._frames, (pl.DataFrame(schema=READ), True))
        ids = frame.select(_ID_COLUMNS)
        both = unique_ids(pl.concat([self._earlier, ids]))
        made = both.slice(self._earlier.height)
        self._earlier = pl.concat([self._earlier, ids.with_columns(note=pl.lit(None, pl.String))])
        frame = frame.with_columns(article_id=made["article_id"], note=made["note"])
        return check(frame, READ, "read"), last


_ID_COLUMNS = ["article_id", "source_file", "line", "note"]
"""What `unique_ids` reads: the ids of earlier chunks, with notes left empty, decide a chunk's."""


def _frames(
    found: Iterable[tuple[Path, str]], config: Config, size: int | None = None
) -> Iterator[tuple[pl.DataFrame, bool]]:
    """(frame, whether it is the last) over the records of the files in order, in frames of at
    most `size` rows (None: one frame), each made of pieces of _CHUNK_ROWS rows. A frame is
    read when it is asked for; one record ahead tells the last frame apart."""
    records = (row for path, key in found for row in read_file(path, key, config))
    pieces: list[pl.DataFrame] = []
    rows: list[dict[str, Any]] = []
    held = 0
    row = next(records, None)
    while row is not None:
        rows.append(row)
        row = next(records, None)
        if len(rows) == _CHUNK_ROWS or held + len(rows) == size or row is None:
            pieces.append(pl.DataFrame(rows, schema=READ, orient="row"))
            held, rows = held + len(rows), []
            if held == size or row is None:
                frame, pieces, held = [pl.concat(pieces, rechunk=False)], [], 0
                yield frame.pop(), row is None  # popped: no local holds a chunk's raw text while the run uses it


def discover(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(file, key) for each input file; `key` names the file relative to the path it was found
    under, so ids derived from it do not depend on the working directory."""
    found: list[tuple[Path, str]] = []
    for given in map(Path, paths):
        if not given.exists() and not given.is_symlink():
            raise InputError(f"{given}: no such file or folder")
        if given.is_dir():
            root = given.resolve()
            for path in sorted(p for p in given.rglob("*") if file_type(p) in SUFFIXES):
                if not any(part.startswith(".") for part in path.relative_to(given).parts):
                    found.append((path, f"{root.name}/{path.relative_to(given).as_posix()}"))
        else:
            found.append((given, given.name))
    return found


def file_type(path: Path) -> str:
    """The suffix that says how to read `path`: `.jsonl` for both `a.jsonl` and `a.jsonl.gz`."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == GZIP_SUFFIX:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


@dataclass(frozen=True)
class Source:
    """One input file: where it is, the name ids are derived from, and the limits to read it by."""

    path: Path
    key: str
    config: Config

    def open(self) -> IO[bytes]:
        """The file's bytes, decompressed if it is gzip; only regular files (a FIFO would block)."""
        mode = os.stat(self.path).st_mode
        if not stat.S_ISREG(mode):
            raise FileRejected("not a regular file")
        raw = open(self.path, "rb")  # noqa: SIM115 (the caller closes it)
        if self.path.suffix.lower() != GZIP_SUFFIX:
            return raw
        size = os.fstat(raw.fileno()).st_size
        limit = max(self.config.max_gzip_ratio * size, self.config.max_record_bytes)
        return io.BufferedReader(_BoundedStream(gzip.GzipFile(fileobj=raw), raw, limit))

    @functools.cached_property
    def name(self) -> str:
        """The path as text (once per file, not per record); bytes of a file name that are not UTF-8 show as U+FFFD."""
        return _text(str(self.path)) or ""

    def rejected(self, line: int, why: str) -> dict[str, Any]:
        return {
            **{name: None for name in READ},
            "article_id": _stable_id(self.key, line),
            "source_file": self.name,
            "line": line,
            "status": "rejected",
            "reason": f"{self.name}:{line}: {why}",
        }

    def record(self, line: int, values: dict[str, Any], note: str | None = None) -> dict[str, Any]:
        names = list(values)
        fields = {field: values[names[i]] for i, field in canonical_columns(names).items()}
        return {
            "article_id": _text(fields.get("id")) or _stable_id(self.key, line),
            "source_file": self.name,
            "line": line,
            "title_raw": _text(fields.get("title")),
            "text_raw": _text(fields.get("text")),
            "url": _text(fields.get("url")),
            "source": _text(fields.get("source")),
            "published_at": parse_timestamp(fields.get("published_at")),
            "status": "ok",
            "reason": None,
            "note": note,
        }


class FileRejected(Exception):
    """The rest of a file cannot be read; `line` 0 means the line after the last record read."""

    def __init__(self, reason: str, line: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, line


class _BoundedStream(io.RawIOBase):
    """A decompressing stream that refuses to produce more than `limit` bytes (a gzip bomb)."""

    def __init__(self, stream: gzip.GzipFile, raw: IO[bytes], limit: int) -> None:
        self._stream, self._raw, self._limit, self._produced = stream, raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read1(len(buffer))  # read1: what is decompressed so far is kept when the input ends early
        count = len(data)
        buffer[:count] = data
        self._produced += count
        if self._produced > self._limit:
            raise FileRejected(
                f"gzip decompresses to more than {self._limit:,} bytes (max_gzip_ratio "
                "times its size): refused as a possible gzip bomb; the records before were read"
            )
        return count

    def close(self) -> None:
        self._stream.close()
        self._raw.close()
        super().close()


def read_file(path: Path, key: str, config: Config = Config()) -> Iterator[dict[str, Any]]:  # noqa: B008
    """The rows of one file; what cannot be read becomes one rejected row, at the line it failed."""
    source = Source(path, key, config)
    reader = _READERS.get(file_type(path))
    if reader is None:
        yield source.rejected(1, f"unsupported file type {''.join(path.suffixes[-2:]) or '(none)'!r}")
        return
    last_line, rows = 0, 0
    try:
        for row in reader(source):
            last_line, rows = row["line"], rows + 1
            yield row
        if rows == 0:  # every file is accounted for, even one with nothing in it
            yield source.rejected(1, "empty file (no records)")
    except FileRejected as error:
        yield source.rejected(error.line or last_line + 1, error.reason)
    except (OSError, EOFError, zlib.error) as error:  # also a truncated or corrupt gzip stream
        yield source.rejected(last_line + 1, f"cannot read file: {getattr(error, 'strerror', None) or error}")
    except (RecursionError, ValueError, LookupError) as error:  # parsers' own limits: nesting, encodings
        yield source.rejected(last_line + 1, f"unreadable: {type(error).__name__}: {error}")


def guess_encoding(sample: bytes) -> tuple[str, str | None]:
    """(codec, note) for a file that starts with `sample`; binary content is refused.

    A BOM decides; then UTF-16 without BOM by its NUL bytes; then UTF-8; then Windows-1252 for
    text that reads as mostly Latin letters in it (charset-normalizer takes English and French
    in cp1252 or Latin-1 for cp775 and cp1250); else charset-normalizer's guess, which gets
    Cyrillic and Japanese right. `benchmarks/faults.py` prints each of these cases."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
                       (codecs.BOM_UTF8, "utf-8-sig")):  # fmt: skip
        if sample.startswith(bom):
            return codec, None
    utf16 = _utf16_without_bom(sample)
    if utf16:
        return utf16, f"encoding guessed: {utf16} (NUL bytes in every other place, no BOM)"
    if _looks_binary(sample):
        raise FileRejected("binary content (control bytes such as NUL), not text", 1)
    if _mostly_utf8(sample):
        return "utf-8", None
    western = sample.decode(_FALLBACK_ENCODING, errors="replace")
    letters = [c for c in western if c.isalpha()]
    if sum(c.isascii() for c in letters) >= 0.8 * len(letters):
        return _FALLBACK_ENCODING, f"encoding guessed: {_FALLBACK_ENCODING} (not UTF-8, mostly Latin letters)"
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        raise FileRejected("not text in any encoding charset-normalizer knows", 1)
    return best.encoding, f"encoding guessed: {best.encoding} (not UTF-8; by charset-normalizer)"


def _utf16_without_bom(sample: bytes) -> str | None:
    even, odd = sample[0::2], sample[1::2]
    for codec, zeros, letters in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if len(zeros) >= 2 and zeros.count(0) > 0.4 * len(zeros) and letters.count(0) < 0.05 * len(letters):
            try:
                sample[: len(sample) // 2 * 2].decode(codec)
            except UnicodeDecodeError:
                continue
            return codec
    return None


def _looks_binary(sample: bytes) -> bool:
    return len(sample.translate(None, delete=_BINARY_BYTES)) < len(sample) * (1 - _BINARY_SHARE)


def _mostly_utf8(sample: bytes) -> bool:
    """UTF-8, or UTF-8 with fewer bad bytes than good non-ASCII characters (a feed with a few
    Latin-1 records pasted in: those records are repaired one by one, see `_Text.repair`)."""
    decoded = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(sample, final=False)
    bad = len(_ESCAPED_BYTE.findall(decoded))
    return bad == 0 or sum(not c.isascii() for c in decoded) - bad > bad


@dataclass
class _Text:
    """A file's text stream and what its decoding is worth noting."""

    stream: IO[str]
    note: str | None
    limit: int

    def repair(self, text: str) -> tuple[str, str | None]:
        """Bytes that were not UTF-8 in a UTF-8 file (kept by surrogateescape) decoded as cp1252."""
        if not _ESCAPED_BYTE.search(text):
            return text, self.note
        fixed = text.encode("utf-8", "surrogateescape").decode(_FALLBACK_ENCODING, errors="replace")
        return fixed, f"invalid UTF-8: this record decoded as {_FALLBACK_ENCODING}"

    def lines(self) -> Iterator[tuple[int, str | None, int]]:
        """(line number, line, length); a line longer than the limit is skipped unread: None."""
        for number in itertools.count(1):
            line = self.stream.readline(self.limit)
            if not line:
                return
            if len(line) < self.limit or line.endswith(("\n", "\r")):
                yield number, line, len(line)
                continue
            length = len(line)
            del line
            while chunk := self.stream.readline(_DRAIN_CHARS):
                length += len(chunk)
                if chunk.endswith(("\n", "\r")):
                    break
            yield number, None, length

    def too_long(self, length: int) -> str:
        return f"record of {length:,} characters is larger than max_record_bytes ({self.limit:,}): not read"


def _open_text(source: Source) -> _Text:
    codec, note = guess_encoding(_sample(source))
    errors = "surrogateescape" if codec.startswith("utf-8") else "replace"
    stream = io.TextIOWrapper(source.open(), encoding=codec, errors=errors, newline="")
    return _Text(stream, note, source.config.max_record_bytes)


def _sample(source: Source) -> bytes:
    """The file's first bytes, or as many as can be read: the stream read after meets the same
    error (a truncated gzip) at the record it hits, so the records before it are kept."""
    chunks: list[bytes] = []
    with source.open() as stream:
        try:
            while sum(map(len, chunks)) < _SNIFF_BYTES and (chunk := stream.read(4096)):
                chunks.append(chunk)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            pass
    return b"".join(chunks)


def _read_whole(source: Source, limit: int, name: str) -> tuple[str, str | None]:
    text = _open_text(source)
    with text.stream:
        content = text.stream.read(limit + 1)
    if len(content) > limit:
        raise FileRejected(f"file is larger than {name} ({limit:,} characters): not read", 1)
    return text.repair(content)


def _read_text(source: Source) -> Iterator[dict[str, Any]]:
    content, note = _read_whole(source, source.config.max_record_bytes, "max_record_bytes")
    lines = content.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        yield source.rejected(1, "empty file")
        return
    title = lines[start].strip()
    if file_type(source.path) == ".md":
        title = title.lstrip("#").strip()
    text = "\n".join(lines[start + 1 :]).strip("\n")
    yield source.record(start + 1, {"title": title, "text": text}, note)


def _read_html(source: Source) -> Iterator[dict[str, Any]]:
    """trafilatura gets the bytes: it reads the page's own charset declaration."""
    import trafilatura  # imported here: it is slow to load and only HTML input needs it

    limit = source.config.max_record_bytes
    with source.open() as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise FileRejected(f"file is larger than max_record_bytes ({limit:,} bytes): not read", 1)
    sample = data[:_SNIFF_BYTES]
    if not _utf16_without_bom(sample) and _looks_binary(sample):
        raise FileRejected("binary content (control bytes such as NUL), not HTML", 1)
    tags = data.count(b"<")
    if tags > source.config.max_html_tags:
        raise FileRejected(f"HTML has {tags:,} tags, more than max_html_tags ({source.config.max_html_tags:,}): not read", 1)
    document = trafilatura.bare_extraction(data, with_metadata=True, include_comments=False)
    if document is None or not (document.text or document.title):
        yield source.rejected(1, "no article text found in the HTML")
        return
    fields = {
        "title": document.title,
        "text": document.text,
        "url": document.url,
        "source": document.sitename,
        "published_at": document.date,
    }
    yield source.record(1, fields)


def _read_json(source: Source) -> Iterator[dict[str, Any]]:
    """An object or an array of objects, with the line each element starts on."""
    text, note = _read_whole(source, source.config.max_json_bytes, "max_json_bytes (use JSONL for big feeds)")
    decoder = json.JSONDecoder(strict=False)
    position = _skip_space(text, 0)
    if position == len(text):
        yield source.rejected(1, "empty file")
        return
    if text[position] != "[":
        try:
            value = decoder.decode(text)
        except json.JSONDecodeError as error:
            raise FileRejected(f"malformed JSON: {error.msg} (column {error.colno})", error.lineno) from None
        if not isinstance(value, dict):
            raise FileRejected(f"JSON top level is {_json_type(value)}, not an object or array", 1)
        yield source.record(text.count("\n", 0, position) + 1, value, note)
        return
    line, counted = 1, 0
    position = _skip_space(text, position + 1)
    while position < len(text) and text[position] != "]":
        line += text.count("\n", counted, position)
        counted = position
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            yield source.rejected(error.lineno, f"malformed JSON: {error.msg}; rest of file not read")
            return
        yield _json_row(source, line, value, note)
        position = _skip_space(text, position)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)


def _read_jsonl(source: Source) -> Iterator[dict[str, Any]]:
    """One object per line; raw control characters inside strings are accepted (normalize drops them)."""
    text = _open_text(source)
    decoder = json.JSONDecoder(strict=False)
    with text.stream:
        for number, line, length in text.lines():
            if line is None:
                yield source.rejected(number, text.too_long(length))
                continue
            if not line.strip():
                continue
            line, note = text.repair(line)
            try:
                value = decoder.decode(line)
            except json.JSONDecodeError as error:
                yield source.rejected(number, f"malformed JSON line: {error.msg} (column {error.colno})")
                continue
            yield _json_row(source, number, value, note)


class _CsvLines:
    """The physical lines fed to csv.reader. It keeps the lines of the record being parsed, so a
    record that a stray quote ran over several lines can be re-read line by line, and it skips
    lines longer than the limit (csv.reader would hold them whole)."""

    def __init__(self, text: _Text) -> None:
        self._lines = text.lines()
        self.number = 0
        self._first = 1
        self.pending: list[str] = []
        self.too_long: list[tuple[int, int]] = []
        self._pending_chars = 0
        self._limit = text.limit

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        self.number, line, length = next(self._lines)
        if line is None:
            self.too_long.append((self.number, length))
            line = "\n"
        if self._pending_chars <= self._limit:  # beyond, the lines are counted, not kept
            self.pending.append(line)
            self._pending_chars += len(line)
        return line

    def take(self) -> tuple[int, list[str], int]:
        """(first line number, kept lines, number of lines) of the record just parsed."""
        first = self._first
        pending, self.pending, self._pending_chars, self._first = self.pending, [], 0, self.number + 1
        return first, pending, self.number - first + 1


def _read_csv(source: Source) -> Iterator[dict[str, Any]]:
    text = _open_text(source)
    csv.field_size_limit(source.config.max_record_bytes)  # the csv module's limit is process-wide
    lines = _CsvLines(text)
    reader = csv.reader(lines, strict=True)
    with text.stream:
        try:
            header = next(reader)
        except StopIteration:
            yield source.rejected(1, "empty file")
            return
        except csv.Error as error:
            raise FileRejected(f"unreadable CSV header: {error}", 1) from None
        columns = canonical_columns(header)
        if not columns:
            raise FileRejected(f"no known column in CSV header {header!r}; expected some of {', '.join(FIELDS)}", 1)
        lines.take()
        lines.too_long.clear()
        while True:
            try:
                row, error = next(reader), None
            except StopIteration:
                return
            except csv.Error as caught:
                row, error = None, caught
            first, physical, count = lines.take()
            for number, length in lines.too_long:
                yield source.rejected(number, text.too_long(length))
            lines.too_long.clear()
            if error is not None or (row is not None and len(row) != len(header) and count > 1):
                yield from _reread_csv_lines(source, text, header, columns, (first, physical, count), error)
            elif row is not None and any(cell.strip() for cell in row):
                yield _csv_row(source, text, header, columns, first, row)


def _reread_csv_lines(
    source: Source, text: _Text, header: list[str], columns: dict[int, str], record: tuple[int, list[str], int],
    error: csv.Error | None,
) -> Iterator[dict[str, Any]]:
    """A record csv could not parse, or whose quote ran over several lines to a wrong field
    count: its first line is rejected, the lines after it are read on their own (those past the
    record size limit were not kept, and are rejected)."""
    first, physical, count = record
    why = f"malformed CSV row: {error}" if error else "CSV row has the wrong number of fields"
    if count > 1:
        why += f"; a quote opened here runs to line {first + count - 1}, whose lines are read on their own"
    yield source.rejected(first, why)
    for number, line in enumerate(physical[1:count], start=first + 1):
        try:
            row = next(csv.reader([line], strict=True), [])
        except csv.Error as line_error:
            yield source.rejected(number, f"malformed CSV row: {line_error}")
            continue
        if any(cell.strip() for cell in row):
            yield _csv_row(source, text, header, columns, number, row)
    for number in range(first + len(physical), first + count):
        yield source.rejected(number, "inside a CSV record larger than max_record_bytes: not read")


def _csv_row(
    source: Source, text: _Text, header: list[str], columns: dict[int, str], line: int, row: list[str]
) -> dict[str, Any]:
    if len(row) != len(header):
        return source.rejected(line, f"CSV row has {len(row)} fields, the header has {len(header)}")
    values, notes = {}, set()
    for i, name in columns.items():
        values[name], note = text.repair(row[i])
        notes.add(note)
    notes.discard(None)
    return source.record(line, values, "; ".join(sorted(notes)) or None)  # type: ignore[arg-type]


def _read_parquet(source: Source) -> Iterator[dict[str, Any]]:
    try:
        frame = pl.read_parquet(source.path)
    except Exception as error:  # polars raises several unrelated types for a corrupt file
        raise FileRejected(f"unreadable Parquet: {error}", 1) from None
    columns = canonical_columns(frame.columns)
    if not columns:
        raise FileRejected(f"no known column in {frame.columns!r}; expected some of {', '.join(FIELDS)}", 1)
    selected = frame.select(pl.col(frame.columns[i]).alias(name) for i, name in columns.items())
    for number, values in enumerate(selected.iter_rows(named=True), start=1):
        yield source.record(number, values)


_READERS = {
    **dict.fromkeys(TEXT_SUFFIXES, _read_text),
    **dict.fromkeys(HTML_SUFFIXES, _read_html),
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


def canonical_columns(names: list[str]) -> dict[int, str]:
    """Position -> canonical field for the columns we know, by name or common alias."""
    folded = [name.strip().lower().lstrip("\ufeff") for name in names]
    columns: dict[int, str] = {}
    for field, aliases in ALIASES.items():
        for alias in aliases:
            if alias in folded and folded.index(alias) not in columns:
                columns[folded.index(alias)] = field
                break
    return columns


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 or RFC 2822 (as in RSS) to UTC; naive times are taken as UTC; unknown -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            try:
                parsed = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset
        return None


def unique_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """Keep every record when two share an id: later ones get a `~N` suffix and a note naming
    where the id was first used. Repeated until unique, in case an input id already ends in `~2`."""
    while frame["article_id"].n_unique() < frame.height:
        occurrence = pl.int_range(pl.len()).over("article_id")
        first = pl.format("{}:{}", "source_file", "line").first().over("article_id")
        renamed = pl.col("article_id") + "~" + (occurrence + 1).cast(pl.String)
        clash = pl.format("id clash: {} is also the id of {}, renamed {}", "article_id", first, renamed)
        frame = frame.with_columns(
            article_id=pl.when(occurrence == 0).then("article_id").otherwise(renamed),
            note=pl.when(occurrence == 0)
            .then("note")
            .otherwise(pl.concat_str(pl.col("note"), clash, separator="; ", ignore_nulls=True)),
        )
    return frame


def _json_row(source: Source, line: int, value: object, note: str | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        return source.rejected(line, f"JSON record is {_json_type(value)}, not an object")
    return source.record(line, value, note)


def _stable_id(key: str, line: int) -> str:
    return xxhash.xxh3_64_hexdigest(f"{key}:{line}".encode(errors="surrogateescape"))


def _text(value: object) -> str | None:
    """A field as text; lone surrogates (JSON "\\ud800") become U+FFFD, as Arrow strings are UTF-8."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    text = _LONE_SURROGATE.sub("\ufffd", text)  # also bytes of a file name that were not UTF-8
    return text if text.strip() else None


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _json_type(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )
