"""Bad input, case by case: every case runs the whole pipeline and writes the outputs, in its own
process, and the table says records in, rows out, rejected, peak memory and pass/fail.

    python benchmarks/faults.py                  # every case (the big ones write 2.7 GB to /tmp)
    python benchmarks/faults.py --quick          # without the slow ones (200 MB, 2 GB, Prefect server)
    python benchmarks/faults.py --case gzip-bomb # one case
    python benchmarks/faults.py --read-memory 512  # peak memory of reading 512 MB of valid JSONL
    python benchmarks/faults.py --pipeline-memory ../shared/data/aeb/articles.jsonl  # whole pipeline

Peak memory is the case's own process (for the Prefect case, the harness around the CLI).
A case passes when rows out = records in (each counted by construction), the rejected rows are
the expected number and each names its file and line, ids are unique, nothing is written but the
outputs in `--out`, and the case's own check finds nothing. To add a case, append a `Case` to
CASES: a function that writes its input files under a folder, what it expects, and, if it is not
a plain run of the pipeline, how to run it (`Case.run`).
Two cases are about the state, not bad input: `killed-at-stage` SIGKILLs a second batch as each
step of `pipeline.run_on_state` is about to start (`killed-in-chunks`: a run in chunks at each
load and commit, at the first stage of its last chunk and at publishing), `two-at-once` starts runs on one state while
another holds it; both run the pipeline in children (`StagedRun`) stage by stage.
tests/test_faults.py runs every case too.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import polars as pl

from dedupe import pipeline, write
from dedupe.config import Config
from dedupe.state import StateError
from flows import server as servers

MIB = 2**20
ARTICLE = (
    "The city council approved the new budget on Tuesday after a long debate about school funding, "
    "road repairs and the cost of the new library, which opens next spring."
)


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    build: Callable[[Path], list[Path]]
    """Writes the input files under the given folder; returns the paths to run on."""
    records: int
    """Records in the input, counted by construction (an empty or unreadable file is one)."""
    rejected: int
    check: Callable[[pl.DataFrame], list[str]] = lambda _: []
    """Problems beyond the common invariants, from the articles frame."""
    settings: dict[str, int] = field(default_factory=dict)
    slow: bool = False
    """Minutes or gigabytes: run in a process of its own by the tests, skipped by --quick."""
    run: Callable[[Path, list[Path], Config], Path] | None = None
    """Runs the case on (folder, paths, config) and returns the output folder. None: the
    pipeline in this process (`run_pipeline`); a case about state (SIGKILL at a stage, two runs
    at once) runs the CLI its own way, and the same invariants are checked on what it left."""


@dataclass
class Outcome:
    case: str
    records: int
    rows: int
    rejected: int
    expected_rejected: int
    peak_mib: float
    seconds: float
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(record, ensure_ascii=False).encode() + b"\n" for record in records)


def put(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def article(number: int, **extra: object) -> dict[str, object]:
    return {"id": f"a{number}", "title": f"Council approves budget, part {number}", "text": ARTICLE, **extra}


def reasons(frame: pl.DataFrame) -> list[str]:
    return frame.filter(pl.col("status") == "rejected")["reason"].to_list()


def expect_reasons(*parts: str) -> Callable[[pl.DataFrame], list[str]]:
    """Each part must be found in some rejected row's reason."""
    def check(frame: pl.DataFrame) -> list[str]:
        found = reasons(frame)
        return [f"no rejected row says {part!r}" for part in parts if not any(part in r for r in found)]
    return check


def expect_notes(*parts: str) -> Callable[[pl.DataFrame], list[str]]:
    def check(frame: pl.DataFrame) -> list[str]:
        notes = frame["note"].drop_nulls().to_list()
        return [f"no note says {part!r}" for part in parts if not any(part in n for n in notes)]
    return check


def all_of(*checks: Callable[[pl.DataFrame], list[str]]) -> Callable[[pl.DataFrame], list[str]]:
    return lambda frame: [problem for check in checks for problem in check(frame)]


# --- the cases ----------------------------------------------------------------------------------

def binary_files(folder: Path) -> list[Path]:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
    put(folder, "photo.txt", png)
    put(folder, "archive.jsonl", zlib.compress(os.urandom(4096)) + b"\x00" * 64)
    put(folder, "sheet.csv", b"PK\x03\x04" + bytes(range(256)) * 4)
    return [folder]


def empty_input(folder: Path) -> list[Path]:
    put(folder, "empty.txt", b"")
    put(folder, "blank.md", b"  \n\t\n")
    put(folder, "empty.jsonl", b"\n\n  \n")
    put(folder, "header-only.csv", b"id,title\n")
    put(folder, "empty.json", b"[]")
    put(folder, "whitespace.jsonl", jsonl({"title": "  ", "text": "\n\t\u200b"}, {"title": "\u3000", "text": None}))
    return [folder]


def encodings(folder: Path) -> list[Path]:
    put(folder, "latin1.jsonl", jsonl({"title": "Le ministre a déclaré que la réforme était nécessaire"}).decode().encode("latin-1"))
    put(folder, "cp1252.csv", "title\n\"Café owners say “new rules” cost €2,000\"\n".encode("cp1252"))
    put(folder, "cp1251.jsonl", jsonl({"title": "Президент России заявил в понедельник о санкциях"}).decode().encode("cp1251"))
    put(folder, "shift_jis.txt", "東京都は月曜日、新しい規則を発表した。\n経済への影響が懸念されている。".encode("shift_jis"))
    put(folder, "utf16-bom.csv", "id,title\nu1,Über die Brücke\n".encode("utf-16"))
    put(folder, "utf16-nobom.jsonl", jsonl({"title": "Sans BOM, en UTF-16"}).decode().encode("utf-16-le"))
    put(folder, "mixed.jsonl", jsonl({"title": "Good UTF-8 line — café"}) + '{"title": "Caf\xe9 in Latin-1"}\n'.encode("latin-1"))
    return [folder]


EXPECTED_TITLES = {
    "Le ministre a déclaré que la réforme était nécessaire",
    "Café owners say “new rules” cost €2,000",
    "Президент России заявил в понедельник о санкциях",
    "東京都は月曜日、新しい規則を発表した。",
    "Über die Brücke",
    "Sans BOM, en UTF-16",
    "Good UTF-8 line — café",
    "Café in Latin-1",
}


def titles_decoded(frame: pl.DataFrame) -> list[str]:
    missing = EXPECTED_TITLES - set(frame["title_raw"].to_list())
    return [f"not decoded right: {title!r}" for title in sorted(missing)]


def control_characters(folder: Path) -> list[Path]:
    raw = b'{"title": "NUL\x00 inside", "text": "bell\x07 and escape\x1b and C1 \xc2\x85 here"}\n'
    escaped = b'{"title": "Escaped \\u0000 NUL", "text": "zero\\u200bwidth and \\ud800 lone surrogate"}\n'
    put(folder, "controls.jsonl", raw + escaped)
    put(folder, "controls.txt", b"Title with \x00 NUL\nBody \x01\x02 " + ARTICLE.encode())
    put(folder, "controls.csv", b'id,title,text\nn1,NUL\x00 in a CSV cell,"\x07' + ARTICLE.encode() + b'"\n')
    return [folder]


def no_control_characters(frame: pl.DataFrame) -> list[str]:
    kept = frame.filter(pl.col("status") != "rejected")
    bad = kept.filter(pl.col("headline").str.contains(r"[\x00-\x08\x0e-\x1f\x7f]")
                      | pl.col("text").str.contains(r"[\x00-\x08\x0e-\x1f\x7f]"))
    return [f"control characters left in {bad.height} rows"] if bad.height else []


def broken_jsonl(folder: Path) -> list[Path]:
    lines = [json.dumps(article(1)), '{"id": "b2", "title": broken}', "[1, 2]", '"a string"', json.dumps(article(5)),
             '{"id": "b6", "title": "cut off in the mid']
    put(folder, "feed.jsonl", "\n".join(lines).encode())  # no newline at the end: a killed scraper
    return [folder]


def broken_csv(folder: Path) -> list[Path]:
    put(folder, "ragged.csv", b"\xef\xbb\xbfid,title\n1,One\n2,Two,extra\n3\n4,\"Four, quoted\"\n")
    put(folder, "quotes.csv", b'id,title\n1,"Unclosed\n2,Two\n3,Three\n4,"a"b\n5,Five\n6,"multi\nline"\n')
    return [folder]


def json_not_object(folder: Path) -> list[Path]:
    for name, content in {"string.json": b'"just a string"', "number.json": b"42", "null.json": b"null",
                          "true.json": b"true", "numbers.json": b"[1, 2, {\"title\": \"ok\"}]"}.items():
        put(folder, name, content)
    return [folder]


def json_too_big(folder: Path) -> list[Path]:
    return [put(folder, "big.json", json.dumps([article(i) for i in range(50)]).encode())]


def long_line(folder: Path) -> list[Path]:
    """A 200 MB line in each streamed format, and a 200 MB text file, among good records."""
    files = {
        "feed.jsonl": (jsonl(article(1)) + b'{"title": "huge", "text": "', b'"}\n' + jsonl(article(3))),
        "feed.csv": (b"id,title\nc1,First\nc2,", b"\nc3,Third\n"),
        "page.txt": (b"Huge title\n", b""),
    }
    for name, (before, after) in files.items():
        with open(folder / name, "wb") as file:  # written in pieces: the peak memory is the run's
            file.write(before)
            for _ in range(200):
                file.write(b"x" * MIB)
            file.write(after)
    return [folder]


def two_gigabytes(folder: Path) -> list[Path]:
    """2 GB of JSONL: 50 records of 40 MiB (over the record limit) between 1,000 good ones."""
    oversized = b'{"title": "oversized", "text": "' + b"y" * (40 * MIB) + b'"}\n'
    with open(folder / "day.jsonl", "wb") as file:
        for number in range(1000):
            file.write(jsonl(article(number, text=f"{ARTICLE} Item {number}.")))
            if number % 20 == 0:
                file.write(oversized)
    return [folder]


def same_id(folder: Path) -> list[Path]:
    put(folder, "a.jsonl", jsonl({"id": "x", "title": "First x"}, {"id": "x~2", "title": "Already x~2"}))
    put(folder, "b.csv", b"id,title\nx,Second x\nx,Third x\n")
    return [folder]


def ids_unique_and_clash_noted(frame: pl.DataFrame) -> list[str]:
    problems = [] if frame["article_id"].n_unique() == frame.height else ["ids not unique"]
    clashes = frame["note"].drop_nulls().str.count_matches("id clash").sum()
    return problems + ([] if clashes == 3 else [f"{clashes} id clashes noted, expected 3"])


def bad_html(folder: Path) -> list[Path]:
    put(folder, "broken.html", b"<html><head><title>Broken page</title><body><div><p>Unclosed <b>tags <i>everywhere"
        + f"<p>{ARTICLE}".encode() * 5 + b"</span></table>&bogus; &#xD800; &#99999999;")
    put(folder, "nested.html", b"<html><body>" + b"<div>" * 20_000 + ARTICLE.encode() + b"</div>" * 20_000)
    laughs = "".join(f'<!ENTITY l{i} "{"&l" + str(i - 1) + ";" * 10}">' for i in range(1, 10))
    put(folder, "entities.html", f'<!DOCTYPE html [<!ENTITY l0 "lol">{laughs}]><html><body><p>&l9; {ARTICLE}'
        .encode() + b"&amp;amp;amp;amp;" * 50_000 + b"</p></body></html>")
    put(folder, "many-tags.html", b"<html><body>" + b"<p>some words" * 100_000 + b"</body></html>")
    return [folder]


def gzip_input(folder: Path) -> list[Path]:
    put(folder, "feed.jsonl.gz", gzip.compress(jsonl(article(1), article(2))))
    put(folder, "heads.csv.gz", gzip.compress(b"id,title\ng1,Zipped headline\n"))
    noise = os.urandom(3000).hex()  # hardly compressible: the cut below falls inside record 3
    put(folder, "truncated.jsonl.gz", gzip.compress(jsonl(article(3), article(4), article(5, text=noise)))[:-500])
    put(folder, "notgzip.jsonl.gz", jsonl(article(9)))
    return [folder]


def gzip_bomb(folder: Path) -> list[Path]:
    """4 GiB of blank lines (1 MiB each) in 4 MB: 64 gzip members of 64 MiB, which gzip reads as
    one stream; refused at 100 times its size, never decompressed whole."""
    member = gzip.compress((b" " * (MIB - 1) + b"\n") * 64, compresslevel=9)
    with open(folder / "bomb.jsonl.gz", "wb") as file:
        file.write(gzip.compress(jsonl(article(1))))
        for _ in range(64):
            file.write(member)
    return [folder]


def odd_paths(folder: Path) -> list[Path]:
    put(folder, "with space/a file.jsonl", jsonl(article(1)))
    put(folder, "çà-日本語/ünïcødé.txt", f"Titre\n{ARTICLE}".encode())
    name = os.fsencode(folder / "latin1-\xe9.txt").replace("\xe9".encode(), b"\xe9")  # not UTF-8
    with open(name, "wb") as file:
        file.write(f"Bytes name\n{ARTICLE}".encode())
    return [folder]


def unreadable(folder: Path) -> list[Path]:
    (folder / "folder.txt").mkdir()
    os.mkfifo(folder / "pipe.jsonl")  # reading a FIFO would wait forever for a writer
    (folder / "broken-link.csv").symlink_to(folder / "nowhere.csv")
    (folder / "loop.jsonl").symlink_to(folder / "loop.jsonl")
    locked = put(folder, "locked.txt", f"Locked\n{ARTICLE}".encode())
    locked.chmod(0)  # unreadable, unless the run is root
    return [folder]


def unreadable_expected() -> int:
    return 4 if os.geteuid() == 0 else 5


def path_ids(folder: Path) -> list[Path]:
    ids = ["../../etc/passwd", "/etc/passwd", "..", "out/../../x", "C:\\Windows\\system.ini", "a\x00b", ""]
    put(folder, "ids.jsonl", jsonl(*({"id": value, "title": f"Title {i}", "text": ARTICLE} for i, value in enumerate(ids))))
    return [folder]


def record_limit(folder: Path) -> list[Path]:
    put(folder, "feed.jsonl", jsonl(article(1), {"title": "long", "text": "z" * 5000}, article(3)))
    put(folder, "feed.csv", b"id,title\nc1,One\nc2," + b"z" * 5000 + b"\nc3,Three\n")
    return [folder]


@contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `prefect server start` on 127.0.0.1 and a free port, with its own PREFECT_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with servers.local_server_process(home / "server.log", env=env) as (url, server):
        yield url, server


def cli(paths: list[Path], out: Path, env: dict[str, str], server: subprocess.Popen[bytes] | None = None) -> str:
    """`python -m dedupe run`'s output; with `server`, that server is stopped as the flow begins.
    A non-zero exit raises."""
    command = [sys.executable, "-m", "dedupe", "run", *map(str, paths), "--out", str(out)]
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert run.stdout is not None
    output = []
    for line in run.stdout:
        output.append(line)
        if server is not None and "Beginning flow run" in line:
            servers.stop(server)
            break
    output.append(run.communicate(timeout=600)[0])
    if run.returncode != 0:
        raise RuntimeError(f"exit {run.returncode}: {''.join(output)[-500:]}")
    return "".join(output)


def run_losing_the_prefect_api(folder: Path, paths: list[Path], config: Config) -> Path:
    """The CLI against a real Prefect server stopped as soon as the flow begins: it must finish
    with a warning and the outputs of an undisturbed run; the next run must need nothing special."""
    out = folder / "run" / "out"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    with tempfile.TemporaryDirectory(prefix="faults-prefect-") as homes:
        with prefect_server(Path(homes) / "server") as (url, server):
            output = cli(paths, out, base | {"PREFECT_HOME": f"{homes}/client", "PREFECT_API_URL": url}, server)
        if f"warning: lost {url} during the run" not in " ".join(output.split()):  # rich wraps lines
            raise RuntimeError(f"no warning that the API was lost: {output[-500:]}")
        undisturbed = pipeline.run(paths, config)
        published = {"articles": write.read_articles(out), "stories": pl.read_parquet(out / "stories.parquet"), "pairs": pl.read_parquet(out / "pairs.parquet")}
        for name, table in published.items():
            if not table.equals(getattr(undisturbed, name)):
                raise RuntimeError(f"{name} differs from an undisturbed run's")
        rerun = cli(paths, out, base | {"PREFECT_HOME": f"{homes}/embedded"})
        if "warning: lost" in rerun:
            raise RuntimeError(f"the next run did not recover: {rerun[-500:]}")
    return out


def feed_with_a_bad_line(folder: Path) -> list[Path]:
    put(folder, "feed.jsonl", jsonl(article(1), article(2), {"id": "s", "title": "Another story", "text": "Short."})
        + b"{broken\n")
    return [folder]



# --- cases about the state: a run killed at each stage, two runs at once ------------------------

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
KILL_POINTS = ("load state", *pipeline.UPDATE_STAGES, "commit state", "publish outputs")
"""Where a run on a state is killed: as each step of `pipeline.run_on_state` is about to start."""
ANNOUNCED = "stage: "
TIMES_OF_A_RUN = ["run_at", "created_at", "merged_at"]
"""State columns saying when a run was: two runs of the same batches differ there and only there."""
PARQUET_OUTPUTS = ("articles.parquet", write.TEXTS_OUTPUT, "stories.parquet", "pairs.parquet")


def two_batches(folder: Path) -> list[Path]:
    """Two batch folders of seed slices: aeb versions of the same articles in both (so the
    second matches into the first's groups), headlines, and a malformed line in the second."""
    lines = (SEEDS / "aeb-sample.jsonl").read_text().splitlines()
    headlines = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False)
    put(folder, "batch-1/aeb.jsonl", "\n".join(lines[0:80:2]).encode() + b"\n")
    put(folder, "batch-2/aeb.jsonl", "\n".join(lines[1:80:2]).encode() + b"\n{broken\n")
    headlines.slice(0, 50).write_csv(folder / "batch-1" / "headlines.csv")
    headlines.slice(50, 50).write_csv(folder / "batch-2" / "headlines.csv")
    return [folder / "batch-1", folder / "batch-2"]


CHILDREN = multiprocessing.get_context("forkserver")
"""Where a `StagedRun` starts its child: forked from a server process that imported the pipeline
once, not a new interpreter importing it for each of the ~35 children of the state cases (about
2 s each on a 2-core machine; the children are still processes of their own, SIGKILLed alike)."""
CHILDREN.set_forkserver_preload(["dedupe.pipeline", __name__])


def run_announcing_stages(parent: Connection, out: Path, folder: Path, paths: list[Path], wait: bool, chunk: int) -> None:
    """`pipeline.run_on_state` in a child process that sends each step's name and each line it
    prints to `parent`, and runs a step only once its parent answers: the parent kills it at a
    step it chose, not wherever a timer lands."""
    def announced(name: str, function: Callable[..., object], *args: object) -> object:
        parent.send(ANNOUNCED + name)
        try:
            parent.recv()
        except EOFError:
            raise SystemExit("the parent is gone") from None
        return function(*args)

    try:
        pipeline.run_on_state(paths, out, folder, Config(chunk_records=chunk), wait, announced, log=parent.send, warn=parent.send)
    except StateError as error:
        parent.send(f"error: {error}")
        sys.exit(1)
    except Exception:
        parent.send(traceback.format_exc())
        raise


class StagedRun:
    """A run on a state in a child process (`run_announcing_stages`), step by step at our pace."""

    def __init__(self, out: Path, folder: Path, paths: list[Path], wait: bool = True, chunk: int = 0) -> None:
        self.connection, child = CHILDREN.Pipe()
        self.process = CHILDREN.Process(target=run_announcing_stages, args=(child, out, folder, paths, wait, chunk))
        self.process.start()
        child.close()  # the child's end lives on in the child alone: its exit ends our reads
        self.output: list[str] = []
        self.steps: list[str] = []
        self.paused = False

    def until(self, stage: str | None = None, text: str | None = None, occurrence: int = 1) -> bool:
        """Let the run go on until it announces `stage` (not yet run) for the `occurrence`-th
        time (a run in chunks runs most steps once per chunk) or prints `text`; False if it
        ended first."""
        if self.paused:
            self._go_on()
        while True:
            try:
                line = self.connection.recv()
            except EOFError:
                return False
            self.output.append(line + "\n")
            if text is not None and text in line:
                return True
            if line.startswith(ANNOUNCED):
                self.steps.append(line.removeprefix(ANNOUNCED).strip())
                if self.steps[-1] == stage and self.steps.count(stage) == occurrence:
                    self.paused = True
                    return True
                self._go_on()

    def _go_on(self) -> None:
        with suppress(BrokenPipeError):  # it ended: the next read says so
            self.connection.send(None)
        self.paused = False

    def finish(self) -> int | None:
        self.until()
        self.process.join(timeout=600)
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=60)
        self.connection.close()

    @property
    def text(self) -> str:
        return "".join(self.output)


def run_directly(paths: list[Path], out: Path, chunk: int = 0) -> None:
    pipeline.run_on_state(paths, out, out / "state", Config(chunk_records=chunk), warn=lambda _: None)


def file_hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative path: the sha256 of its bytes, or a symlink's target."""
    hashes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            key = str(path.relative_to(folder))
            hashes[key] = f"-> {os.readlink(path)}" if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def state_tables(folder: Path) -> dict[str, pl.DataFrame]:
    """Every table of the current generation (Parquet, and the records' texts in Arrow IPC), less
    the times of the runs."""
    current = (folder / "current").resolve()
    readers = {".parquet": pl.read_parquet, ".arrow": pl.read_ipc}
    return {str(path.relative_to(current)): readers[path.suffix](path).drop(TIMES_OF_A_RUN, strict=False)
            for path in sorted(current.rglob("*")) if path.suffix in readers}


def outside_state(hashes: dict[str, str]) -> dict[str, str]:
    return {name: digest for name, digest in hashes.items() if not name.startswith("state/")}


def differing_state(folder: Path, reference: Path) -> list[str]:
    """State tables that differ from the reference state's, the times of the runs aside."""
    tables, expected = state_tables(folder), state_tables(reference)
    if tables.keys() != expected.keys():
        return [f"the state has tables {sorted(tables)}, an undisturbed run's {sorted(expected)}"]
    return [f"state {name} differs from an undisturbed run's" for name, table in tables.items()
            if not table.equals(expected[name])]


def differing_outputs(out: Path, reference: Path, compare_bytes: bool = True) -> list[str]:
    """Output tables that differ from the reference run's: as frames, then byte for byte (polars
    writes the same bytes for the same frame: the check says so each time it passes)."""
    problems = []
    for name in PARQUET_OUTPUTS:
        if not pl.read_parquet(out / name).equals(pl.read_parquet(reference / name)):
            problems.append(f"{name} differs from an undisturbed run's")
        elif compare_bytes and _bytes(out / name) != _bytes(reference / name):
            problems.append(f"{name} has the same frame as an undisturbed run's, but not the same bytes")
    return problems


def _bytes(path: Path) -> bytes:
    """A file's bytes; a folder's (the texts' parts) those of its parts in order."""
    return b"".join(part.read_bytes() for part in sorted(path.glob("*.parquet"))) if path.is_dir() else path.read_bytes()


def killed_at_each_stage(folder: Path, paths: list[Path], config: Config, chunk: int = 0) -> Path:
    """Batch 1 makes a state; batch 2 is run in a child killed (SIGKILL) as each step is about to
    start. After each kill, OUT and the state are byte for byte as before (the lock file aside,
    which keeps the dead run's pid until the next run), except a kill before publishing, which
    leaves the run committed and OUT as before; the rerun gives the outputs of an undisturbed
    run of both batches, byte for byte. With `chunk`, batch 2 runs in chunks of that many
    records and is killed at each step of the last chunk and at each commit and load between
    chunks (`_chunk_kill_points`): the generations committed for earlier
    chunks are left beside the current one, never made current, and the next run removes them."""
    out = folder / "run" / "out"
    first, second = paths
    run_directly([first], out, chunk)
    problems = []
    with tempfile.TemporaryDirectory(prefix="faults-killed-") as scratch:
        reference, pristine = Path(scratch) / "reference", Path(scratch) / "pristine"
        run_directly([first], reference, chunk)
        shutil.copytree(reference, pristine, symlinks=True)
        undisturbed = StagedRun(pristine, pristine / "state", [second], chunk=chunk)
        undisturbed.finish()
        shutil.rmtree(pristine)
        run_directly([second], reference, chunk)
        steps = [(step, undisturbed.steps[: n + 1].count(step)) for n, step in enumerate(undisturbed.steps)]
        if not chunk and [step for step, _ in steps] != list(KILL_POINTS):
            problems.append(f"the run's steps are {[step for step, _ in steps]}, not {list(KILL_POINTS)}")
        if chunk:
            steps = _chunk_kill_points(steps)
        shutil.copytree(out, pristine, symlinks=True)
        current = os.readlink(out / "state" / "current")
        for stage, occurrence in steps:
            where = f"{stage} ({occurrence})" if chunk else stage
            shutil.rmtree(out)
            shutil.copytree(pristine, out, symlinks=True)
            before = file_hashes(out)
            killed = StagedRun(out, out / "state", [second], chunk=chunk)
            if not killed.until(stage, occurrence=occurrence):
                problems.append(f"{where}: the run ended before it: {killed.text[-300:]}")
                continue
            killed.kill()
            after = file_hashes(out)
            lock = (out / "state" / "lock").read_text()
            if lock not in ("", f"pid {killed.process.pid}\n"):
                problems.append(f"{where}: the lock file says {lock!r}")
            if stage == "publish outputs":  # committed already: OUT alone must be as before
                before, after = outside_state(before), outside_state(after)
            unused = f"state/{Path(current).parent}/"  # generations a killed run in chunks left unused
            changed = [name for name in differences(before, after)
                       if name != "state/lock" and not (name.startswith(unused) and name not in before)]
            if changed:
                problems.append(f"killed at {where}: changed {', '.join(changed[:5])}")
            if stage != "publish outputs" and os.readlink(out / "state" / "current") != current:
                problems.append(f"killed at {where}: current moved")
            run_directly([second], out, chunk)
            rerun = [*differing_outputs(out, reference), *differing_state(out / "state", reference / "state")]
            if chunk and len(list((out / "state" / "generations").iterdir())) != 1:
                rerun.append("generations other than the current one were left")
            problems += [f"rerun after a kill at {where}: {problem}" for problem in rerun]
    if problems:
        raise RuntimeError("; ".join(problems))
    return out


def _chunk_kill_points(steps: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The steps of a run in chunks worth a kill: each load and commit, the first stage of the last
    chunk, and publishing. Only commits and publishing write (and the stages that write a chunk's
    texts and story parts ahead of its commit, into generations/.ahead-*, and, on worker
    processes, the next chunk's first pass, into generations/.first-pass-*, which the next load
    removes as it removes an uncommitted generation; these runs are in one process), so every kill between two writes
    finds the same files and the rerun starts from them: one stage of the last chunk stands for
    all of them (an earlier generation committed and not current beside the state), as
    `killed-at-stage` kills an unchunked run at every stage. Killing at every stage of the last
    chunk made 22 kills; 138 s of the CI suite's 751 s on the shared 2-core machine."""
    last_read = max(n for n, (step, _) in enumerate(steps) if step == "read")
    first_stage = next(n for n, (step, _) in enumerate(steps) if n > last_read and step != "read")
    return [(step, occurrence) for n, (step, occurrence) in enumerate(steps)
            if n == first_stage or step in ("commit state", "load state", "publish outputs")]


def killed_in_chunks(folder: Path, paths: list[Path], config: Config) -> Path:
    """`killed_at_each_stage` with batch 2 (91 records) in chunks of 40."""
    return killed_at_each_stage(folder, paths, config, chunk=40)


def two_runs_at_once(folder: Path, paths: list[Path], config: Config) -> Path:
    """Batch 1 makes a state; two runs of batch 2 start on it while a third holds the lock: with
    wait the second waits and then finds nothing new, without wait the third stops naming the
    holder; the state is the one a single run of batch 2 leaves."""
    out = folder / "run" / "out"
    first, second = paths
    run_directly([first], out)
    problems = []
    holder = StagedRun(out, out / "state", [second])
    waiting = no_wait = None
    try:
        if not holder.until("load state"):  # paused there, it holds the lock
            raise RuntimeError(f"the first run ended before loading the state: {holder.text[-300:]}")
        waiting = StagedRun(out, out / "state", [second])
        if not waiting.until(text="waiting for it to end"):
            problems.append(f"the second run did not wait: {waiting.text[-300:]}")
        no_wait = StagedRun(out, out / "state", [second], wait=False)
        expected = f"in use by another run (pid {holder.process.pid})"
        if no_wait.finish() != 1 or expected not in no_wait.text:
            problems.append(f"the --no-wait run did not stop saying {expected!r}: {no_wait.text[-300:]}")
        if holder.finish() != 0:
            problems.append(f"the first run failed: {holder.text[-300:]}")
        if waiting.finish() != 0 or "nothing new" not in waiting.text:
            problems.append(f"the second run did not finish finding nothing new: {waiting.text[-300:]}")
    finally:
        for run in (holder, waiting, no_wait):
            if run is not None and run.process.is_alive():
                run.kill()
    with tempfile.TemporaryDirectory(prefix="faults-at-once-") as scratch:
        reference = Path(scratch)
        run_directly([first], reference)
        run_directly([second], reference)
        problems += [*differing_outputs(out, reference), *differing_state(out / "state", reference / "state")]
    if problems:
        raise RuntimeError("; ".join(problems))
    return out


CASES = [
    Case("binary", "binary files with .txt, .jsonl, .csv names", binary_files, 3, 3, expect_reasons("binary content")),
    Case("empty", "empty files, blank lines only, whitespace-only records", empty_input, 7, 7,
         expect_reasons("empty file", "empty record")),
    Case("encodings", "Latin-1, cp1252, cp1251, Shift-JIS, UTF-16 with and without BOM, bad UTF-8 lines",
         encodings, 8, 0, all_of(titles_decoded, expect_notes("encoding guessed: cp1251", "invalid UTF-8"))),
    Case("controls", "NUL bytes and control characters in JSONL, CSV and text; lone surrogates",
         control_characters, 4, 0, no_control_characters),
    Case("jsonl", "malformed lines in the middle, a truncated last line", broken_jsonl, 6, 4,
         expect_reasons("feed.jsonl:2: malformed JSON line", "feed.jsonl:3: JSON record is an array",
                        "feed.jsonl:6: malformed JSON line")),
    Case("csv", "ragged rows, an unclosed quote, a stray quote, a BOM", broken_csv, 10, 4,
         expect_reasons("ragged.csv:3: CSV row has 3 fields", "quotes.csv:2: malformed CSV row",
                        "quotes.csv:5: malformed CSV row")),
    Case("json-shape", "JSON that is not an object or array of objects", json_not_object, 7, 6,
         expect_reasons("JSON top level is a string", "JSON record is a number")),
    Case("json-limit", "a JSON document over max_json_bytes", json_too_big, 1, 1, expect_reasons("max_json_bytes"),
         {"max_json_bytes": 4096}),
    Case("record-limit", "records over max_record_bytes in JSONL and CSV", record_limit, 6, 2,
         expect_reasons("feed.jsonl:2: record of", "feed.csv:3: record of"),
         {"max_record_bytes": 4096}),
    Case("ids", "the same id in two files, and an id that is already x~2", same_id, 4, 0, ids_unique_and_clash_noted),
    Case("html", "broken markup, 20,000 nested divs, entity bombs, 100,000 paragraphs", bad_html, 4, 2,
         expect_reasons("nested.html:1: no article text", "many-tags.html:1: HTML has 100,0")),
    Case("gzip", "gzip input, a truncated gzip, a .gz that is not gzip", gzip_input, 7, 2,
         expect_reasons("truncated.jsonl.gz:3: cannot read", "notgzip.jsonl.gz:1: cannot read")),
    Case("gzip-bomb", "4 GiB of blank lines in a 4 MB gzip, after one record", gzip_bomb, 2, 1, expect_reasons("gzip bomb")),
    Case("paths", "spaces, non-ASCII and non-UTF-8 file names", odd_paths, 3, 0),
    Case("unreadable", "a folder named .txt, a FIFO, broken and looping symlinks, a mode-000 file", unreadable,
         5, unreadable_expected(), expect_reasons("not a regular file", "No such file", "symbolic links")),
    Case("path-ids", "ids such as ../../etc/passwd", path_ids, 7, 0),
    Case("long-line", "a 200 MB line in JSONL and CSV, a 200 MB text file", long_line, 7, 3,
         expect_reasons("feed.jsonl:2: record of 209,715,2", "feed.csv:3: record of", "page.txt:1: file is larger"),
         slow=True),
    Case("2GB", "a 2 GB JSONL file: 1,000 records and 50 of 40 MiB", two_gigabytes, 1050, 50,
         expect_reasons("day.jsonl:2: record of"), slow=True),
    Case("prefect-api-lost", "the Prefect server stopped as the flow begins; then a rerun", feed_with_a_bad_line,
         4, 1, expect_reasons("feed.jsonl:4: malformed JSON line"), slow=True, run=run_losing_the_prefect_api),
    Case("killed-at-stage", f"a second batch SIGKILLed at each of {len(KILL_POINTS)} steps, then rerun",
         two_batches, 181, 1, expect_reasons("aeb.jsonl:41: malformed JSON line"), run=killed_at_each_stage),
    Case("killed-in-chunks", "the same, batch 2 in 3 chunks, killed at each load and commit, in the last chunk and at publishing",
         two_batches, 181, 1, expect_reasons("aeb.jsonl:41: malformed JSON line"), run=killed_in_chunks),
    Case("two-at-once", "two runs of a batch on one state while a third holds it, with and without wait",
         two_batches, 181, 1, expect_reasons("aeb.jsonl:41: malformed JSON line"), run=two_runs_at_once),
]


# --- running a case -----------------------------------------------------------------------------

def run_pipeline(folder: Path, paths: list[Path], config: Config) -> Path:
    out = folder / "run" / "out"
    result = pipeline.run(paths, config)
    write.write_outputs(out, result.articles, result.stories, result.pairs, result.summary)
    return out


def run_case(case: Case, folder: Path) -> Outcome:
    """Build the case's input in `folder/in`, run it, and check what it wrote."""
    inputs = folder / "in"
    inputs.mkdir(parents=True)
    paths = case.build(inputs)
    started = time.perf_counter()
    out = (case.run or run_pipeline)(folder, paths, Config().with_overrides(**case.settings))
    seconds = time.perf_counter() - started
    articles = write.read_articles(out)
    rejected = articles.filter(pl.col("status") == "rejected")
    problems = [
        *([f"{articles.height} rows out for {case.records} records in"] if articles.height != case.records else []),
        *([f"{rejected.height} rejected, expected {case.rejected}"] if rejected.height != case.rejected else []),
        *unlocated(rejected),
        *([] if articles["article_id"].n_unique() == articles.height else ["article ids are not unique"]),
        *stray_files(folder, inputs, out),
        *case.check(articles),
    ]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Outcome(case.name, case.records, articles.height, rejected.height, case.rejected, peak, seconds, problems)


def unlocated(rejected: pl.DataFrame) -> list[str]:
    """Rejected rows whose reason does not start with their own file and line and say why."""
    bad = [
        reason
        for source_file, line, reason in rejected.select("source_file", "line", "reason").iter_rows()
        if not (line >= 1 and reason.startswith(f"{source_file}:{line}: ") and len(reason) > len(f"{source_file}:{line}: "))
    ]
    return [f"reason without file and line: {reason!r}" for reason in bad[:3]]


def stray_files(folder: Path, inputs: Path, out: Path) -> list[str]:
    """Anything the run wrote outside its output folder, or other than the five outputs (the
    texts' parts: the version the symlink names and the one before, `write.publish_folder`) and
    its history (OUT/state)."""
    versions = sorted(write.versions_of(out / write.TEXTS_OUTPUT).glob("*"))
    expected = {out / name for name in ("articles.parquet", "stories.parquet", "pairs.parquet", "report.md")}
    expected |= {part for version in versions[-2:] for part in version.glob("part-*.parquet")}
    expected |= {out / write.TEXTS_OUTPUT / part.name for part in (out / write.TEXTS_OUTPUT).glob("part-*.parquet")}
    written = {Path(root) / name for root, _, names in os.walk(folder) for name in names} - expected
    stray = [path for path in written if not path.is_relative_to(inputs) and not path.is_relative_to(out / "state")]
    return [f"wrote {path}" for path in sorted(stray)]


def run_isolated(case: Case, timeout: float = 600) -> Outcome:
    """The case in a fresh process (its own peak memory; a hang is a failure, not a stuck table)."""
    with tempfile.TemporaryDirectory(prefix=f"faults-{case.name}-") as folder:
        command = [sys.executable, __file__, "--child", case.name, folder]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Outcome(case.name, case.records, 0, 0, case.rejected, 0, timeout, [f"no result in {timeout:.0f} s"])
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            return Outcome(case.name, case.records, 0, 0, case.rejected, 0, 0, [f"crashed: {last}"])
        return Outcome(**json.loads(done.stdout.strip().splitlines()[-1]))


def read_memory(megabytes: int) -> None:
    """Peak memory of the read stage alone on `megabytes` of valid JSONL, in a fresh process."""
    from dedupe.read import read

    with tempfile.TemporaryDirectory(prefix="faults-read-") as folder:
        path = Path(folder) / "valid.jsonl"
        with open(path, "wb") as file:
            number = 0
            while file.tell() < megabytes * MIB:
                file.write(jsonl(*(article(number + i, text=f"{ARTICLE} {number + i}" * 20) for i in range(1000))))
                number += 1000
        size = path.stat().st_size / MIB
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        frame = read([path])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"read {size:.0f} MiB of valid JSONL ({frame.height:,} records): peak RSS {peak:,.0f} MiB "
              f"(before reading {before:,.0f} MiB), frame {frame.estimated_size() / MIB:,.0f} MiB, "
              f"{(peak - before) / size:.2f} MiB per MiB read")


def pipeline_memory(paths: list[Path]) -> None:
    """Peak memory of the whole pipeline (no Prefect) on `paths`, against their size."""
    size = sum(path.stat().st_size for given in paths for path in ([given] if given.is_file() else given.rglob("*"))
               if path.is_file()) / MIB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = pipeline.run(paths, Config())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pipeline on {size:,.1f} MiB ({result.articles.height:,} records): peak RSS {peak:,.0f} MiB "
          f"(before {before:,.0f} MiB), {(peak - before) / size:.1f} MiB per MiB of input")


ENCODING_SAMPLES = [
    ("cp1252", "Café owners say the “new rules” – announced Monday – will cost €2,000 a year. Naïve, says Zoë."),
    ("latin-1", "Le ministre a déclaré que la réforme était nécessaire à l'économie française, selon Le Monde."),
    ("cp1251", "Президент России заявил в понедельник, что новые санкции не повлияют на экономику страны."),
    ("shift_jis", "東京都は月曜日、新しい規則を発表した。経済への影響が懸念されている。"),
    ("utf-16-le", "A headline without a byte order mark, in UTF-16."),
]


def print_encodings() -> None:
    """Does the text decode back as it was written: charset-normalizer alone, and our guess."""
    import charset_normalizer

    from dedupe.read import guess_encoding

    def decodes(data: bytes, codec: str | None, text: str) -> str:
        return "yes" if codec and data.decode(codec, errors="replace") == text else "no"

    print(f"\n{'written as':<11} {'charset-normalizer':<24} {'dedupe.read.guess_encoding':<28}")
    for encoding, text in ENCODING_SAMPLES:
        data = text.encode(encoding)
        alone = charset_normalizer.from_bytes(data).best()
        ours, _ = guess_encoding(data)
        alone_name = alone.encoding if alone else None
        print(f"{encoding:<11} {f'{alone_name}: {decodes(data, alone_name, text)}':<24} {f'{ours}: {decodes(data, ours, text)}':<28}")


def print_table(outcomes: list[Outcome]) -> None:
    header = f"{'case':<17} {'records in':>10} {'rows out':>9} {'rejected':>8} {'peak MiB':>9} {'s':>6}  result"
    print(header)
    print("-" * len(header))
    for o in outcomes:
        result = "pass" if o.passed else "FAIL: " + "; ".join(o.problems)
        print(f"{o.case:<17} {o.records:>10,} {o.rows:>9,} {o.rejected:>8,} {o.peak_mib:>9,.0f} {o.seconds:>6.1f}  {result}")
    print(f"\n{sum(o.passed for o in outcomes)} of {len(outcomes)} cases pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    parser.add_argument("--quick", action="store_true", help="skip the slow cases: a 200 MB line, a 2 GB file, a Prefect server")
    parser.add_argument("--read-memory", type=int, metavar="MB", help="measure the read stage on MB of valid JSONL")
    parser.add_argument("--pipeline-memory", nargs="+", type=Path, metavar="PATH",
                        help="measure the whole pipeline on these inputs")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, folder = args.child
        print(json.dumps(asdict(run_case(next(c for c in CASES if c.name == name), Path(folder)))))
        return
    if args.read_memory:
        read_memory(args.read_memory)
        return
    if args.pipeline_memory:
        pipeline_memory(args.pipeline_memory)
        return
    cases = [c for c in CASES if (not args.case or c.name in args.case) and not (args.quick and c.slow)]
    for case in cases:
        print(f"{case.name}: {case.what}", file=sys.stderr)
    outcomes = [run_isolated(case) for case in cases]
    print_table(outcomes)
    print_encodings()
    sys.exit(0 if all(o.passed for o in outcomes) else 1)


if __name__ == "__main__":
    main()
