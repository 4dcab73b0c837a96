"""What the ledger hands back: entries, record states and verification reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from oblivio.unlearners import Certificate

__all__ = ["LedgerEntry", "RecordStatus", "VerifyReport", "guarantee"]


@dataclass(frozen=True)
class LedgerEntry:
    """One request as the ledger recorded it.

    Attributes
    ----------
    request_id : str
        The caller's id (idempotency key).
    status : str
        ``applied``, ``rejected`` (invalid; nothing changed), ``pending`` (in flight),
        ``interrupted`` (the writer stopped before committing; not applied, may be
        resubmitted) or ``failed`` (the method raised; not applied, may be resubmitted).
    kind : str
        ``remove``, ``relabel`` or ``replace-features``.
    request : dict
        The request's ids and metadata (never record features).
    affected_ids : tuple of int
        Records the request removed or edited (resolved ids for feature requests).
    version : int or None
        Model version the request produced (applied entries only).
    method, exact, retrained, seconds, certificate, diagnostics
        From the method's :class:`~oblivio.UnlearnResult`.
    error : str or None
        Why a request was rejected, failed or interrupted.
    submitted_at, finished_at : str
        UTC times (ISO 8601).
    """

    request_id: str
    status: str
    kind: str
    request: dict[str, Any]
    affected_ids: tuple[int, ...] = ()
    version: int | None = None
    method: str | None = None
    exact: bool | None = None
    retrained: bool | None = None
    seconds: float | None = None
    certificate: Certificate | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    submitted_at: str = ""
    finished_at: str | None = None

    @property
    def guarantee(self) -> str:
        return guarantee(self)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["affected_ids"] = list(self.affected_ids)
        out["guarantee"] = self.guarantee
        return out

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LedgerEntry:
        certificate = row.get("certificate")
        return cls(
            request_id=row["request_id"],
            status=row["status"],
            kind=row["kind"],
            request=row["request"],
            affected_ids=tuple(int(i) for i in row.get("affected") or ()),
            version=row.get("version"),
            method=row.get("method"),
            exact=row.get("exact"),
            retrained=row.get("retrained"),
            seconds=row.get("seconds"),
            certificate=None if certificate is None else Certificate(**certificate),
            diagnostics=row.get("diagnostics") or {},
            error=row.get("error"),
            submitted_at=row["submitted_at"],
            finished_at=row.get("finished_at"),
        )


def guarantee(entry: LedgerEntry) -> str:
    """``exact``, ``exact (retrained)``, ``certified (epsilon, delta)`` or ``approximate``."""
    if entry.status != "applied":
        return "none"
    if entry.exact:
        return "exact"
    if entry.retrained:
        return "exact (retrained)"
    if entry.certificate is not None:
        c = entry.certificate
        return f"certified (epsilon={c.epsilon:g}, delta={c.delta:g})"
    return "approximate"


@dataclass(frozen=True)
class RecordStatus:
    """Whether a record is still in the model's training set.

    ``state`` is ``present`` (never touched), ``forgotten`` (removed), ``edited``
    (relabelled or features replaced; still present) or ``unknown`` (never in the training
    set). For forgotten and edited records the other fields say by which request.
    """

    record_id: int
    state: str
    request_id: str | None = None
    version: int | None = None
    time: str | None = None
    method: str | None = None
    guarantee: str | None = None
    certificate: Certificate | None = None

    @property
    def forgotten(self) -> bool:
        return self.state == "forgotten"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    """Result of :meth:`Ledger.verify`.

    Attributes
    ----------
    ok : bool
        True when no check failed.
    base_version : int
        Oldest stored version; the replay starts there (earlier versions were pruned:
        by default it is the current version and nothing is replayed).
    head_version : int
        The current version.
    replayed : int
        Applied entries replayed.
    checks : list of dict
        One row per replayed entry: ``request_id``, ``version``, ``method``, ``exact``,
        and what was measured (``max_difference`` to a stored snapshot, ``residual``,
        ``bound``, ``budget``).
    problems : list of str
        One sentence per failed check.
    """

    ok: bool
    base_version: int
    head_version: int
    replayed: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"FAILED ({len(self.problems)} problems)"
        lines = [
            f"ledger verify: {verdict}; replayed {self.replayed} requests from version "
            f"{self.base_version} to {self.head_version}"
        ]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
