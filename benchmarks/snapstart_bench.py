"""SnapStart with a real checkpoint against a cold start, on `make local`'s runner, for one function.

Two copies of the function run side by side under ``local.stack.LocalStack``:

* **SnapStart**: initialised once with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``;
  while it waits on ``/runtime/restore/next`` CRIU checkpoints it
  (``local.snapstart.CriuSnapshots``, CRIU 4.1.1 from ``scripts/build-criu.sh``,
  root needed) and every new execution environment after that is a copy
  restored from that image;
* **cold**: the same function on demand, every new environment initialising
  (process start, imports, model load, warm-up) as a cold start does.

Each round ends the current environment of both (SIGKILL to its runtime, as
Lambda ends an idle one) and times one invoke on each, alternating which goes
first: from sending the invoke to its answer, which is the first token (one
generated token) or the first vector. That is the restore (or the init) plus
the first request. Every time is read by the runner's clock: a restored copy's
monotonic clock goes on from the checkpoint (docs/snapstart-local.md), so no
figure is taken from inside it.

Without CRIU (not root, not built, ``criu check`` failing), or when the
checkpoint run fails, the figures are None and ``snapstart_unavailable`` says
why; the rest of the bench goes on.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.stats import median_or_none, summarize
from local.stack import RunningFunction

Progress = Callable[[str], None]

METHOD = (
    "local.stack.LocalStack, two copies of the function: SnapStart (init once with "
    "AWS_LAMBDA_INITIALIZATION_TYPE=snap-start, CRIU 4.1.1 checkpoint at /runtime/restore/next, every "
    "new environment a restored copy: local.snapstart.CriuSnapshots) and on demand (every new environment "
    "initialises). Each round SIGKILLs both environments and times one invoke on each, alternating, by the "
    "runner's wall clock from sending it to the answer (one generated token / one vector): restore + first "
    "request against init + first request. init_s: the SnapStart init (INIT_REPORT), by the runner."
)


def unavailable_reason() -> str | None:
    """None when a real checkpoint can run here; else why not."""
    from local import checkpoint

    ok, why = checkpoint.available()
    return None if ok else why


def unavailable(key: str, reason: str) -> dict[str, Any]:
    """The keys a run without a checkpoint records: None figures and the reason."""
    return {
        "init_s": None,
        "restore_to_first_token_s": None,
        "cold_first_token_s": None,
        "restore_vs_cold_first_token": None,
        "snapstart_unavailable": f"{key}: no real checkpoint: {reason}",
        "snapstart_method": METHOD,
    }


@contextmanager
def _stack(
    key: str, options: Any, log_dir: Path, snapshots: Callable[[], Any] | None
) -> Iterator[RunningFunction]:
    from local.functions import build_plans
    from local.stack import LocalStack

    lines: list[str] = []
    stack = LocalStack(
        build_plans(options, echo=lines.append), echo=lines.append, log_dir=log_dir, snapshots=snapshots
    )
    with stack:
        yield stack.functions[key]


def _options(key: str, *, snap_start: bool, model: dict[str, Any], environment: dict[str, str]) -> Any:
    from local.functions import LocalOptions

    return LocalOptions(
        only=key,  # type: ignore[arg-type]  # "llama" or "embeddings"
        llama_invoke_port=0,
        llama_url_port=0,
        embeddings_invoke_port=0,
        embeddings_url_port=0,
        snap_start={key: snap_start},
        extra_environment={key: environment},
        **model,
    )


def end_environment(function: RunningFunction, timeout_s: float = 30) -> None:
    """SIGKILL the runtime this runner started for the current environment; wait until it is gone."""
    for pid in function.runtime_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout_s
    while function.runtime_pids():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{function.key}: the runtime did not end within {timeout_s} s of SIGKILL")
        time.sleep(0.02)


def first_result(function: RunningFunction, payload: dict[str, Any], expect: str) -> float:
    """Seconds from sending one direct invoke to its whole answer; checks how the environment started.

    ``expect``: ``restored`` (a copy from the snapshot, or the SnapStart init's own restore) or ``cold``.
    """
    started = time.perf_counter()
    outcome = function.function.invoke(json.dumps(payload).encode()).result()
    seconds = time.perf_counter() - started
    if outcome.error is not None:
        raise RuntimeError(f"{function.key}: the {expect} invoke failed: {outcome.error.message}")
    env = function.function.environment()
    kind = env.kind if env is not None else None
    wanted = ("restore", "snap-start") if expect == "restored" else ("on-demand",)
    if kind not in wanted:
        raise RuntimeError(f"{function.key}: expected a {expect} environment, got {kind}")
    answer = outcome.payload()
    if isinstance(answer, dict) and "timings" in answer and answer["timings"].get("start") != expect:
        raise RuntimeError(f"{function.key}: the handler says {answer['timings'].get('start')}, not {expect}")
    return seconds


def run(
    key: str,
    model: dict[str, Any],
    environment: dict[str, str],
    payload: Callable[[int], dict[str, Any]],
    *,
    repeats: int,
    log_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Restore-to-first-result against cold-start-to-first-result for function ``key``.

    ``model`` holds the LocalOptions fields that choose the model (and memory);
    ``payload(n)`` is the n-th direct invoke (each different, so no cache helps).
    """
    reason = unavailable_reason()
    if reason is not None:
        progress(f"{key}: SnapStart not measured: {reason}")
        return unavailable(key, reason)
    try:
        return _measure(key, model, environment, payload, repeats=repeats, log_dir=log_dir, progress=progress)
    except Exception as exc:  # the rest of the bench is still worth having: say what failed, loudly
        reason = f"the checkpoint/restore run failed: {type(exc).__name__}: {exc} (logs in {log_dir})"
        progress(f"{key}: SnapStart not measured: {reason}")
        return unavailable(key, reason)


def _measure(
    key: str,
    model: dict[str, Any],
    environment: dict[str, str],
    payload: Callable[[int], dict[str, Any]],
    *,
    repeats: int,
    log_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    from local.snapstart import CriuSnapshots

    made: list[CriuSnapshots] = []

    def snapshots() -> CriuSnapshots:
        made.append(CriuSnapshots())
        return made[-1]

    restore: list[float] = []
    cold: list[float] = []
    restore_ms: list[float | None] = []
    cold_init_ms: list[float | None] = []
    with ExitStack() as stack:
        snap = stack.enter_context(
            _stack(
                key,
                _options(key, snap_start=True, model=model, environment=environment),
                log_dir / "snapstart",
                snapshots,
            )
        )
        demand = stack.enter_context(
            _stack(
                key,
                _options(key, snap_start=False, model=model, environment=environment),
                log_dir / "cold",
                None,
            )
        )
        first = first_result(snap, payload(0), "restored")  # init, checkpoint, first restore
        env = snap.function.environment()
        init_ms = env.init_ms if env is not None else None
        progress(
            f"{key}: SnapStart init {(init_ms or 0) / 1000:.2f} s, checkpoint "
            f"{made[0].info.dump_s if made and made[0].info else float('nan'):.2f} s, first answer "
            f"{first:.2f} s after the invoke"
        )
        first_result(demand, payload(1), "cold")
        for i in range(repeats):
            for side in ("restore", "cold") if i % 2 == 0 else ("cold", "restore"):
                function = snap if side == "restore" else demand
                end_environment(function)
                seconds = first_result(function, payload(2 + 2 * i + (side == "cold")), _expect(side))
                env = function.function.environment()
                if side == "restore":
                    restore.append(seconds)
                    restore_ms.append(env.restore_ms if env is not None else None)
                else:
                    cold.append(seconds)
                    cold_init_ms.append(env.init_ms if env is not None else None)
            progress(
                f"{key}: SnapStart {i + 1}/{repeats}: restore to first result {restore[-1]:.3f} s, "
                f"cold start to first result {cold[-1]:.3f} s"
            )
        info = made[0].info if made else None
        criu_restore_s = list(made[0].restores) if made else []
    return summarise(key, init_ms, restore, cold, restore_ms, cold_init_ms, criu_restore_s, info)


def _expect(side: str) -> str:
    return "restored" if side == "restore" else "cold"


def summarise(
    key: str,
    init_ms: float | None,
    restore: list[float],
    cold: list[float],
    restore_ms: list[float | None],
    cold_init_ms: list[float | None],
    criu_restore_s: list[float],
    info: Any,
) -> dict[str, Any]:
    """The ``<function>.init_s``, ``restore_to_first_token_s`` ... keys of results.json."""
    r, c = summarize(restore), summarize(cold)
    return {
        "init_s": None if init_ms is None else init_ms / 1000,
        "restore_to_first_token_s": r["median"],
        "cold_first_token_s": c["median"],
        "restore_vs_cold_first_token": r["median"] / c["median"],
        "snapstart_method": METHOD,
        "snapstart": {
            "restore_duration_ms": median_or_none(restore_ms),
            "criu_restore_s": median_or_none(list(criu_restore_s)),
            "cold_init_ms": median_or_none(cold_init_ms),
            "checkpoint_dump_s": None if info is None else info.dump_s,
            "image_bytes": None if info is None else info.image_bytes,
            "rss_bytes": None if info is None else info.rss_bytes,
            "what": f"{key}: restore_duration_ms is the runner's Restore Duration (criu restore until the "
            "copy asks for work); criu_restore_s the wall time of criu restore alone; cold_init_ms the "
            "on-demand init (spawn until the runtime asks for work)",
            "spread": {"restore_to_first_token_s": r, "cold_first_token_s": c},
        },
    }
