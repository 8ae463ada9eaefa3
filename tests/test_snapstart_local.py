"""SnapStart in the local runner with a real checkpoint: the stand-in's seam on CRIU (local.snapstart).

The probe handler of tests/test_runtime_api.py runs under the project's
runtime loop with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``. Its init is
checkpointed while it waits on ``/runtime/restore/next``; every execution
environment is then a restored copy: the first one, and the one that replaces
it after it crashed, without a second init. Needs root and CRIU, which the
fixture builds with scripts/build-criu.sh when it is missing (as
tests/test_checkpoint.py does); it fails, never skips, when neither works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.lambda_logs import parse_log
from local.runtime_api import LocalFunction
from local.snapstart import CriuSnapshots
from tests.test_runtime_api import HANDLER, make_function

pytestmark = pytest.mark.slow


@pytest.fixture
def function(criu: None, tmp_path: Path) -> Iterator[LocalFunction]:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "handler.py").write_text(HANDLER)
    (tmp_path / "gates").mkdir()
    plain = make_function(tmp_path, snap_start=True)
    snapshots = CriuSnapshots(tmp_path)
    with LocalFunction(plain.spec, plain.log_path, snap_start=True, snapshots=snapshots) as running:
        yield running


def call(function: LocalFunction, action: str) -> dict[str, object]:
    outcome = function.invoke(json.dumps({"action": action}).encode()).result()
    return {"error": outcome.error.error_type if outcome.error else None, "payload": outcome.payload()}


def test_every_environment_is_a_restored_copy_of_one_init(function: LocalFunction, tmp_path: Path) -> None:
    # Given a SnapStart function whose snapshot is a real checkpoint
    # When it is invoked, its runtime crashes, and it is invoked again
    first = call(function, "pid")
    crashed = call(function, "exit")
    second = call(function, "pid")
    records = parse_log(function.log_path.read_text(errors="replace").splitlines())
    # Then both environments answered, each a different process restored from the one checkpoint
    assert first["error"] is None
    assert crashed["error"] == "Runtime.ExitError"
    assert second["error"] is None
    assert isinstance(first["payload"], dict)
    assert isinstance(second["payload"], dict)
    assert first["payload"]["pid"] == second["payload"]["pid"]  # PID 1 of its namespace, both times
    assert function.environments == 2
    # And the init ran once: one snap-start init and its before-snapshot hook, an after-restore per copy
    assert (tmp_path / "gates" / "lifecycle.log").read_text().splitlines() == [
        "init snap-start",
        "before-snapshot",
        "after-restore",
        "after-restore",
    ]
    assert [(init.phase, init.status) for init in records.inits] == [("init", "success")]
    restored = [report for report in records.reports if report.restore_ms is not None]
    assert len(restored) == 2
    assert all(report.init_ms is None for report in records.reports)
