"""Real checkpoint/restore with CRIU (local/checkpoint.py) of a process shaped like an initialised runtime.

Nothing is mocked: the probe process is the venv's Python holding llama-cpp-python with the
embedded SmolLM2 GGUF, blocked on ``GET /runtime/restore/next`` at a stand-in Runtime API on
127.0.0.1, dumped and restored by CRIU 4.1.1. The awslambdaric tests run the real runtime client.

These tests need root and CRIU (``scripts/build-criu.sh``; the fixture runs it when the binary
is missing). Where checkpoint/restore cannot work they fail with the reason: they never skip.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local import checkpoint
from local.checkpoint import RestoreNextStandIn

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
INVOCATION_NEXT = "/2018-06-01/runtime/invocation/next"


@pytest.fixture
def stand_in() -> Iterator[RestoreNextStandIn]:
    with RestoreNextStandIn() as api:
        yield api


def start_probe(api: RestoreNextStandIn, *, use_mmap: bool) -> tuple[checkpoint.Spawned, dict[str, object]]:
    """The probe, initialised (model loaded, 4 seeded tokens generated) and blocked on restore/next."""
    probe = checkpoint.spawn(checkpoint.probe_command(api.address, use_mmap=use_mmap), env=ENV, cwd=ROOT)
    assert probe.stdout is not None
    ready = checkpoint.read_events(probe.stdout, "ready")[-1]
    assert api.arrived.wait(30), "the probe never asked for restore/next"
    return probe, ready


@pytest.mark.slow
def test_criu_is_available_here(criu: None) -> None:
    # Given this machine (root, CRIU built by scripts/build-criu.sh)
    # When asked
    ok, reason = checkpoint.available()
    # Then checkpoint/restore is possible, and the answer names the binary
    assert ok, reason
    assert str(checkpoint.criu_binary()) in reason


@pytest.mark.slow
@pytest.mark.parametrize("use_mmap", [True, False], ids=["use_mmap", "no_mmap"])
def test_two_copies_restored_at_once_reconnect_keep_seeded_tokens_and_differ_after_reseeding(
    criu: None, stand_in: RestoreNextStandIn, tmp_path: Path, use_mmap: bool
) -> None:
    # Given a probe that loaded SmolLM2, generated 4 seeded tokens and is blocked on restore/next
    probe, ready = start_probe(stand_in, use_mmap=use_mmap)
    copies: list[checkpoint.RestoredProcess] = []
    try:
        # When it is checkpointed with its connection closed, and two copies are restored at once
        info = checkpoint.checkpoint(probe.pid, tmp_path / "image", tcp="close")
        assert probe.wrapper.wait(10) != 0  # the dump killed the original
        stand_in.release()
        copies = [checkpoint.restore(info.image_dir) for _ in range(2)]
        results = []
        for copy in copies:
            assert copy.stdout is not None
            results.append(checkpoint.read_events(copy.stdout, "result"))
            assert copy.wait(30) == 0
    finally:
        probe.kill()
        for copy in copies:
            copy.close()

    # Then each copy's blocked GET failed at once, and asking again on a new connection got 200
    for events in results:
        assert events[0] == {
            "event": "get_failed",
            "error": "RemoteDisconnected: Remote end closed connection without response",
        }
        assert events[1]["event"] == "restored"
        assert (events[1]["attempts"], events[1]["status"]) == (2, 200)
    assert stand_in.requests == [checkpoint.RESTORE_NEXT] * 3
    # and each generates the same seeded tokens as before the checkpoint
    first, second = results[0][-1], results[1][-1]
    assert first["seeded"] == second["seeded"] == ready["seeded"]
    # and both inherited the same random state, which the after-restore reseed made differ
    assert first["inherited_random"] == second["inherited_random"]
    assert first["reseeded_random"] != second["reseeded_random"]
    assert first["llama_seed"] != second["llama_seed"]
    # and the weights are in the image only when they are not a mapped file
    model_bytes = checkpoint.smollm2_path().stat().st_size
    if use_mmap:
        assert info.pages_bytes < model_bytes < info.rss_bytes
    else:
        assert info.pages_bytes > model_bytes


@pytest.mark.slow
def test_established_connection_gets_the_held_answer_but_only_one_copy_can_hold_it(
    criu: None, stand_in: RestoreNextStandIn, tmp_path: Path
) -> None:
    # Given a probe blocked on restore/next, checkpointed with its connection kept
    probe, _ = start_probe(stand_in, use_mmap=True)
    copy = None
    try:
        info = checkpoint.checkpoint(probe.pid, tmp_path / "image", tcp="established")
        probe.wrapper.wait(10)
        # When one copy is restored, a second one is asked for while the first holds the connection,
        copy = checkpoint.restore(info.image_dir)
        with pytest.raises(checkpoint.CheckpointError) as second:
            checkpoint.restore(info.image_dir)
        # and the stand-in answers the GET it held all along
        stand_in.release()
        assert copy.stdout is not None
        events = checkpoint.read_events(copy.stdout, "result")
        assert copy.wait(30) == 0
    finally:
        probe.kill()
        if copy is not None:
            copy.close()

    # Then the first copy got its answer on the restored connection, at the first attempt
    assert events[0]["event"] == "restored"
    assert (events[0]["attempts"], events[0]["status"]) == (1, 200)
    assert stand_in.requests == [checkpoint.RESTORE_NEXT]
    # and the second could not restore the same connection
    assert "Can't connect inet socket back: Cannot assign requested address" in str(second.value)


@pytest.mark.slow
def test_removing_an_established_image_never_restored_lifts_its_network_lock(
    criu: None, stand_in: RestoreNextStandIn, tmp_path: Path
) -> None:
    # Given a probe checkpointed with its connection kept: CRIU locked it with an nftables table
    probe, _ = start_probe(stand_in, use_mmap=True)
    try:
        info = checkpoint.checkpoint(probe.pid, tmp_path / "image", tcp="established")
    finally:
        probe.kill()
    [lock] = json.loads((info.image_dir / checkpoint.METADATA).read_text())["network_lock"]
    assert lock in checkpoint._criu_tables()
    # When the image is removed without any restore
    checkpoint.remove_image(info.image_dir)
    # Then the lock is gone with it
    assert lock not in checkpoint._criu_tables()
    assert not info.image_dir.exists()


RIC_HANDLER = """
from snapshot_restore_py import register_after_restore, register_before_snapshot

register_before_snapshot(lambda: print("before_snapshot", flush=True))
register_after_restore(lambda: print("after_restore", flush=True))


def lambda_handler(event, context):
    return event
"""


def start_runtime(api: RestoreNextStandIn, code_dir: Path, runtime: str) -> checkpoint.Spawned:
    """A runtime (``awslambdaric`` for the embeddings function, ``lambda_common.lambda_runtime`` for
    the generator) in SnapStart mode, its before-snapshot hook run, blocked on restore/next."""
    (code_dir / "handler.py").write_text(RIC_HANDLER)
    env = {key: value for key, value in ENV.items() if not key.startswith("AWS_")}
    env |= {"AWS_LAMBDA_RUNTIME_API": api.address, "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
    env |= {"PYTHONPATH": os.pathsep.join([str(code_dir), str(ROOT / "lambda_images" / "common")])}
    process = checkpoint.spawn(
        [sys.executable, "-m", runtime, "handler.lambda_handler"], env=env, cwd=code_dir
    )
    assert api.arrived.wait(30), f"{runtime} never asked for restore/next"
    assert process.stdout is not None
    assert process.stdout.readline() == b"before_snapshot\n"
    return process


def start_ric(api: RestoreNextStandIn, code_dir: Path) -> checkpoint.Spawned:
    return start_runtime(api, code_dir, "awslambdaric")


@pytest.mark.slow
def test_the_project_runtime_loop_takes_a_dropped_restore_next_for_a_restore_in_every_copy(
    criu: None, stand_in: RestoreNextStandIn, tmp_path: Path
) -> None:
    # Given the generator's runtime loop blocked on restore/next after its before-snapshot hook
    runtime = start_runtime(stand_in, tmp_path, "lambda_common.lambda_runtime")
    copies: list[checkpoint.RestoredProcess] = []
    try:
        # When it is checkpointed with tcp="close" and two copies are restored at once
        info = checkpoint.checkpoint(runtime.pid, tmp_path / "image", tcp="close")
        runtime.wrapper.wait(10)
        stand_in.release()
        copies = [checkpoint.restore(info.image_dir) for _ in range(2)]
        lines = []
        for copy in copies:
            assert copy.stdout is not None
            lines.append(copy.stdout.readline())
        deadline = time.monotonic() + 30
        while stand_in.requests.count(INVOCATION_NEXT) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        runtime.kill()
        for copy in copies:
            copy.close()

    # Then each copy runs its after-restore hooks and asks for an invocation, reporting no error
    assert lines == [b"after_restore\n"] * 2
    assert stand_in.requests.count(INVOCATION_NEXT) == 2, stand_in.requests
    assert not [path for path, _, _ in stand_in.posts if path.endswith(("/init/error", "/restore/error"))]


@pytest.mark.slow
def test_awslambdaric_restored_with_its_connection_closed_reports_an_init_error_and_exits_64(
    criu: None, stand_in: RestoreNextStandIn, tmp_path: Path
) -> None:
    # Given awslambdaric 4.2 blocked on restore/next after its before-snapshot hooks
    ric = start_ric(stand_in, tmp_path)
    copy = None
    try:
        # When it is checkpointed and restored with tcp="close"
        info = checkpoint.checkpoint(ric.pid, tmp_path / "image", tcp="close")
        ric.wrapper.wait(10)
        stand_in.release()
        copy = checkpoint.restore(info.image_dir)
        status = copy.wait(30)
        assert copy.stdout is not None
        output = copy.stdout.read()
    finally:
        ric.kill()
        if copy is not None:
            copy.close()

    # Then it does not reconnect: it posts an init error and exits 64, its after-restore hooks unrun
    assert status == 64
    [(path, headers, body)] = stand_in.posts
    assert path == "/2018-06-01/runtime/init/error"
    assert headers["Lambda-Runtime-Function-Error-Type"] == "Runtime.BeforeSnapshotError"
    assert json.loads(body)["errorType"] == "RemoteDisconnected"
    assert b"after_restore" not in output


@pytest.mark.slow
def test_awslambdaric_restored_with_its_connection_kept_runs_its_after_restore_hooks(
    criu: None, stand_in: RestoreNextStandIn, tmp_path: Path
) -> None:
    # Given awslambdaric 4.2 blocked on restore/next after its before-snapshot hooks
    ric = start_ric(stand_in, tmp_path)
    copy = None
    try:
        # When it is checkpointed with tcp="established", restored, and the held GET answered
        info = checkpoint.checkpoint(ric.pid, tmp_path / "image", tcp="established")
        ric.wrapper.wait(10)
        copy = checkpoint.restore(info.image_dir)
        stand_in.release()
        assert copy.stdout is not None
        line = copy.stdout.readline()
        deadline = time.monotonic() + 30
        while INVOCATION_NEXT not in stand_in.requests and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        ric.kill()
        if copy is not None:
            copy.close()

    # Then its after-restore hooks run and it goes on to ask for an invocation
    assert line == b"after_restore\n"
    assert stand_in.posts == []
    assert stand_in.requests == [checkpoint.RESTORE_NEXT, INVOCATION_NEXT]


def test_checkpoint_refuses_a_process_not_started_by_spawn(tmp_path: Path) -> None:
    # Given this test's own process (not PID 1 of its own PID namespace)
    # When asked to checkpoint it
    with pytest.raises(ValueError, match=r"not PID 1 of its own PID namespace.*local\.checkpoint\.spawn\(\)"):
        checkpoint.checkpoint(os.getpid(), tmp_path / "image", tcp="close")
    # Then nothing was written
    assert not (tmp_path / "image").exists()


def test_checkpoint_refuses_an_unknown_tcp_mode_and_a_used_image_directory(tmp_path: Path) -> None:
    # Given a directory that already holds something
    (tmp_path / "old.img").write_bytes(b"x")
    # When asked to checkpoint into it, or with a TCP mode CRIU does not have
    # Then each is refused with the reason
    with pytest.raises(ValueError, match="is not empty"):
        checkpoint.checkpoint(os.getpid(), tmp_path, tcp="close")
    with pytest.raises(ValueError, match="tcp must be 'close' or 'established', not 'repair'"):
        checkpoint.checkpoint(os.getpid(), tmp_path / "new", tcp="repair")  # type: ignore[arg-type]


def test_restore_and_remove_refuse_a_directory_without_an_image(tmp_path: Path) -> None:
    # Given a directory with no checkpoint in it
    (tmp_path / "keep.txt").write_text("not an image")
    # When asked to restore from it or remove it
    # Then both refuse, and the directory is left alone
    with pytest.raises(ValueError, match=r"holds no image made by local\.checkpoint\.checkpoint\(\)"):
        checkpoint.restore(tmp_path)
    with pytest.raises(ValueError, match=r"holds no image made by local\.checkpoint\.checkpoint\(\)"):
        checkpoint.remove_image(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "not an image"
