"""Against a real Prefect server (`prefect server start` on 127.0.0.1, its own PREFECT_HOME):
two scheduled-style runs complete with their artifacts, and `serve` registers a deployment
with its schedule whose runs complete."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import polars as pl
import pytest

from dedupe import state
from flows import server
from tests.conftest import ROOT, SEEDS, prefect_env


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("batches")
    headlines = pl.read_csv(SEEDS / "headlines-sample.csv", infer_schema=False).sort("published_at", "id")
    (folder / "one").mkdir(), (folder / "two").mkdir()
    headlines.head(100).write_csv(folder / "one" / "headlines.csv")
    headlines.tail(70).write_csv(folder / "two" / "headlines.csv")
    return folder / "one", folder / "two"


def wait_for(what: str, check: object, timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()  # type: ignore[operator]
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what}: not seen in {timeout:.0f} s")


def finished(api: str, run_id: str) -> str | None:
    """The run's final state type, or None while it is not final."""
    state_type = server.request(api, "GET", f"/flow_runs/{run_id}")["state_type"]
    return state_type if state_type in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


def test_two_runs_on_two_batches_complete_with_their_artifacts(
    prefect_api: str, batches: tuple[Path, Path], tmp_path: Path
) -> None:
    for batch in batches:
        result = subprocess.run(
            [sys.executable, "-m", "dedupe", "run", str(batch), "--out", str(tmp_path / "out")],
            cwd=ROOT, env=prefect_env(tmp_path / "client-home", prefect_api), capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    everyone = server.request(prefect_api, "POST", "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC"})
    runs = [run for run in everyone if run["parameters"].get("out") == str(tmp_path / "out")]  # the server is shared
    assert [run["state_type"] for run in runs] == ["COMPLETED", "COMPLETED"]
    task_names = {task["name"].rsplit("-", 1)[0] for task in server.request(prefect_api, "POST", "/task_runs/filter", {})}
    assert {"read", "new records", "normalize and clean", "cluster stories", "commit state", "publish outputs"} <= task_names
    reports = []
    for run in runs:
        of_run = {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
        artifacts = server.request(prefect_api, "POST", "/artifacts/filter", of_run)
        by_key = {artifact["key"]: artifact for artifact in artifacts}
        assert {"dedupe-report", "dedupe-stories", "dedupe-progress"} <= set(by_key)
        assert "## This run" in by_key["dedupe-report"]["data"]
        reports.append(by_key["dedupe-report"]["data"])
    assert "| new | 70 |" in reports[1]  # the second batch, matched against the first


def test_serve_registers_the_schedule_and_its_runs_complete(
    prefect_api: str, batches: tuple[Path, Path], tmp_path: Path
) -> None:
    serving = subprocess.Popen(
        [sys.executable, "-m", "dedupe", "serve", str(batches[0]), "--out", str(tmp_path / "out"), "--every", "15m",
         "--name", "test-schedule", "--set", "top_stories=2"],
        cwd=ROOT, env=prefect_env(tmp_path / "client-home", prefect_api), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deployment = wait_for(
            "deployment",
            lambda: server.request(
                prefect_api, "POST", "/deployments/filter", {"deployments": {"name": {"any_": ["test-schedule"]}}}
            ),
        )[0]
        assert [s["schedule"]["interval"] for s in deployment["schedules"]] == [900.0]
        assert deployment["parameters"]["settings"] == ["top_stories=2"]
        run = server.request(prefect_api, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})
        final = wait_for("the run's end", lambda: finished(prefect_api, run["id"]))
        assert final == "COMPLETED"
        assert pl.read_parquet(tmp_path / "out" / "articles.parquet").height == 100
        largest = (tmp_path / "out" / "report.md").read_text().split("## Largest stories")[1]
        assert largest.count("| story-") == 2  # the deployment's settings reached the run
    finally:
        server.stop(serving)  # type: ignore[arg-type]


def test_a_run_on_a_state_in_use_stops_with_a_clear_message(
    prefect_api: str, batches: tuple[Path, Path], tmp_path: Path
) -> None:
    with state.locked(tmp_path / "out" / "state"):
        result = subprocess.run(
            [sys.executable, "-m", "dedupe", "run", str(batches[0]), "--out", str(tmp_path / "out"), "--no-wait"],
            cwd=ROOT, env=prefect_env(tmp_path / "client-home", prefect_api), capture_output=True, text=True, timeout=600,
        )
    assert result.returncode == 1
    assert "is in use by another run (pid" in " ".join(result.stdout.split())
    assert not (tmp_path / "out" / "articles.parquet").exists()


def test_a_retryable_status_is_asked_again_and_any_other_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's server answers 503 to what a client may retry (SQLite busy while two served
    flows write at once, seen in CI): `server.request` asks again, as Prefect's client does; a 404
    is an answer and is raised at once."""
    answers = {"/busy": [503, 503, 200], "/missing": [404, 200]}
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            asked.append(self.path)
            code = answers[self.path].pop(0)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"ok": true}' if code == 200 else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    monkeypatch.setattr(server.time, "sleep", lambda _: None)
    with http.server.HTTPServer(("127.0.0.1", 0), Handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        api = f"http://127.0.0.1:{httpd.server_port}"
        assert server.request(api, "POST", "/busy", {}) == {"ok": True}
        with pytest.raises(urllib.error.HTTPError, match="404"):
            server.request(api, "POST", "/missing", {})
        httpd.shutdown()
    assert asked == ["/busy"] * 3 + ["/missing"]
