"""Atomic file writes for results: a crash leaves the old file or the new one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
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
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    """``write_text`` of ``payload`` as indented JSON (numpy scalars become floats)."""
    return write_text(path, json.dumps(payload, indent=2, default=float))
