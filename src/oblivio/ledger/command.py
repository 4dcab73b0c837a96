"""``oblivio ledger init|submit|status|history|verify|prune``.

Example::

    oblivio ledger init requests.db --dataset digits --classes 3,8 --method certified \\
        --set epsilon=1 --set sigma=1 --set seed=0
    oblivio ledger submit requests.db --id ticket-1 --remove 3,17
    oblivio ledger status requests.db 3
    oblivio ledger history requests.db
    oblivio ledger verify requests.db
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def _features(text: str) -> list[int | str]:
    return [int(p) if p.strip().lstrip("-").isdigit() else p.strip() for p in text.split(",")]


def _option(assignment: str) -> tuple[str, Any]:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set needs KEY=VALUE, got {assignment!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return key.strip().replace("-", "_"), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands of ``oblivio ledger``."""
    parser.description = (
        "A durable record of unlearning requests and model versions (SQLite + model store)."
    )
    commands = parser.add_subparsers(dest="ledger_command", metavar="ACTION")
    commands.required = True
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("ledger", help="SQLite file, or a PostgreSQL URL (postgresql+psycopg://...)")
    where.add_argument(
        "--store", help="model store folder (default LEDGER.models; needed for URLs)"
    )

    init = commands.add_parser(
        "init", parents=[where], help="create a ledger with a trained unlearner"
    )
    source = init.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="saved", help="folder of a saved unlearner (u.save)")
    source.add_argument("--dataset", help="train a logistic regression on this dataset")
    init.add_argument("--root", help="folder with the dataset's files")
    init.add_argument("--classes", type=_ints, help="keep these labels, e.g. 3,8")
    init.add_argument("--limit", type=int, help="use the first LIMIT training records")
    init.add_argument("--normalize", default="l2", choices=("none", "l2", "standard"))
    init.add_argument("--flatten", action="store_true", help="flatten images to rows")
    init.add_argument("--method", default="certified", help="unlearner (default certified)")
    init.add_argument("--l2", type=float, default=1e-3, help="per-record L2 (default 1e-3)")
    init.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="unlearner option, e.g. --set epsilon=1 --set seed=0 (repeatable)",
    )
    init.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        help="store every N-th version (default 1; N > 1 needs --keep-history)",
    )
    kept = init.add_mutually_exclusive_group()
    kept.add_argument(
        "--prune",
        dest="prune",
        action="store_true",
        default=True,
        help="keep only the current version after every request, so no stored version "
        "holds forgotten records (the default)",
    )
    kept.add_argument(
        "--keep-history",
        dest="prune",
        action="store_false",
        help="keep every version for replay audits (older versions retain forgotten records)",
    )

    submit = commands.add_parser(
        "submit", parents=[where], help="apply one request (idempotent by --id)"
    )
    submit.add_argument("--id", dest="request_id", help="request id (default: a new UUID)")
    kind = submit.add_mutually_exclusive_group(required=True)
    kind.add_argument("--remove", type=_ints, metavar="IDS", help="record ids to forget")
    kind.add_argument("--relabel", type=_ints, metavar="IDS", help="record ids to relabel")
    kind.add_argument(
        "--replace-features",
        type=_features,
        metavar="COLUMNS",
        help="feature columns (indices or names) to overwrite",
    )
    submit.add_argument("--labels", type=_ints, help="new labels for --relabel")
    submit.add_argument("--value", type=float, default=0.0, help="fill value (default 0)")
    submit.add_argument(
        "--ids",
        type=_ints,
        help="rows for --replace-features (default: where a feature is non-zero)",
    )

    status = commands.add_parser(
        "status", parents=[where], help="is a record forgotten, and by which request"
    )
    status.add_argument("record_id", type=int)

    history = commands.add_parser("history", parents=[where], help="every request in arrival order")
    history.add_argument("--json", action="store_true", help="one JSON object per line")

    commands.add_parser(
        "verify",
        parents=[where],
        help="check the stored versions, replaying the requests after the oldest one kept",
    )

    commands.add_parser(
        "prune",
        parents=[where],
        help="delete every stored version but the current (ledgers made with --keep-history)",
    )


def _init(args: argparse.Namespace) -> int:
    from oblivio import datasets, models, unlearners
    from oblivio.ledger import Ledger

    if "://" not in args.ledger and Path(args.ledger).exists():  # before any training
        raise ValueError(f"{args.ledger} already exists (open it, or choose a new file)")
    if args.prune and args.checkpoint_every != 1:
        raise ValueError(
            f"--checkpoint-every {args.checkpoint_every} needs --keep-history (versions "
            "older than the current one hold forgotten records)"
        )
    if args.saved:
        unlearner = unlearners.Unlearner.load(args.saved)
    else:
        options = {"flatten": True} if args.flatten else {}
        split = datasets.load(
            args.dataset,
            root=args.root,
            classes=args.classes,
            limit=args.limit,
            normalize=None if args.normalize == "none" else args.normalize,
            **options,
        )
        method_options = dict(_option(a) for a in args.set)
        model = models.LogisticRegression(l2=args.l2)
        unlearner = unlearners.create(args.method, model, **method_options).fit(split.train)
    ledger = Ledger.create(
        args.ledger,
        unlearner,
        store=args.store,
        checkpoint_every=args.checkpoint_every,
        prune=args.prune,
    )
    print(f"created {args.ledger}: {ledger.method}, {len(unlearner.train_)} records, version 0")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from oblivio.data import Relabel, Remove, ReplaceFeatures
    from oblivio.ledger import Ledger

    if args.remove is not None:
        request = Remove(ids=args.remove)
    elif args.relabel is not None:
        if args.labels is None:
            raise ValueError("--relabel needs --labels (one per id)")
        request = Relabel(ids=args.relabel, labels=args.labels)
    else:
        request = ReplaceFeatures(features=args.replace_features, value=args.value, ids=args.ids)
    entry = Ledger.open(args.ledger, store=args.store).submit(request, request_id=args.request_id)
    print(json.dumps(entry.to_dict(), indent=2, default=float))
    return 0


def _history(args: argparse.Namespace) -> int:
    from oblivio.ledger import Ledger

    entries = Ledger.open(args.ledger, store=args.store).history()
    if args.json:
        for entry in entries:
            print(json.dumps(entry.to_dict(), default=float))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.ledger}: {len(entries)} requests")
    for column in (
        "request",
        "status",
        "kind",
        "ids",
        "version",
        "method",
        "guarantee",
        "seconds",
        "finished (UTC)",
    ):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e.request_id,
            e.status,
            e.kind,
            str(len(e.affected_ids) or ""),
            "" if e.version is None else str(e.version),
            e.method or "",
            e.guarantee,
            "" if e.seconds is None else f"{e.seconds:.4f}",
            (e.finished_at or "")[:19],
        )
    Console(width=160).print(table)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``oblivio ledger ACTION``."""
    from oblivio.ledger import Ledger

    if args.ledger_command == "init":
        return _init(args)
    if args.ledger_command == "submit":
        return _submit(args)
    if args.ledger_command == "history":
        return _history(args)
    ledger = Ledger.open(args.ledger, store=args.store)
    if args.ledger_command == "status":
        print(json.dumps(ledger.status(args.record_id).to_dict(), indent=2, default=float))
        return 0
    if args.ledger_command == "verify":
        report = ledger.verify()
        print(report.summary())
        return 0 if report.ok else 1
    dropped = ledger.prune()
    print(f"pruned versions {dropped or 'none'}; kept version {ledger.version}")
    return 0
