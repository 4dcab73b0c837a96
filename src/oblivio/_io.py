"""Safe writes: atomic files, and results folders that never lose a user's files.

Two promises live here. A file written through :func:`write_text` / :func:`write_json` is
either the old one or the new one after a crash, never half. A results folder prepared
with :func:`prepare_output` is only written to when it is empty, new, or one oblivio
wrote before (it carries the marker file :data:`MARKER`); oblivio then replaces only the
files it writes itself, and never deletes anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "MARKER",
    "OutputError",
    "claim_output_file",
    "fsync_folder",
    "prepare_output",
    "write_bytes",
    "write_json",
    "write_text",
]

#: Marker file that makes a folder an oblivio results folder.
MARKER = ".oblivio-results"

#: What oblivio writes in a results folder (files, and folders whose content it owns).
OWNED_FILES = (
    "results.jsonl",
    "config.json",
    "environment.json",
    "report.md",
    "report.html",
    "canary.json",
    "canary.md",
    "poison_repair.json",
    "poison_repair.md",
)
#: Folders of cached model states, and the pattern of the files oblivio writes in them.
OWNED_CACHES = (("cache/originals", "*.npz"), ("cache/references", "*.npz"))


class OutputError(ValueError):
    """An output path that oblivio refuses to write to (it would replace a user's files)."""


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (renames) to disk where the platform allows it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _default_mode() -> int:
    """Permissions an ordinary ``open(path, "w")`` would give: 0o666 minus the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the permissions a plain ``open`` would give (e.g. 0644 under umask 022),
    not the 0600 of the temporary file: reports are meant to be read by others.
    """
    return _write(path, text, "w")


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` (e.g. a PNG) to ``path`` atomically, as :func:`write_text`."""
    return _write(path, data, "wb")


def _write(path: str | Path, content: str | bytes, mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, mode) as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _default_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    """``write_text`` of ``payload`` as indented JSON (numpy scalars become floats)."""
    return write_text(path, json.dumps(payload, indent=2, default=float))


def prepare_output(path: str | Path, *, force: bool = False, fresh: bool = False) -> Path:
    """Make ``path`` ready to receive oblivio's results, without touching a user's files.

    Parameters
    ----------
    path : str or Path
        The results folder (created when missing).
    force : bool
        Accept a non-empty folder that oblivio did not write (``--force``); oblivio still
        replaces only the files it writes itself.
    fresh : bool
        Remove oblivio's own earlier results first (``oblivio demo`` measures afresh):
        only in a folder carrying the marker, and only the names in
        :data:`OWNED_FILES` and the cached states of :data:`OWNED_CACHES`.

    Raises
    ------
    OutputError
        ``path`` is a file, or a non-empty folder without the :data:`MARKER` file and
        ``force`` is false. Nothing is changed then.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {os.fspath(path)!r} is a file, not a folder; choose a new name")
    # results folders of oblivio before the marker existed hold these three files
    legacy = all((path / name).is_file() for name in OWNED_FILES[:3])
    marked = (path / MARKER).is_file() or legacy
    if path.is_dir() and not marked and any(path.iterdir()) and not force:
        raise OutputError(
            f"output folder {os.fspath(path)!r} is not empty and was not written by oblivio "
            f"(no {MARKER} file); choose a new name, or pass --force to write oblivio's "
            "files into it (nothing else in it is deleted)"
        )
    path.mkdir(parents=True, exist_ok=True)
    if fresh and marked:
        for name in OWNED_FILES:
            (path / name).unlink(missing_ok=True)
        for name, pattern in OWNED_CACHES:
            folder = path / name
            if folder.is_dir() and not folder.is_symlink():
                for file in folder.glob(pattern):
                    file.unlink()
                for leftover in (folder, folder.parent):
                    with contextlib.suppress(OSError):
                        leftover.rmdir()  # only when empty: a user's file keeps it
    if not (path / MARKER).is_file():
        write_text(path / MARKER, "This folder holds results written by oblivio.\n")
    return path


def claim_output_file(path: str | Path, *, force: bool = False) -> Path:
    """Check that writing the file ``path`` replaces nothing the user did not ask to lose.

    An existing file is only replaced with ``force`` (``--force``); a folder never is.

    Raises
    ------
    OutputError
        ``path`` is a folder, or an existing file and ``force`` is false.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {os.fspath(path)!r} is a folder; give a file name")
    if path.exists() and not force:
        raise OutputError(
            f"output file {os.fspath(path)!r} exists; choose a new name, or pass --force to "
            "replace it"
        )
    return path
