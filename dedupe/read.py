"""Read articles from files and folders into one frame, one row per input record.

Nothing is lost: a record that cannot be read becomes a `rejected` row whose reason names the file
and line, and one bad file never stops the others.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import polars as pl
import xxhash

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
_SNIFF_BYTES = 8192

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # article bodies exceed csv's 128 KB default


class InputError(ValueError):
    """Nothing usable could be read from the given paths."""


def read(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every record of every supported file under `paths`, in a stable order (READ schema)."""
    return read_found(discover(paths))


def read_found(found: Iterable[tuple[Path, str]]) -> pl.DataFrame:
    """`read` for (file, key) pairs from `discover`: an incremental run reads only changed files."""
    rows: list[dict[str, Any]] = []
    for path, key in found:
        rows.extend(read_file(path, key))
    frame = pl.DataFrame(rows, schema=READ, orient="row") if rows else pl.DataFrame(schema=READ)
    return check(_unique_ids(frame), READ, "read")


def discover(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(file, key) for each input file; `key` names the file relative to the path it was found
    under, so ids derived from it do not depend on the working directory."""
    found: list[tuple[Path, str]] = []
    for given in map(Path, paths):
        if not given.exists() and not given.is_symlink():
            raise InputError(f"{given}: no such file or folder")
        if given.is_dir():
            root = given.resolve()
            for path in sorted(p for p in given.rglob("*") if p.suffix.lower() in SUFFIXES):
                if not any(part.startswith(".") for part in path.relative_to(given).parts):
                    found.append((path, f"{root.name}/{path.relative_to(given).as_posix()}"))
        else:
            found.append((given, given.name))
    return found


def read_file(path: Path, key: str) -> list[dict[str, Any]]:
    """The rows of one file; a file that cannot be read at all becomes one rejected row."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        return [_rejected(path, key, 1, f"unsupported file type {path.suffix or '(none)'!r}")]
    rows: list[dict[str, Any]] = []
    try:
        rows.extend(reader(path, key))
    except _FileRejected as error:
        rows.append(_rejected(path, key, error.line, error.reason))
    except OSError as error:
        rows.append(_rejected(path, key, 1, f"cannot read file: {error.strerror or error}"))
    except (RecursionError, ValueError, LookupError) as error:  # parsers' own limits: nesting, encodings
        rows.append(_rejected(path, key, 1, f"unreadable: {type(error).__name__}: {error}"))
    return rows


class _FileRejected(Exception):
    def __init__(self, reason: str, line: int = 1) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, line


def decode(data: bytes) -> str:
    """Text of a file: UTF-8 (with or without BOM) or UTF-16 with BOM; other 8-bit text is read as
    Windows-1252, the usual culprit. Binary content is refused."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise _FileRejected(f"invalid UTF-16 at byte {error.start}") from None
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise _FileRejected("binary content (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _read_text(path: Path, key: str) -> Iterator[dict[str, Any]]:
    lines = decode(path.read_bytes()).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        yield _rejected(path, key, 1, "empty file")
        return
    title = lines[start].strip()
    if path.suffix.lower() == ".md":
        title = title.lstrip("#").strip()
    text = "\n".join(lines[start + 1 :]).strip("\n")
    yield _record(path, key, start + 1, {"title": title, "text": text})


def _read_html(path: Path, key: str) -> Iterator[dict[str, Any]]:
    import trafilatura  # imported here: it is slow to load and only HTML input needs it

    data = path.read_bytes()
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise _FileRejected("binary content (NUL bytes), not HTML")
    document = trafilatura.bare_extraction(data, with_metadata=True, include_comments=False)
    if document is None or not (document.text or document.title):
        yield _rejected(path, key, 1, "no article text found in the HTML")
        return
    fields = {
        "title": document.title,
        "text": document.text,
        "url": document.url,
        "source": document.sitename,
        "published_at": document.date,
    }
    yield _record(path, key, 1, fields)


def _read_json(path: Path, key: str) -> Iterator[dict[str, Any]]:
    """An object or an array of objects, with the line each element starts on."""
    text = decode(path.read_bytes())
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if position == len(text):
        yield _rejected(path, key, 1, "empty file")
        return
    if text[position] != "[":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise _FileRejected(f"malformed JSON: {error.msg} (column {error.colno})", error.lineno) from None
        if not isinstance(value, dict):
            raise _FileRejected(f"JSON top level is {_json_type(value)}, not an object or array")
        yield _record(path, key, text.count("\n", 0, position) + 1, value)
        return
    line, counted = 1, 0
    position = _skip_space(text, position + 1)
    while position < len(text) and text[position] != "]":
        line += text.count("\n", counted, position)
        counted = position
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            yield _rejected(path, key, error.lineno, f"malformed JSON: {error.msg}; rest of file not read")
            return
        yield _json_row(path, key, line, value)
        position = _skip_space(text, position)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)


def _read_jsonl(path: Path, key: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(decode(path.read_bytes()).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield _rejected(path, key, number, f"malformed JSON line: {error.msg} (column {error.colno})")
            continue
        yield _json_row(path, key, number, value)


def _read_csv(path: Path, key: str) -> Iterator[dict[str, Any]]:
    reader = csv.reader(io.StringIO(decode(path.read_bytes()), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        yield _rejected(path, key, 1, "empty file")
        return
    except csv.Error as error:
        raise _FileRejected(f"unreadable CSV header: {error}") from None
    columns = canonical_columns(header)
    if not columns:
        raise _FileRejected(f"no known column in CSV header {header!r}; expected some of {', '.join(FIELDS)}")
    line = 2
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield _rejected(path, key, reader.line_num, f"malformed CSV row: {error}")
            line = reader.line_num + 1
            continue
        if not any(cell.strip() for cell in row):
            line = reader.line_num + 1
            continue
        if len(row) != len(header):
            yield _rejected(path, key, line, f"CSV row has {len(row)} fields, the header has {len(header)}")
        else:
            yield _record(path, key, line, {columns[i]: row[i] for i in columns})
        line = reader.line_num + 1


def _read_parquet(path: Path, key: str) -> Iterator[dict[str, Any]]:
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # polars raises several unrelated types for a corrupt file
        raise _FileRejected(f"unreadable Parquet: {error}") from None
    columns = canonical_columns(frame.columns)
    if not columns:
        raise _FileRejected(f"no known column in {frame.columns!r}; expected some of {', '.join(FIELDS)}")
    selected = frame.select(pl.col(frame.columns[i]).alias(name) for i, name in columns.items())
    for number, values in enumerate(selected.iter_rows(named=True), start=1):
        yield _record(path, key, number, values)


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
            except (TypeError, ValueError, IndexError):
                return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _json_row(path: Path, key: str, line: int, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        return _rejected(path, key, line, f"JSON record is {_json_type(value)}, not an object")
    return _record(path, key, line, value)


def _record(path: Path, key: str, line: int, values: dict[str, Any]) -> dict[str, Any]:
    names = list(values)
    fields = {field: values[names[i]] for i, field in canonical_columns(names).items()}
    record_id = fields.get("id")
    return {
        "article_id": _text(record_id) or _stable_id(key, line),
        "source_file": str(path),
        "line": line,
        "title_raw": _text(fields.get("title")),
        "text_raw": _text(fields.get("text")),
        "url": _text(fields.get("url")),
        "source": _text(fields.get("source")),
        "published_at": parse_timestamp(fields.get("published_at")),
        "status": "ok",
        "reason": None,
    }


def _rejected(path: Path, key: str, line: int, why: str) -> dict[str, Any]:
    return {
        **{name: None for name in READ},
        "article_id": _stable_id(key, line),
        "source_file": str(path),
        "line": line,
        "status": "rejected",
        "reason": f"{path}:{line}: {why}",
    }


def _unique_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """Keep every record when two share an id: later ones get a `~N` suffix."""
    occurrence = pl.int_range(pl.len()).over("article_id")
    return frame.with_columns(
        pl.when(occurrence == 0)
        .then(pl.col("article_id"))
        .otherwise(pl.col("article_id") + "~" + (occurrence + 1).cast(pl.String))
    )


def _stable_id(key: str, line: int) -> str:
    return xxhash.xxh3_64_hexdigest(f"{key}:{line}".encode())


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if text.strip() else None


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _json_type(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )
