"""Plots of audit results and certificates (matplotlib, Agg canvas: no display needed).

Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas, never through
``pyplot``, so importing this module changes no global state and works on headless machines.
Every function takes an optional ``ax`` and returns the :class:`~matplotlib.figure.Figure`;
save it with ``fig.savefig("roc.png")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from oblivio.audit.mia import (
    AttackResult,
    AttackResults,
    RocCurve,
    per_record_loss,
    posteriors,
)
from oblivio.audit.unlearning_attack import (
    BASELINE,
    FEATURES,
    UnlearningAttackResult,
    UnlearningAttackResults,
)
from oblivio.data import Dataset

__all__ = ["plot_certificate_budget", "plot_loss_histogram", "plot_roc", "plot_unlearning_auc"]


def _axes(ax: Axes | None, size: tuple[float, float] = (5.0, 4.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _curves(results: Any) -> list[tuple[str, RocCurve, float | None]]:
    if isinstance(results, RocCurve):
        return [("attack", results, None)]
    if isinstance(results, AttackResult):
        return [(results.attack_type, results.roc, results.auc)]
    if isinstance(results, UnlearningAttackResult):
        name = f"{results.feature} ({results.classifier}, {results.defense})"
        return [(name, results.roc, results.auc)]
    if isinstance(results, (AttackResults, UnlearningAttackResults)):
        results = list(results.results)
    if isinstance(results, Sequence):
        curves = []
        for item in results:
            curves.extend(_curves(item))
        return curves
    raise TypeError(f"cannot plot ROC curves of a {type(results).__name__}")


def plot_roc(
    results: Any,
    *,
    ax: Axes | None = None,
    log_scale: bool = True,
    title: str | None = None,
) -> Figure:
    """ROC curves, on log-log axes by default (Carlini et al., S&P 2022, Sec. III-B).

    Parameters
    ----------
    results : AttackResults, UnlearningAttackResults, AttackResult, RocCurve, or a list
        Curves to draw (one per attack / feature cell). For many cells, pass a filtered
        list, e.g. ``[r for r in res if r.classifier == "dt" and r.defense == "none"]``.
    ax : matplotlib Axes, optional
        Draw into these axes instead of a new figure.
    log_scale : bool
        Log-scaled FPR and TPR (low-FPR behaviour visible); the chance line is the diagonal.
    title : str, optional
    """
    figure, ax = _axes(ax)
    low = 1e-4
    for name, curve, auc in _curves(results):
        label = name if auc is None else f"{name} (AUC {auc:.3f})"
        fpr, tpr = curve.fpr, curve.tpr
        if log_scale:
            fpr, tpr = np.maximum(fpr, low), np.maximum(tpr, low)
        ax.plot(fpr, tpr, label=label, linewidth=1.2)
    ax.plot(
        [low if log_scale else 0, 1],
        [low if log_scale else 0, 1],
        "k--",
        linewidth=0.8,
        label="chance",
    )
    if log_scale:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, 1)
        ax.set_ylim(low, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return figure


def plot_loss_histogram(
    model: Any,
    forget: Dataset,
    test: Dataset,
    *,
    reference: Any = None,
    bins: int = 30,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Histograms of per-record cross-entropy on the forget and test sets.

    After good unlearning the forget losses look like the test losses, as they do for a
    model retrained without the forget set (``reference``, drawn as outlines when given).
    The loss-threshold attack (Yeom et al., CSF 2018) exploits the gap between the two.
    """
    figure, ax = _axes(ax)
    n_classes = max(forget.n_classes, test.n_classes)
    series = [("forget", model, forget, "C0"), ("test", model, test, "C1")]
    if reference is not None:
        series += [
            ("forget (retrained)", reference, forget, "C2"),
            ("test (retrained)", reference, test, "C3"),
        ]
    losses = {
        name: per_record_loss(posteriors(m, d.X, n_classes), d.y)
        for name, m, d, _ in series
        if len(d)
    }
    if not losses:
        raise ValueError("forget and test are both empty")
    top = max(float(np.max(v)) for v in losses.values())
    edges = np.linspace(0.0, max(top, 1e-6), bins + 1)
    for name, _, _, color in series:
        if name not in losses:
            continue
        outline = "retrained" in name
        ax.hist(
            losses[name],
            bins=edges,
            density=True,
            alpha=0.9 if outline else 0.45,
            histtype="step" if outline else "stepfilled",
            color=color,
            label=name,
        )
    ax.set_xlabel("per-record cross-entropy")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return figure


def plot_unlearning_auc(
    results: UnlearningAttackResults,
    *,
    defense: str = "none",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Bar chart of the unlearning attack's AUC per feature (groups) and classifier (bars).

    The classical baseline (P_o only) is the last group; the dashed line marks chance.
    """
    frame = results.to_frame()
    frame = frame[frame["defense"] == defense]
    if frame.empty:
        raise ValueError(f"no results for defence {defense!r}")
    features = [f for f in (*FEATURES, BASELINE) if f in set(frame["feature"])]
    classifiers = list(dict.fromkeys(frame["classifier"]))
    figure, ax = _axes(ax, (1.2 * len(features) + 2, 4.0))
    width = 0.8 / len(classifiers)
    x = np.arange(len(features))
    for i, classifier in enumerate(classifiers):
        part = frame[frame["classifier"] == classifier].set_index("feature")
        heights = [float(part["auc"].get(f, np.nan)) for f in features]
        ax.bar(x + (i - (len(classifiers) - 1) / 2) * width, heights, width, label=classifier)
    ax.axhline(0.5, color="k", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, features, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("attack AUC (target side)")
    ax.legend(title="attack model", fontsize="small")
    ax.set_title(title or f"unlearning attack, defence: {defense}")
    return figure


def plot_certificate_budget(
    history: Any,
    *,
    epsilons: Sequence[float] = (),
    true_residuals: Sequence[tuple[int, float]] = (),
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Accumulated residual bound against the (epsilon, delta) budget, request by request.

    Guo et al. (ICML 2020), Sec. 5: a certified-removal model may take Newton steps while
    the accumulated gradient-residual bound ``beta`` stays below ``sigma * epsilon / c``;
    the unlearner retrains when a step would cross it (marked with a dotted vertical line).

    Parameters
    ----------
    history : Unlearner or sequence of UnlearnResult
        A certified unlearner (its ``history_`` is used) or the results of its requests;
        results without a certificate (``sigma=0``) cannot be plotted.
    epsilons : sequence of float
        Further epsilons whose budgets ``sigma * epsilon / c`` are drawn as dashed lines,
        to read off how many requests each would allow.
    true_residuals : sequence of (request number, value)
        Measured ``||grad L_b(w; D')||`` to overlay (e.g. from
        :meth:`~oblivio.unlearners.CertifiedRemoval.gradient_residual`); they must lie
        below the bound.
    """
    from oblivio.unlearners.certified import budget

    results = list(getattr(history, "history_", history))
    certificates = [r.certificate for r in results]
    if not certificates or any(c is None for c in certificates):
        raise ValueError(
            "plot_certificate_budget needs results that carry a certificate (a certified "
            "unlearner with sigma > 0 and at least one request)"
        )
    figure, ax = _axes(ax, (6.0, 4.0))
    steps = np.arange(1, len(results) + 1)
    used = np.array([c.budget_used for c in certificates])
    # Markers: after a single request a line alone would draw nothing.
    ax.plot(steps, used, color="C0", marker="o", markersize=4, label="accumulated bound")
    ax.set_xlim(0.5, len(results) + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    last = certificates[-1]
    ax.axhline(
        last.budget_total, color="C3", linewidth=1.0, label=f"budget at epsilon = {last.epsilon:g}"
    )
    for i, epsilon in enumerate(epsilons):
        ax.axhline(
            budget(epsilon, last.delta, last.sigma),
            color=f"C{4 + i}",
            linestyle="--",
            linewidth=0.8,
            label=f"budget at epsilon = {epsilon:g}",
        )
    for step, result in zip(steps, results, strict=True):
        if result.retrained:
            ax.axvline(step, color="0.5", linestyle=":", linewidth=0.8)
    if true_residuals:
        where, values = zip(*true_residuals, strict=True)
        ax.plot(where, values, "o", color="C2", markersize=4, label="true residual")
    if np.all(used > 0):
        ax.set_yscale("log")
    ax.set_xlabel("request")
    ax.set_ylabel("gradient residual (bound)")
    ax.legend(fontsize="small")
    ax.set_title(title or f"certified removal: sigma = {last.sigma:g}, delta = {last.delta:g}")
    return figure
