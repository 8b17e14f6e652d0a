"""Every bad-input case of benchmarks/faults.py, with its expectations: records in = rows out,
the expected rejected rows each naming file and line, unique ids, nothing written outside --out;
and the state cases: a run killed at each stage, two runs at once.
The slow cases (a 200 MB line, a 2 GB file, a Prefect server stopped mid-run) run in a process
of their own, which also measures its peak memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults import CASES, Case, run_case, run_isolated

PEAK_MEMORY_MIB = 2048


@pytest.mark.parametrize("case", [case for case in CASES if not case.slow], ids=lambda case: case.name)
def test_bad_input_case(case: Case, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path)
    assert outcome.problems == []
    assert outcome.rows == case.records


@pytest.mark.parametrize("case", [case for case in CASES if case.slow], ids=lambda case: case.name)
def test_slow_case_in_its_own_process_within_memory(case: Case) -> None:
    outcome = run_isolated(case)
    assert outcome.problems == []
    assert 0 < outcome.peak_mib < PEAK_MEMORY_MIB
