"""Where SISA keeps its slice checkpoints: in memory, or as ``.npz`` files in a folder.

:class:`CheckpointMixin` (a part of :class:`~oblivio.unlearners.sisa.SISA`) checks the
folder is writable, writes checkpoints atomically (all files staged, then renamed) and reads
them back, refusing with :class:`CheckpointError` a missing, corrupt or stale one.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CheckpointError", "CheckpointMixin"]

_CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A SISA checkpoint is missing, unreadable, or was written for other data."""


class CheckpointMixin:
    """Checkpoint storage of SISA's shard models after each slice (a part of :class:`SISA`)."""

    @staticmethod
    def _check_writable(folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
            os.close(handle)
            os.remove(probe)
        except OSError as error:
            raise ValueError(
                f"checkpoint_dir {os.fspath(folder)!r} is not a writable folder: {error}"
            ) from error

    def _checkpoint_path(self, shard: int, slice_: int) -> Path:
        return Path(self.checkpoint_dir) / f"shard{shard:04d}_slice{slice_:04d}.npz"

    def _write_checkpoints(self, entries: dict[tuple[int, int], tuple[str, Any]]) -> None:
        """Store checkpoints; on disk, all files are staged first and then renamed."""
        if self.checkpoint_dir is None:
            self._memory.update({key: (d, s) for key, (d, s) in entries.items()})
            return
        staged: list[tuple[str, Path]] = []
        try:
            for (k, r), (digest, state) in entries.items():
                arrays: dict[str, np.ndarray] = {
                    "format": np.asarray(_CHECKPOINT_FORMAT),
                    "digest": np.asarray(digest),
                    "shard": np.asarray(k),
                    "slice": np.asarray(r),
                    "empty": np.asarray(state is None),
                }
                if state is not None:
                    state = dict(state)
                    arrays["meta"] = np.asarray(json.dumps(state.pop("__meta__", {})))
                    arrays.update({f"state__{key}": np.asarray(v) for key, v in state.items()})
                handle, temp = tempfile.mkstemp(
                    prefix=f".shard{k:04d}_slice{r:04d}.", suffix=".tmp", dir=self.checkpoint_dir
                )
                with os.fdopen(handle, "wb") as stream:
                    np.savez(stream, **arrays)
                    stream.flush()
                    os.fsync(stream.fileno())
                staged.append((temp, self._checkpoint_path(k, r)))
        except BaseException as error:
            for temp, _ in staged:
                Path(temp).unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise CheckpointError(
                    f"cannot write checkpoints to {self.checkpoint_dir!r}: {error}"
                ) from error
            raise
        for temp, target in staged:
            os.replace(temp, target)

    def _read_checkpoint(self, shard: int, slice_: int, expected: str) -> dict[str, Any] | None:
        """The model state after ``slice_`` of ``shard``; check it matches the data."""
        if self.checkpoint_dir is None:
            try:
                digest, state = self._memory[(shard, slice_)]
            except KeyError:
                raise CheckpointError(
                    f"no checkpoint for shard {shard}, slice {slice_} in memory"
                ) from None
            where = f"in-memory checkpoint (shard {shard}, slice {slice_})"
        else:
            path = self._checkpoint_path(shard, slice_)
            where = f"checkpoint file {os.fspath(path)!r}"
            try:
                with np.load(path, allow_pickle=False) as archive:
                    files = set(archive.files)
                    if int(archive["format"]) != _CHECKPOINT_FORMAT:
                        raise ValueError(f"format {int(archive['format'])}")
                    if (int(archive["shard"]), int(archive["slice"])) != (shard, slice_):
                        raise ValueError("it belongs to another shard or slice")
                    digest = str(archive["digest"])
                    if bool(archive["empty"]):
                        state = None
                    else:
                        state = {
                            key[len("state__") :]: archive[key]
                            for key in files
                            if key.startswith("state__")
                        }
                        state["__meta__"] = json.loads(str(archive["meta"]))
            except FileNotFoundError:
                raise CheckpointError(
                    f"{where} is missing; refit the unlearner to rebuild its checkpoints"
                ) from None
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                raise CheckpointError(
                    f"{where} is corrupt ({type(error).__name__}: {error}); "
                    "refit the unlearner to rebuild its checkpoints"
                ) from error
        if digest != expected:
            raise CheckpointError(
                f"{where} was written for other training data (stale, or from another "
                "unlearner sharing the folder); refit the unlearner to rebuild its checkpoints"
            )
        return state
