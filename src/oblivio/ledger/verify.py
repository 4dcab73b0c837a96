"""Replaying a ledger to check it (``Ledger.verify``)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from oblivio.ledger.payload import from_payload
from oblivio.ledger.records import LedgerEntry, VerifyReport
from oblivio.unlearners import Unlearner

__all__ = ["EXACT_TOLERANCE", "replay", "state_difference"]

#: Largest parameter difference allowed between an exact method's replay and its record
#: (replays repeat the same deterministic computation, so they agree to rounding).
EXACT_TOLERANCE = 1e-6


def state_difference(a: Unlearner, b: Unlearner) -> float:
    """Largest absolute difference between two unlearners' model states (inf if unlike)."""
    if not np.array_equal(a.train_.ids, b.train_.ids):
        return float("inf")
    sa, sb = a.model_.get_state(), b.model_.get_state()
    sa.pop("__meta__", None)
    sb.pop("__meta__", None)
    if set(sa) != set(sb):
        return float("inf")
    worst = 0.0
    for key in sa:
        x, y = np.asarray(sa[key], dtype=float), np.asarray(sb[key], dtype=float)
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y))))
    return worst


def replay(
    stored: dict[int, str],
    entries: list[LedgerEntry],
    load: Callable[[str], Unlearner],
    current: Unlearner,
    forgotten: Collection[int] = (),
) -> VerifyReport:
    """Replay ``entries`` (applied, by version) from the oldest stored version.

    Checks (each failure is a sentence in ``problems``): every stored snapshot matches its
    hash and loads; each replayed request affects the recorded number of records; where
    a snapshot of a version exists, an exact method's replay equals it (parameters within
    ``EXACT_TOLERANCE``); for certified entries (Guo et al., ICML 2020, Thm. 3) the exact
    gradient residual of the stored (or, between snapshots, replayed) model is at most the
    recorded (or replayed) bound and the bound at most the budget; when every entry is
    exact, the replay reproduces ``current`` (with no entry to replay: the oldest stored
    snapshot equals ``current``); ``current``'s training set holds none of the
    ``forgotten`` ids (those removed by applied requests). The replay continues from each
    stored snapshot, so every check is against the model that was served.
    """
    base = min(stored)
    head = max([base] + [e.version for e in entries if e.version is not None])
    problems: list[str] = []
    checks: list[dict[str, Any]] = []
    try:
        model = load(stored[base])
    except Exception as error:  # noqa: BLE001 - reported, not raised
        problems.append(f"version {base}: cannot load its snapshot: {error}")
        return VerifyReport(False, base, head, 0, checks, problems)
    for entry in entries:
        check, model = _step(model, entry, stored.get(entry.version), load, problems)
        checks.append(check)
    final = state_difference(model, current)
    if all(e.exact for e in entries) and not final <= EXACT_TOLERANCE:
        problems.append(
            f"the replay of exact requests does not reproduce the current model "
            f"(difference {final:.3g})"
        )
    kept = np.intersect1d(current.train_.ids, np.fromiter(forgotten, dtype=np.int64))
    if kept.size:
        problems.append(
            f"the current version still holds {kept.size} removed records "
            f"(ids {kept[:10].tolist()})"
        )
    return VerifyReport(not problems, base, head, len(entries), checks, problems)


def _step(
    replay: Unlearner,
    entry: LedgerEntry,
    name: str | None,
    load: Callable[[str], Unlearner],
    problems: list[str],
) -> tuple[dict[str, Any], Unlearner]:
    where = f"version {entry.version} ({entry.request_id})"
    result = replay.forget(from_payload(entry.request))
    check: dict[str, Any] = {
        "request_id": entry.request_id,
        "version": entry.version,
        "method": entry.method,
        "exact": entry.exact,
    }
    if result.n_affected != len(entry.affected_ids):
        problems.append(
            f"{where}: replay affected {result.n_affected} records, "
            f"the ledger recorded {len(entry.affected_ids)}"
        )
    stored = None
    if name is not None:
        try:
            stored = load(name)
        except Exception as error:  # noqa: BLE001 - reported, not raised
            problems.append(f"{where}: cannot load its snapshot: {error}")
    if stored is not None:
        difference = state_difference(replay, stored)
        check["max_difference"] = difference
        if entry.exact and not difference <= EXACT_TOLERANCE:
            problems.append(
                f"{where}: exact method, but the replay differs from the "
                f"stored version by {difference:.3g}"
            )
    if entry.certificate is not None:
        certificate = entry.certificate
        check.update(bound=certificate.residual_bound, budget=certificate.budget_total)
        if not certificate.residual_bound <= certificate.budget_total:
            problems.append(
                f"{where}: bound {certificate.residual_bound:.3g} exceeds "
                f"the budget {certificate.budget_total:.3g}"
            )
        measured = stored if stored is not None else replay
        bound = (
            certificate.residual_bound
            if stored is not None
            else result.certificate.residual_bound
            if result.certificate
            else None
        )
        residual_of = getattr(measured, "gradient_residual", None)
        if callable(residual_of) and bound is not None:
            residual = float(residual_of())
            check["residual"] = residual
            if not residual <= bound * (1 + 1e-9) + 1e-12:
                problems.append(
                    f"{where}: gradient residual {residual:.3g} exceeds the "
                    f"certified bound {bound:.3g}"
                )
    # Continue from what was served where it is stored, else from the replay.
    return check, (stored if stored is not None else replay)
