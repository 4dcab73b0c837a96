"""Experiment configurations for ``oblivio run CONFIG.toml``.

A configuration names datasets (with loader options), models, unlearners (with options),
requests, seeds and audits; the runner executes every combination ("cell")::

    name = "quick"
    seeds = [0, 1]

    [[datasets]]
    name = "digits"
    options = { normalize = "l2" }
    holdout = 0.5                  # optional: test share set aside as the reference set

    [[models]]
    name = "logreg"
    kind = "logistic"              # logistic | mlp | cnn
    options = { l2 = 1e-3 }

    [[unlearners]]
    name = "second-order"          # a registry name
    options = { solver = "cholesky" }
    models = ["logreg"]            # optional: only with these models

    [[requests]]
    kind = "remove"                # remove | remove-class | features | relabel | sequence
    fraction = 0.01                # or count = 10

    [audit]
    mia = true

Every key is checked when the file is read; an unknown or ill-typed key raises
:class:`ConfigError` naming it (e.g. ``requests[1].fraction``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

MODEL_KINDS = ("logistic", "mlp", "cnn")
REQUEST_KINDS = ("remove", "remove-class", "features", "relabel", "sequence")


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the bad key."""


@dataclass(frozen=True)
class DatasetSpec:
    """A data set of the grid. ``holdout``: share of the test split set aside (seeded) as
    the reference set of methods that take one (``attach(train, holdout=...)``: the neural
    deletion methods' target on random records); the rest is the test set."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    holdout: float = 0.0

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnlearnerSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    label: str = ""

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class RequestSpec:
    kind: str
    count: int | None = None
    fraction: float | None = None
    class_: int | None = None
    features: tuple[Any, ...] = ()
    batch: int = 1
    label: str = ""

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        if self.kind == "remove-class":
            return f"remove-class-{self.class_}"
        size = f"{self.fraction:g}" if self.fraction is not None else str(self.count)
        if self.kind == "features" and self.features:
            size = f"{len(self.features)}named"
        return f"{self.kind}-{size}"


@dataclass(frozen=True)
class AuditSpec:
    mia: bool = True


@dataclass(frozen=True)
class Config:
    name: str
    datasets: tuple[DatasetSpec, ...]
    models: tuple[ModelSpec, ...]
    unlearners: tuple[UnlearnerSpec, ...]
    requests: tuple[RequestSpec, ...]
    seeds: tuple[int, ...] = (0,)
    audit: AuditSpec = AuditSpec()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def cells(self) -> list[Cell]:
        """Every combination to run, in a stable order."""
        cells = []
        for dataset in self.datasets:
            for model in self.models:
                for unlearner in self.unlearners:
                    if unlearner.models and model.name not in unlearner.models:
                        continue
                    for request in self.requests:
                        for seed in self.seeds:
                            cells.append(Cell(dataset, model, unlearner, request, seed))
        return cells


@dataclass(frozen=True)
class Cell:
    dataset: DatasetSpec
    model: ModelSpec
    unlearner: UnlearnerSpec
    request: RequestSpec
    seed: int

    @property
    def key(self) -> str:
        """Stable identifier of the cell (used to resume)."""
        payload = json.dumps(
            [
                asdict(self.dataset),
                asdict(self.model),
                asdict(self.unlearner),
                asdict(self.request),
                self.seed,
            ],
            sort_keys=True,
        )
        digest = hashlib.sha1(payload.encode()).hexdigest()[:12]
        return (
            f"{self.dataset.key}/{self.model.name}/{self.unlearner.key}/"
            f"{self.request.key}/seed{self.seed}/{digest}"
        )


def _expect(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"{where} must be {_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{where} must be {_names(types)}, got {value!r}")
    return value


def _names(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]} (allowed: {', '.join(sorted(allowed))})"
        )


def _list_of_tables(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    if key not in raw:
        raise ConfigError(f"missing [[{key}]]: the configuration needs at least one")
    tables = _expect(raw[key], list, key)
    if not tables:
        raise ConfigError(f"{key} is empty: the configuration needs at least one")
    for index, table in enumerate(tables):
        _expect(table, dict, f"{key}[{index}]")
    return tables


def parse_config(raw: dict[str, Any], name: str = "config") -> Config:
    """Validate a configuration dictionary (as read from TOML)."""
    from oblivio import datasets as dataset_registry
    from oblivio import unlearners as unlearner_registry

    _check_keys(
        raw, {"name", "seeds", "datasets", "models", "unlearners", "requests", "audit"}, "config"
    )
    name = _expect(raw.get("name", name), str, "name")
    seeds = tuple(
        _expect(s, int, f"seeds[{i}]")
        for i, s in enumerate(_expect(raw.get("seeds", [0]), list, "seeds"))
    )
    if not seeds:
        raise ConfigError("seeds is empty")

    dataset_specs = []
    for index, table in enumerate(_list_of_tables(raw, "datasets")):
        where = f"datasets[{index}]"
        _check_keys(table, {"name", "options", "label", "holdout"}, where)
        dataset_name = _expect(table.get("name"), str, f"{where}.name")
        holdout = float(_expect(table.get("holdout", 0.0), (int, float), f"{where}.holdout"))
        if not 0 <= holdout < 1:
            raise ConfigError(f"{where}.holdout must lie in [0, 1), got {holdout}")
        scheme = dataset_name.partition(":")[0]
        if scheme not in dataset_registry.available():
            raise ConfigError(
                f"{where}.name: unknown dataset {dataset_name!r}; "
                f"available: {', '.join(dataset_registry.available())}"
            )
        dataset_specs.append(
            DatasetSpec(
                dataset_name,
                dict(_expect(table.get("options", {}), dict, f"{where}.options")),
                _expect(table.get("label", ""), str, f"{where}.label"),
                holdout,
            )
        )

    model_specs = []
    for index, table in enumerate(_list_of_tables(raw, "models")):
        where = f"models[{index}]"
        _check_keys(table, {"name", "kind", "options"}, where)
        kind = _expect(table.get("kind"), str, f"{where}.kind")
        if kind not in MODEL_KINDS:
            raise ConfigError(f"{where}.kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
        model_specs.append(
            ModelSpec(
                _expect(table.get("name", kind), str, f"{where}.name"),
                kind,
                dict(_expect(table.get("options", {}), dict, f"{where}.options")),
            )
        )
    model_names = [m.name for m in model_specs]
    if len(set(model_names)) != len(model_names):
        raise ConfigError(f"models: names must be unique, got {model_names}")

    unlearner_specs = []
    for index, table in enumerate(_list_of_tables(raw, "unlearners")):
        where = f"unlearners[{index}]"
        _check_keys(table, {"name", "options", "models", "label"}, where)
        method = _expect(table.get("name"), str, f"{where}.name")
        if method not in unlearner_registry.available():
            raise ConfigError(
                f"{where}.name: unknown unlearner {method!r}; "
                f"available: {', '.join(unlearner_registry.available())}"
            )
        restrict = tuple(_expect(table.get("models", []), list, f"{where}.models"))
        for model_name in restrict:
            if model_name not in model_names:
                raise ConfigError(f"{where}.models: no model named {model_name!r}")
        unlearner_specs.append(
            UnlearnerSpec(
                method,
                dict(_expect(table.get("options", {}), dict, f"{where}.options")),
                restrict,
                _expect(table.get("label", ""), str, f"{where}.label"),
            )
        )

    request_specs = []
    for index, table in enumerate(_list_of_tables(raw, "requests")):
        where = f"requests[{index}]"
        _check_keys(
            table, {"kind", "count", "fraction", "class", "features", "batch", "label"}, where
        )
        kind = _expect(table.get("kind"), str, f"{where}.kind")
        if kind not in REQUEST_KINDS:
            raise ConfigError(
                f"{where}.kind must be one of {', '.join(REQUEST_KINDS)}, got {kind!r}"
            )
        count = table.get("count")
        fraction = table.get("fraction")
        if count is not None and (_expect(count, int, f"{where}.count") < 1):
            raise ConfigError(f"{where}.count must be >= 1, got {count}")
        if fraction is not None:
            fraction = float(_expect(fraction, (int, float), f"{where}.fraction"))
            if not 0 < fraction < 1:
                raise ConfigError(f"{where}.fraction must lie in (0, 1), got {fraction}")
        class_ = table.get("class")
        features = tuple(_expect(table.get("features", []), list, f"{where}.features"))
        if kind == "remove-class":
            _expect(class_, int, f"{where}.class")
        elif class_ is not None:
            raise ConfigError(f"{where}.class only applies to kind = 'remove-class'")
        elif not features and (count is None) == (fraction is None):
            raise ConfigError(f"{where}: give exactly one of count or fraction")
        batch = _expect(table.get("batch", 1), int, f"{where}.batch")
        if batch < 1:
            raise ConfigError(f"{where}.batch must be >= 1, got {batch}")
        request_specs.append(
            RequestSpec(
                kind,
                count,
                fraction,
                class_,
                features,
                batch,
                _expect(table.get("label", ""), str, f"{where}.label"),
            )
        )

    audit_table = _expect(raw.get("audit", {}), dict, "audit")
    _check_keys(audit_table, {"mia"}, "audit")
    audit = AuditSpec(mia=_expect(audit_table.get("mia", True), bool, "audit.mia"))
    return Config(
        name,
        tuple(dataset_specs),
        tuple(model_specs),
        tuple(unlearner_specs),
        tuple(request_specs),
        seeds,
        audit,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    return parse_config(raw, name=path.stem)
