"""Command-line interface: a thin layer over the library."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from pathlib import Path
from typing import Any

# Subcommands contributed by library modules: (name, module, help). Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int``. The parser imports these modules, so
# they must import nothing heavy at module level (no torch, numpy, sklearn): ``--help`` and
# argument errors stay fast (tests/test_cli_fast.py checks it). Import inside ``run``.
# Long work reports through ``oblivio._progress.task`` (bars, plain lines, --quiet).
PLUGIN_COMMANDS: list[tuple[str, str, str]] = [
    ("audit", "oblivio.audit.command", "membership-inference audit of an unlearning method"),
    ("ledger", "oblivio.ledger.command", "durable record of deletion requests and model versions"),
    ("serve", "oblivio.service.command", "HTTP service over a ledger (extra 'serve')"),
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


def _progress_runner(console, config, out, **options):
    """Run ``config`` reporting cells done / total, elapsed and ETA (bar or plain lines)."""
    from oblivio._progress import task
    from oblivio.bench.runner import run_config

    with task(f"{config.name}: cells", total=len(config.cells())) as cells:

        def update(done: int, total: int, key: str) -> None:
            cells.update(done, total, note=key)

        return run_config(config, out, progress=update, **options)


_COMPACT = [
    ("acc_test", "test acc"),
    ("acc_forget", "forget acc"),
    ("mia_auc", "MIA AUC"),
    ("avg_gap", "avg gap"),
    ("test_drop", "test drop"),
    ("gap_test", "test gap"),
    ("distance", "dist. to retrained"),
    ("seconds", "seconds"),
    ("speedup", "speed-up"),
    ("speedup_vs_warm", "vs warm"),
]


def _print_summary(console, records) -> None:
    """Compact table (means over seeds; the Markdown/HTML report has the ± std)."""
    from rich.table import Table

    from oblivio.bench.report import _value, summary_frame

    summary = summary_frame(records)
    keys = [
        g for g in ("dataset", "model", "request") if summary[g].nunique() > 1 or g == "request"
    ]
    table = Table(
        title=f"{len(records)} cells, means over seeds; gaps, distance and speed-ups are "
        "relative to retraining on the same edited data; avg gap and test drop in points "
        "(deletion: avg gap -> 0; correction: forget acc -> 0, small test drop)"
    )
    for column in keys + ["method", "goal"]:
        table.add_column(column)
    present = [(c, label) for c, label in _COMPACT if c in summary.columns]
    for _, label in present:
        table.add_column(label, justify="right")
    for _, row in summary.iterrows():
        table.add_row(
            *[str(row[g]) for g in keys + ["method", "goal"]],
            *[_value(row, c, std=False) for c, _ in present],
        )
    console.print(table)


def _cmd_run(args: argparse.Namespace) -> int:
    from oblivio.bench.config import load_config
    from oblivio.bench.report import write_report

    config = load_config(args.config)
    args.out = args.out or Path("results") / config.name
    out = _output_folder(args)
    console = _console()
    records = _progress_runner(
        console, config, out, n_jobs=args.n_jobs, backend=args.backend, scheduler=args.scheduler
    )
    _print_summary(console, records)
    markdown, page = write_report(out)
    console.print(f"records: {out / 'results.jsonl'}\nreport: {markdown}\nHTML: {page}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from oblivio.bench.report import write_report

    markdown, page = write_report(args.results)
    console = _console()
    console.print(markdown.read_text())
    console.print(f"HTML report: {page}")
    return 0


def _output_folder(args: argparse.Namespace, fresh: bool = False) -> Path:
    """``args.out`` made ready for results; refuses a folder of someone else's files."""
    from oblivio._io import prepare_output

    return prepare_output(args.out, force=args.force, fresh=fresh)


def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib import resources

    import torch

    from oblivio.bench.config import load_config
    from oblivio.bench.report import write_report

    torch.set_num_threads(1)
    start = time.perf_counter()
    console = _console()
    with resources.as_file(resources.files("oblivio.bench") / "configs" / "quick.toml") as path:
        config = load_config(path)
    out = _output_folder(args, fresh=True)  # a demo measures afresh
    records = _progress_runner(console, config, out)
    _print_summary(console, records)
    _, page = write_report(out)
    console.print(f"HTML report: {page.resolve()}")
    console.print(f"total time {time.perf_counter() - start:.1f} s")
    return 0


def _run_experiment(
    title: str, settings, run, format_table, save_report, out: str, steps: int | None = None
) -> int:
    """Run one of the application experiments with progress; print and save its table."""
    from oblivio._progress import task

    console = _console()
    with task(title, total=steps) as progress:
        report = run(settings, progress=progress)
    console.print(format_table(report))
    console.print(f"written to {save_report(report, out)}")
    return 0


def _parse_setting(field: Any, text: str) -> Any:
    """``text`` as a value of the settings ``field`` (int, float, bool, str, tuples, None)."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")

    def one(base: str, item: str) -> Any:
        if base == "bool":
            if item.lower() in ("true", "1", "yes"):
                return True
            if item.lower() in ("false", "0", "no"):
                return False
            raise ValueError(item)
        return {"int": int, "float": float}.get(base, str)(item)

    if "None" in kind and text.lower() == "none":
        return None
    base = next((b for b in ("bool", "int", "float") if b in kind), "str")
    try:
        if kind.startswith("tuple"):
            return tuple(one(base, item.strip()) for item in text.split(",") if item.strip())
        return one(base, text)
    except ValueError:
        raise ValueError(f"--set {field.name}={text!r}: expected {kind}") from None


def _settings(
    settings_class: Any, quick: bool, overrides: dict[str, Any], assignments: list[str]
) -> Any:
    """The experiment's settings: defaults (or ``quick()``), options, then ``--set`` pairs."""
    import dataclasses

    fields = {field.name: field for field in dataclasses.fields(settings_class)}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set needs KEY=VALUE, got {assignment!r}")
        if key not in fields:
            raise ValueError(f"--set {key}: unknown setting; known: {', '.join(sorted(fields))}")
        overrides[key] = _parse_setting(fields[key], text.strip())
    return settings_class.quick(**overrides) if quick else settings_class(**overrides)


def _cmd_canary(args: argparse.Namespace) -> int:
    from oblivio.bench import canary

    overrides = {"corpus": args.corpus} if args.corpus else {}
    if args.epochs:
        overrides["epochs"] = args.epochs
    settings = _settings(canary.CanarySettings, args.quick, overrides, args.set)
    return _run_experiment(
        "canary experiment",
        settings,
        canary.run_canary,
        canary.format_table,
        canary.save_report,
        _output_folder(args),
        steps=canary.count_steps(settings),
    )


def _cmd_poison_repair(args: argparse.Namespace) -> int:
    from oblivio.bench import poison

    overrides = {"root": args.root} if args.root else {}
    if args.dataset:
        overrides["dataset"] = args.dataset
    settings = _settings(poison.PoisonSettings, args.quick, overrides, args.set)
    return _run_experiment(
        "label repair experiment",
        settings,
        poison.run_poison_repair,
        poison.format_table,
        poison.save_report,
        _output_folder(args),
        steps=poison.count_steps(settings),
    )


def _add_force(parser: argparse.ArgumentParser) -> None:
    """``--force`` for a command writing a results folder (see ``_output_folder``)."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder oblivio did not create (only its own files change)",
    )


def build_parser() -> argparse.ArgumentParser:
    from oblivio import __version__

    parser = argparse.ArgumentParser(
        prog="oblivio",
        description="Machine unlearning: forget records, features and labels; "
        "certify or measure that the model forgot.",
    )
    parser.add_argument("--version", action="version", version=f"oblivio {__version__}")
    _add_verbosity(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    datasets = commands.add_parser(
        "datasets", help="list dataset loaders and whether data is present"
    )
    datasets.set_defaults(handler=_cmd_datasets)

    demo = commands.add_parser(
        "demo", help="quick benchmark on bundled data: every method vs retraining (~20 s)"
    )
    demo.add_argument("--out", default="results/demo", help="results folder (default results/demo)")
    _add_force(demo)
    demo.set_defaults(handler=_cmd_demo)

    run = commands.add_parser("run", help="run an experiment configuration (TOML)")
    run.add_argument("config", help="path of the configuration file")
    run.add_argument("--out", help="results folder (default results/<config name>)")
    run.add_argument("--n-jobs", type=int, default=1, help="cells in parallel (default 1)")
    run.add_argument("--backend", choices=["loky", "dask"], default="loky")
    run.add_argument("--scheduler", help="dask scheduler address, e.g. tcp://host:8786")
    _add_force(run)
    run.set_defaults(handler=_cmd_run)

    report = commands.add_parser("report", help="Markdown + HTML report of a results folder")
    report.add_argument("results", help="results folder written by 'oblivio run'")
    report.set_defaults(handler=_cmd_report)

    canary = commands.add_parser(
        "canary", help="unlearn a memorised telephone number from a character LSTM"
    )
    canary.add_argument(
        "--corpus",
        help="UTF-8 text (default: alice_in_wonderland.txt in $OBLIVIO_DATA/alice or "
        "~/.oblivio/data/alice)",
    )
    canary.add_argument("--epochs", type=int, help="training epochs of the LSTM")
    canary.add_argument("--quick", action="store_true", help="small sizes (about 20 s)")
    canary.add_argument("--out", default="results/canary", help="results folder")
    canary.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set first_order_taus=1e-3,3e-3 --set damping=3 "
        "(repeatable; see oblivio.bench.canary.CanarySettings)",
    )
    _add_force(canary)
    canary.set_defaults(handler=_cmd_canary)

    poison = commands.add_parser(
        "poison-repair", help="repair flipped labels in a CNN (Fashion-MNIST by default)"
    )
    poison.add_argument("--dataset", help="image dataset loader (default fashion-mnist)")
    poison.add_argument("--root", help="folder with the dataset's files")
    poison.add_argument("--quick", action="store_true", help="small sizes (about 3 min)")
    poison.add_argument("--out", default="results/poison-repair", help="results folder")
    poison.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set damping=3 --set methods=second-order,retrain "
        "(repeatable; see oblivio.bench.poison.PoisonSettings)",
    )
    _add_force(poison)
    poison.set_defaults(handler=_cmd_poison_repair)

    for name, module_name, help_text in PLUGIN_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        sub = commands.add_parser(name, help=help_text)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    for sub in commands.choices.values():
        _add_verbosity(sub, top_level=False)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """``--quiet``/``--verbose``, accepted before or after the command name."""
    # On subcommands the default is SUPPRESS so they do not overwrite the top-level value.
    default = False if top_level else argparse.SUPPRESS
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="no progress output"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="a progress line for every step (plain text, stderr)",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``oblivio``. Building the parser and rejecting bad arguments import
    neither torch nor the library: commands import what they need when they run."""
    from oblivio._progress import NORMAL, QUIET, VERBOSE, verbosity_set

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and args.verbose:
        parser.error("--quiet and --verbose exclude each other")
    level = QUIET if args.quiet else VERBOSE if args.verbose else NORMAL
    # warnings are for the person at the terminal: one line in the command's voice, not
    # the library's file and line (only how they print changes; filters are untouched)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_: (
        f"oblivio {args.command}: warning: {message}\n"
    )
    try:
        with verbosity_set(level):
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        print(f"oblivio {args.command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
