"""SnapStart with a real checkpoint: the ``Snapshots`` seam of ``local.runtime_api`` on CRIU.

``local.runtime_api.InPlaceSnapshots`` runs SnapStart's lifecycle without
copying anything. ``CriuSnapshots`` checkpoints the initialised runtime while
it waits on ``GET /runtime/restore/next`` (``local.checkpoint``, CRIU 4.1.1
built by ``scripts/build-criu.sh``; needs root) and restores a copy for every
new execution environment, so after the first init no environment of the
function initialises again, as on Lambda. The dump closes the held connection
(``tcp="close"``): a restored copy finds its GET failed, counts that as
restored, runs its after-restore hooks and asks for work on a new connection.
That needs a runtime that reconnects: the project's runtime loop does,
``awslambdaric`` 4.2 does not (docs/snapstart-local.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from local import checkpoint
from local.runtime_api import RuntimeProcess


class _Spawned:
    """A runtime started by ``checkpoint.spawn`` (PID 1 of its own PID namespace)."""

    def __init__(self, spawned: checkpoint.Spawned) -> None:
        self.spawned = spawned

    @property
    def pid(self) -> int:
        return self.spawned.pid

    def poll(self) -> int | None:
        return self.spawned.wrapper.poll()  # the namespace's wrapper ends with the runtime

    def kill(self) -> None:
        self.spawned.kill()


class _Restored:
    """A copy restored by ``checkpoint.restore`` (a child of this process)."""

    def __init__(self, restored: checkpoint.RestoredProcess) -> None:
        self.restored = restored

    @property
    def pid(self) -> int:
        return self.restored.pid

    def poll(self) -> int | None:
        return self.restored.poll()

    def kill(self) -> None:
        self.restored.close()


class CriuSnapshots:
    """Checkpoint the initialised runtime once, restore a copy for each environment."""

    def __init__(self, root: Path | None = None) -> None:
        ok, why = checkpoint.available()
        if not ok:
            raise RuntimeError(f"a real checkpoint cannot run here: {why}")
        self._root = Path(tempfile.mkdtemp(prefix="snapstart-", dir=root))
        self.image: Path | None = None
        self.info: checkpoint.CheckpointInfo | None = None
        self.restores: list[float] = []
        """Wall time of each ``criu restore``, in seconds."""

    def launch(self, argv: list[str], env: Mapping[str, str], cwd: Path, output: IO[bytes]) -> RuntimeProcess:
        return _Spawned(checkpoint.spawn(argv, env=env, cwd=cwd, stdout=output, stderr=output))

    def take(self, process: RuntimeProcess) -> bool:
        image = self._root / "image"
        self.info = checkpoint.checkpoint(process.pid, image, tcp="close")
        self.image = image
        process.kill()  # the dump ended it; reap what is left (its namespace's wrapper)
        return True

    def restore(self, release: Callable[[], None]) -> RuntimeProcess:
        if self.image is None:
            raise RuntimeError("no checkpoint was taken")
        restored = checkpoint.restore(self.image)
        self.restores.append(restored.restore_s)
        release()  # the held GET is gone with the original; nothing waits on it any more
        return _Restored(restored)

    def close(self) -> None:
        if self.image is not None and self.image.exists():
            checkpoint.remove_image(self.image)
        self.image = None
        if self._root.exists():
            for leftover in sorted(self._root.rglob("*"), reverse=True):
                (leftover.rmdir if leftover.is_dir() else leftover.unlink)()
            self._root.rmdir()
