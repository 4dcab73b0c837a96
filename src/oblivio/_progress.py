"""Progress reporting shared by the command line, the benchmark harness and training loops.

One call for everything long: ``with task("cells", total=12) as t: t.update(done)``.

* On a terminal: rich progress bars (nested tasks share one live display).
* Anywhere else (a pipe, a CI log, ``> log``): plain lines on stderr, written when a task
  starts and ends and at least every ``interval`` seconds in between (a background thread
  keeps them coming when one step is long), each with done/total, elapsed time and ETA::

      [oblivio] cells: 3/12 (25%) elapsed 0:41 ETA 2:03 | digits/logistic/retrain

* Silent in library use unless asked: the command line calls :func:`set_verbosity`
  (``--quiet`` → 0, default → 1, ``--verbose`` → 2: a line for every update).

Importing this module is cheap (no torch, no rich until a bar is drawn).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["QUIET", "NORMAL", "VERBOSE", "Task", "set_verbosity", "task", "verbosity"]

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level: int | None = None  # None: library use, silent unless a caller asks
_live: dict[str, Any] = {"progress": None, "users": 0}
_open_lines = [0]  # line-mode tasks open now: nested ones stay quiet unless they are long
_lock = threading.Lock()


def set_verbosity(level: int | None) -> int | None:
    """Set the reporting level (QUIET, NORMAL, VERBOSE or None = library default); returns
    the previous one so callers can restore it."""
    global _level
    if level is not None and level not in (QUIET, NORMAL, VERBOSE):
        raise ValueError(f"verbosity must be 0, 1, 2 or None, got {level!r}")
    previous, _level = _level, level
    return previous


def verbosity() -> int | None:
    """The current level (None when no command line asked for progress)."""
    return _level


@contextmanager
def verbosity_set(level: int | None) -> Iterator[None]:
    """Temporarily set the level (what the command line does around one command)."""
    previous = set_verbosity(level)
    try:
        yield
    finally:
        set_verbosity(previous)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Task:
    """One reported piece of work: a description, ``done`` out of ``total`` and a note.

    Use :func:`task` to make one (it picks the mode from the verbosity and the stream).

    Parameters
    ----------
    description : str
        What is being done ("cells", "training").
    total : int or None
        Units of work, if known (ETA needs it).
    mode : {"bar", "lines", "off"}
        Rich bar, plain lines, or nothing.
    interval : float
        Seconds between plain lines at most (lines mode).
    stream : text stream
        Where lines go (default ``sys.stderr``).
    every_update : bool
        Lines mode: also write a line at every update (``--verbose``).
    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        mode: str = "lines",
        interval: float = 10.0,
        stream: TextIO | None = None,
        every_update: bool = False,
    ) -> None:
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"mode must be 'bar', 'lines' or 'off', got {mode!r}")
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.description = description
        self.total = total
        self.done = 0
        self.note = ""
        self.mode = mode
        self.interval = float(interval)
        self.stream = stream
        self.every_update = every_update
        self._start = time.perf_counter()
        self._last_line = -float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar_task: Any = None
        self._printed = False
        self._nested = False
        self._by_message = False  # steps counted by status messages (__call__)
        #: Lines mode: a task started inside another one (a model's training inside a
        #: benchmark cell) writes nothing unless it runs longer than ``interval``.
        self.nested_quiet = not every_update

    # -- context ------------------------------------------------------------------------
    def __enter__(self) -> Task:
        self._start = time.perf_counter()
        if self.mode == "lines":
            self._nested = _open_lines[0] > 0
            _open_lines[0] += 1
            if self.nested_quiet and self._nested:
                self._last_line = self._start  # first line after `interval` seconds
            else:
                self._line()
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()
        elif self.mode == "bar":
            progress = _acquire_bar()
            self._bar_task = progress.add_task(self.description, total=self.total, note="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._by_message and not (exc and exc[0] is not None):
            self.done += 1  # the last message's step finished with the task
        if self.mode == "lines":
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            _open_lines[0] -= 1
            if not exc or exc[0] is None:
                ended = "finished"
            elif issubclass(exc[0], KeyboardInterrupt):
                ended = "interrupted"
            else:
                ended = "stopped by an error"
            if self._printed or not self.nested_quiet:
                self._line(ended=ended)
        elif self.mode == "bar":
            progress = _live["progress"]
            if progress is not None and self._bar_task is not None:
                progress.remove_task(self._bar_task)
            _release_bar()

    # -- reporting ----------------------------------------------------------------------
    def update(
        self,
        done: int | None = None,
        total: int | None = None,
        note: str | None = None,
        advance: int = 0,
    ) -> None:
        """Set ``done`` (or ``advance`` it), ``total`` and the note."""
        if total is not None:
            self.total = total
        if done is not None:
            self.done = done
        self.done += advance
        if note is not None:
            self.note = note
        if self.mode == "bar":
            progress = _live["progress"]
            if progress is not None:
                progress.update(
                    self._bar_task, completed=self.done, total=self.total, note=self.note[:60]
                )
        elif self.mode == "lines":
            now = time.perf_counter()
            if (self.every_update and not (self.nested_quiet and self._nested)) or (
                now - self._last_line >= self.interval
            ):
                self._line()

    def advance(self, steps: int = 1, note: str | None = None) -> None:
        self.update(advance=steps, note=note)

    def __call__(self, message: str) -> None:
        """A status message (the ``progress(str)`` callback of the experiments): one step."""
        if self._by_message:  # the previous message's step is done
            self.done += 1
        self._by_message = True
        self.update(note=message)

    def status(self) -> str:
        """``description: done/total (pct) elapsed ETA | note``, as the lines show it."""
        elapsed = time.perf_counter() - self._start
        parts = [f"{self.description}:"]
        if self.total:
            parts.append(f"{self.done}/{self.total} ({100 * self.done / self.total:.0f}%)")
        else:
            parts.append(f"{self.done} done")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and 0 < self.done < self.total:
            parts.append(f"ETA {_clock(elapsed / self.done * (self.total - self.done))}")
        elif self.total and self.done == 0:
            parts.append("ETA ?")
        if self.note:
            parts.append(f"| {self.note}")
        return " ".join(parts)

    def _line(self, ended: str | None = None) -> None:
        text = self.status() if ended is None else f"{self.status()} ({ended})"
        stream = self.stream or sys.stderr
        with _lock:
            print(f"[oblivio] {text}", file=stream, flush=True)
        self._last_line = time.perf_counter()
        self._printed = True

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            if time.perf_counter() - self._last_line >= self.interval:
                self._line()


def _acquire_bar() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if _live["progress"] is None:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=Console(stderr=True),
            transient=True,
        )
        progress.start()
        _live["progress"] = progress
    _live["users"] += 1
    return _live["progress"]


def _release_bar() -> None:
    _live["users"] -= 1
    if _live["users"] <= 0 and _live["progress"] is not None:
        _live["progress"].stop()
        _live["progress"] = None
        _live["users"] = 0


def task(
    description: str,
    total: int | None = None,
    *,
    force: bool = False,
    interval: float = 10.0,
    stream: TextIO | None = None,
) -> Task:
    """A :class:`Task` in the mode the verbosity and the output call for.

    Silent (mode ``"off"``) in library use (no :func:`set_verbosity`) unless ``force`` (e.g.
    ``TorchModel(verbose=True)``) and under ``--quiet``; a rich bar when ``stream``
    (default stderr) is a terminal; plain lines otherwise.
    """
    level = verbosity()
    if level == QUIET or (level is None and not force):
        return Task(description, total, mode="off")
    target = stream or sys.stderr
    terminal = bool(getattr(target, "isatty", lambda: False)())
    mode = "bar" if terminal and level != VERBOSE else "lines"
    return Task(
        description,
        total,
        mode=mode,
        interval=interval,
        stream=stream,
        every_update=level == VERBOSE,
    )
