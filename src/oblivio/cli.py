"""Command-line interface: a thin layer over the library."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

# Subcommands contributed by library modules: (name, module, help). Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int``.
PLUGIN_COMMANDS: list[tuple[str, str, str]] = [
    ("audit", "oblivio.audit.command", "membership-inference audit of an unlearning method"),
]


def _console():
    from rich.console import Console

    # Piped output (CI logs, files) would otherwise be squeezed into 80 columns.
    return Console(width=None if sys.stdout.isatty() else 150)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from oblivio.datasets import describe

    table = Table(title="oblivio datasets")
    table.add_column("name")
    table.add_column("data present")
    table.add_column("description")
    for name, description, present in describe():
        table.add_row(name, "yes" if present else "no", description)
    _console().print(table)
    return 0


def _format(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


def _write_json_atomically(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream, indent=2)
    os.replace(temporary, path)


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch
    from rich.table import Table

    from oblivio.bench.demo import rows_as_dicts, run_demo

    torch.set_num_threads(args.threads)
    console = _console()
    start = time.perf_counter()
    with console.status("starting") as status:
        rows = run_demo(progress=lambda message: status.update(message), n_forget=args.forget)
    table = Table(
        title=f"oblivio demo: forget {args.forget} records of digits (bundled), "
        "each method vs retraining from scratch"
    )
    for column in ("setting", "method", "seconds", "speed-up", "test acc",
                   "forget acc", "dist to retrain", "agree w/ retrain", "note"):
        table.add_column(column, justify="left" if column in ("setting", "method", "note") else "right")
    for row in rows:
        table.add_row(
            row.setting,
            row.method,
            _format(row.seconds),
            _format(row.speedup) + "x" if not math.isnan(row.speedup) else "-",
            _format(row.test_accuracy),
            _format(row.forget_accuracy),
            _format(row.distance),
            _format(row.agreement),
            row.note,
        )
    console.print(table)
    if args.out:
        path = Path(args.out) / "demo.json"
        _write_json_atomically(path, rows_as_dicts(rows))
        console.print(f"results written to {path}")
    console.print(f"total time {time.perf_counter() - start:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from oblivio import __version__

    parser = argparse.ArgumentParser(
        prog="oblivio",
        description="Machine unlearning: forget records, features and labels; "
        "certify or measure that the model forgot.",
    )
    parser.add_argument("--version", action="version", version=f"oblivio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    datasets = commands.add_parser("datasets", help="list dataset loaders and whether data is present")
    datasets.set_defaults(handler=_cmd_datasets)

    demo = commands.add_parser(
        "demo", help="quick benchmark on bundled data: every method vs retraining"
    )
    demo.add_argument("--forget", type=int, default=10, help="records to forget (default 10)")
    demo.add_argument("--out", default="results/demo", help="folder for the results JSON ('' for none)")
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    demo.set_defaults(handler=_cmd_demo)

    for name, module_name, help_text in PLUGIN_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        sub = commands.add_parser(name, help=help_text)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        print(f"oblivio {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
