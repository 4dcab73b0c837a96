"""Unintended memorisation: unlearning a canary from a character LSTM.

Reproduces the protocol of Warnecke et al. (NDSS 2023, Sec. 6.2) after Carlini et al.'s
*Secret Sharer* (USENIX Security 2019): insert "my telephone number is 0123456789" a few
times into a public-domain text, train a character LSTM, measure the canary's exposure and
the greedy completion of its prefix, then unlearn by replacing the number everywhere with a
string of the same length (a :class:`~oblivio.Replace` request over the affected windows)
and compare methods with retraining on the cleaned text.

Exposure uses teacher forcing and the skew-normal approximation over the digit alphabet
(|R| = 10^10, 33.2 bits); the fit of the *original* model is reused after unlearning, as in
the paper (refit with ``refit=True``).

Methods (all but retraining start from the original model; the rows say which parameters
move):

* ``first-order``: ``theta - tau G`` over **all** layers (as the paper's Keras code), one row
  per ``tau`` in ``first_order_taus``. ``tau`` is in oblivio's sum convention and was tuned
  on this set-up, as the reference prescribes (§2: "tau must be tuned"; the paper's 3e-4
  is a mean-convention value). The curvature default ``tau="auto"`` (``1 / lambda_max``) is
  safe but does not move a model that memorised the canary: the other windows dominate the
  curvature along ``G`` (even the exact line-search step along ``G``,
  ``|G|^2 / G^T H G``, left the exposure unchanged in our runs).
* ``second-order-cg``: Newton step on the **last layer** (its Hessian is positive
  semi-definite), damping 1 on the sum Hessian, ``cg_iterations`` conjugate-gradient
  iterations; usually a truncated-Newton step (diagnostic ``solver_truncated``).
* ``second-order-lissa``: the same system by LiSSA (reference §4.3), ``lissa_iterations``
  mini-batch steps (patience = iterations: a fixed budget, no early stopping). A Neumann
  series needs about ``condition number`` steps where CG needs its square root, hence the
  larger budget; one pass over the data (the reference's default) barely moves the model.
* Both second-order rows check that the step lowers the edited objective (the default on
  networks, ``objective_check``) and re-damp it otherwise; the notes column says so.
* ``finetune`` (one epoch on the cleaned windows) and ``retrain`` (from scratch, the oracle).

The model follows the reference's: an L2 penalty of 1e-4 on the mean loss in Keras
(``1e-4 ||w||^2``) is ``l2 = 2e-4`` in oblivio's convention (``l2 / 2 ||w||^2`` per record).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oblivio._io import write_json, write_text
from oblivio.audit.exposure import exposure_skewnormal
from oblivio.data.text import CharCorpus, alice_path, load_text, replace_secret


@dataclass
class CanarySettings:
    """Sizes that train in a few minutes on 2 CPU cores (defaults) or seconds (``quick``)."""

    #: The text to train on; ``None`` finds Alice in Wonderland like the ``alice`` loader
    #: (``$OBLIVIO_DATA/alice/alice_in_wonderland.txt``, ...; see ``alice_path``).
    corpus: str | None = None
    skip: int = 265
    max_chars: int | None = 40_000
    prefix: str = "`my telephone number is "
    secret: str = "0123456789"
    suffix: str = "!' said alice.\n\n  "
    replacement: str = "not there "
    times: int = 8
    window: int = 24
    embed: int = 32
    hidden: int = 128
    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-3
    l2: float = 2e-4
    n_samples: int = 4000
    refit: bool = False
    eval_windows: int = 4000
    seed: int = 0
    methods: tuple[str, ...] = (
        "first-order",
        "second-order-cg",
        "second-order-lissa",
        "finetune",
        "retrain",
    )
    first_order_taus: tuple[float, ...] = (1e-3, 3e-3)
    damping: float = 1.0
    cg_iterations: int = 30
    lissa_iterations: int = 2000
    lissa_batch_size: int = 512

    @classmethod
    def quick(cls, **overrides: Any) -> CanarySettings:
        """A seconds-long version for tests and CI."""
        values = dict(
            max_chars=6_000,
            times=4,
            embed=16,
            hidden=32,
            epochs=3,
            n_samples=300,
            eval_windows=500,
            window=12,
            methods=("first-order", "second-order-cg", "retrain"),
            first_order_taus=(1e-2,),
            lissa_iterations=300,
        )
        values.update(overrides)
        return cls(**values)


@dataclass
class CanaryRow:
    method: str
    exposure: float
    log_perplexity: float
    accuracy: float
    seconds: float
    completion: str
    diagnostics: dict[str, float] = field(default_factory=dict)
    layers: str = "all"
    note: str = ""


def step_note(diagnostics: dict[str, float]) -> str:
    """What an influence update did, in words, from its diagnostics ("" for other methods)."""
    if "grad_diff_norm" not in diagnostics:  # not an influence update
        return ""
    applied = int(diagnostics.get("steps", 0))
    skipped = int(diagnostics.get("steps_skipped", 0))
    parts = []
    if skipped:
        parts.append(f"SKIPPED {skipped} step(s): solver failed, model not updated there")
    if applied == 0 and not skipped:
        parts.append("no update (G = 0)")
    elif applied:
        parts.append(f"{applied} step(s)")
    if "cg_iterations" in diagnostics:
        parts.append(f"CG {int(diagnostics['cg_iterations'])} it.")
    elif "lissa_diverged" in diagnostics:
        parts.append(f"LiSSA {int(diagnostics.get('solver_iterations', 0))} it.")
    elif "condition" in diagnostics:
        parts.append("Cholesky of the dense Hessian")
    if diagnostics.get("solver_truncated"):
        parts.append(f"truncated (residual {diagnostics.get('solver_residual', float('nan')):.2g})")
    if diagnostics.get("damping_increases"):
        parts.append(f"damping raised to {diagnostics['damping']:.3g}")
    if diagnostics.get("objective_rejections"):
        rejected = int(diagnostics["objective_rejections"])
        parts.append(f"{rejected} step(s) re-damped (objective rose)")
    if "tau" in diagnostics:
        parts.append(f"tau {diagnostics['tau']:.3g}")
    return ", ".join(parts)


def greedy_completion(model: Any, corpus: CharCorpus, prompt: str, length: int = 40) -> str:
    """Most likely continuation of ``prompt``, one character at a time."""
    tokens = list(corpus.encode(prompt))
    for _ in range(length):
        window = np.asarray(tokens[-corpus.window :], dtype=np.int64)
        if window.size < corpus.window:
            window = np.concatenate([np.zeros(corpus.window - window.size, np.int64), window])
        tokens.append(int(np.argmax(model.predict_proba(window[None, :])[0])))
    return corpus.decode(np.asarray(tokens[len(prompt) :]))


def _last_layer_names(module: Any) -> list[str]:
    """Parameter names of the module's final layer (weight and bias)."""
    names = [name for name, p in module.named_parameters() if p.requires_grad]
    last_prefix = names[-1].rsplit(".", 1)[0]
    return [name for name in names if name.rsplit(".", 1)[0] == last_prefix]


def count_steps(settings: CanarySettings) -> int:
    """Steps :func:`run_canary` reports through ``progress``: training, then one per variant."""
    return 1 + sum(len(_variants(name, settings)) for name in settings.methods)


def _variants(name: str, settings: CanarySettings) -> list[tuple[str, str, str, dict]]:
    """``(row label, registry name, layers, options)`` for a method name of the settings."""
    if name == "first-order":
        return [
            (f"first-order (tau={tau:g})", "first-order", "all", {"tau": tau})
            for tau in settings.first_order_taus
        ]
    if name == "second-order-cg":
        options = dict(
            solver="cg",
            damping=settings.damping,
            max_iter=settings.cg_iterations,
            on_failure="skip",
        )
        return [(name, "second-order", "last", options)]
    if name == "second-order-lissa":
        options = dict(
            solver="lissa",
            damping=settings.damping,
            max_iter=settings.lissa_iterations,
            lissa_patience=settings.lissa_iterations,
            lissa_batch_size=settings.lissa_batch_size,
            curvature_records=4096,
            on_failure="skip",
        )
        return [(name, "second-order", "last", options)]
    if name == "finetune":
        return [(name, "finetune", "all", {"epochs": 1})]
    if name == "retrain":
        return [(name, "retrain", "all", {})]
    raise ValueError(f"unknown canary method {name!r}")


def run_canary(
    settings: CanarySettings, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the experiment; return settings, the original model's numbers and one row per method."""
    import torch

    from oblivio import unlearners
    from oblivio.models import CharLSTM, TorchModel

    torch.set_num_threads(1)
    progress = progress or (lambda message: None)
    canary = settings.prefix + settings.secret + settings.suffix
    corpus, split = load_text(
        settings.corpus if settings.corpus is not None else alice_path(),
        window=settings.window,
        skip=settings.skip,
        max_chars=settings.max_chars,
        canary=canary,
        canary_times=settings.times,
        canary_seed=settings.seed,
    )
    train = split.train
    vocab = len(corpus.vocab)
    prefix_tokens = corpus.encode(settings.prefix)
    secret_tokens = corpus.encode(settings.secret)
    digits = corpus.encode("0123456789")

    def make_model(params: list[str] | None = None) -> Any:
        module = CharLSTM(vocab, embed=settings.embed, hidden=settings.hidden)
        return TorchModel(
            module,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            l2=settings.l2,
            seed=settings.seed,
            params=params,
        )

    rng = np.random.default_rng(settings.seed)
    eval_ids = rng.choice(train.ids, size=min(settings.eval_windows, len(train)), replace=False)

    def measure(model: Any, fit: Any) -> tuple[Any, float, str]:
        result = exposure_skewnormal(
            model,
            prefix_tokens,
            secret_tokens,
            digits,
            window=settings.window,
            n_samples=settings.n_samples,
            seed=settings.seed,
            fit=fit,
        )
        accuracy = float(
            np.mean(model.predict(train.select(eval_ids).X) == train.select(eval_ids).y)
        )
        completion = greedy_completion(model, corpus, settings.prefix, len(settings.secret) + 20)
        return result, accuracy, completion

    progress(f"training CharLSTM on {len(train):,} windows ({settings.epochs} epochs)")
    start = time.perf_counter()
    original = make_model().fit(train)
    train_seconds = time.perf_counter() - start
    before, before_accuracy, before_completion = measure(original, None)
    fit = None if settings.refit else before.fit
    request = replace_secret(corpus, train, settings.secret, settings.replacement)
    last_layer = _last_layer_names(original.module_)

    rows = []
    for label, registered, layers, options in (
        variant for name in settings.methods for variant in _variants(name, settings)
    ):
        progress(f"unlearning with {label}")
        model = make_model(last_layer if layers == "last" else None)
        model.set_state(copy.deepcopy(original.get_state()))
        unlearner = unlearners.create(registered, model, **options).attach(train)
        result = unlearner.forget(request)
        seconds = result.seconds + getattr(unlearner, "prepare_seconds_", 0.0)
        after, accuracy, completion = measure(unlearner.model_, fit)
        diagnostics = dict(result.diagnostics)
        rows.append(
            CanaryRow(
                label,
                after.exposure,
                after.log_perplexity,
                accuracy,
                seconds,
                completion,
                diagnostics,
                layers,
                step_note(diagnostics),
            )
        )
    return {
        "settings": asdict(settings),
        "n_windows": len(train),
        "n_affected": len(request.ids),
        "vocab": vocab,
        "train_seconds": train_seconds,
        "original": asdict(
            CanaryRow(
                "original",
                before.exposure,
                before.log_perplexity,
                before_accuracy,
                train_seconds,
                before_completion,
            )
        ),
        "space_bits": before.space_bits,
        "fit": before.fit,
        "rows": [asdict(row) for row in rows],
    }


def format_table(report: dict[str, Any]) -> str:
    """Markdown table of a :func:`run_canary` report."""
    lines = [
        f"Canary exposure (skew-normal over digits, {report['space_bits']:.1f} bits max); "
        f"{report['n_affected']} of {report['n_windows']:,} windows changed by the request.",
        "",
        "| model | layers | exposure (bits) | log-ppl (bits) | window accuracy | seconds | "
        "completion | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in [report["original"], *report["rows"]]:
        completion = row["completion"].replace("\n", "⏎").replace("|", "¦")
        lines.append(
            f"| {row['method']} | {row.get('layers', 'all')} | {row['exposure']:.2f} | "
            f"{row['log_perplexity']:.1f} | {row['accuracy']:.3f} | {row['seconds']:.2f} | "
            f"`{completion}` | {row.get('note', '')} |"
        )
    return "\n".join(lines) + "\n"


def save_report(report: dict[str, Any], folder: str | Path) -> Path:
    """Write ``canary.json`` and ``canary.md`` into ``folder`` (atomically)."""
    folder = Path(folder)
    write_json(folder / "canary.json", report)
    return write_text(folder / "canary.md", format_table(report))
