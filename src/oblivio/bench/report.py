"""Reports of a results folder: a Markdown summary and a self-contained HTML page.

The comparison table follows the field's format (e.g. Chen et al., CCS 2021; Cha et al.,
AAAI 2024): accuracy on the forget / retain / test sets, membership-inference AUC on the
forget set, gap to retraining, seconds and speed-up, as mean ± std over seeds.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from oblivio._io import write_text
from oblivio.bench.runner import read_records

GROUP = ["dataset", "model", "request", "method", "goal"]
COLUMNS = [
    ("acc_forget", "forget acc"),
    ("acc_retain", "retain acc"),
    ("acc_test", "test acc"),
    ("mia_auc", "MIA AUC"),
    ("mia_efficacy", "MIA-efficacy"),
    ("avg_gap", "avg gap (pts)"),
    ("test_drop", "test drop (pts)"),
    ("gap_test", "test gap"),
    ("gap_forget", "forget gap"),
    ("gap_mia", "MIA gap"),
    ("distance", "dist. to retrained"),
    ("seconds", "seconds"),
    ("speedup", "speed-up"),
    ("speedup_vs_warm", "speed-up vs warm"),
]


def summary_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (dataset, model, request, method): mean and std over seeds."""
    if not records:
        return pd.DataFrame()
    frame = pd.DataFrame.from_records(records)
    # results written before methods declared goals: those methods all delete
    frame["goal"] = frame["goal"].fillna("deletion") if "goal" in frame else "deletion"
    metrics = [c for c, _ in COLUMNS if c in frame.columns]
    grouped = frame.groupby(GROUP, sort=False)[metrics]
    means = grouped.mean()
    stds = grouped.std(ddof=0).fillna(0.0)
    counts = grouped.size().rename("seeds")
    result = means.join(stds.add_suffix("_std")).join(counts)
    return result.reset_index()


def _cell(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.0f}" if abs(mean) >= 100 else f"{mean:.{digits}g}"
    return text if not std else f"{text} ± {std:.2g}"


def markdown_table(summary: pd.DataFrame) -> str:
    if summary.empty:
        return "_no results_\n"
    present = [(c, label) for c, label in COLUMNS if c in summary.columns]
    header = "| " + " | ".join(GROUP + [label for _, label in present]) + " |"
    rule = "|" + "---|" * (len(GROUP) + len(present))
    lines = [header, rule]
    for _, row in summary.iterrows():
        values = [str(row[g]) for g in GROUP]
        values += [_value(row, c) for c, _ in present]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _value(row: Any, column: str, *, std: bool = True) -> str:
    """A table cell; a correction method's avg gap is bracketed (it is not its target)."""
    text = _cell(row[column], row.get(f"{column}_std", 0.0) if std else 0.0)
    if column == "avg_gap" and row.get("goal") == "correction" and text != "–":
        return f"({text})"
    return text


def _figure_png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def method_colours(methods: Any) -> dict[str, Any]:
    """One colour per method, the same in every plot of a report (sorted names)."""
    import matplotlib

    names = sorted({str(m) for m in methods})
    palette = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def model_markers(models: Any) -> dict[str, str]:
    """One marker shape per model (sorted names)."""
    names = sorted({str(m) for m in models})
    return {name: _MARKERS[i % len(_MARKERS)] for i, name in enumerate(names)}


def _two_legends(axis: Any, colours: dict[str, Any], markers: dict[str, str]) -> None:
    """Colour = method, shape = model: two legends with proxy handles."""
    from matplotlib.lines import Line2D

    def handle(**style: Any) -> Line2D:
        return Line2D([], [], linestyle="", markersize=6, **style)

    methods = axis.legend(
        [handle(marker="o", color=c) for c in colours.values()],
        list(colours),
        title="method",
        fontsize=6,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    if len(markers) > 1:
        axis.add_artist(methods)
        axis.legend(
            [handle(marker=m, color="0.3") for m in markers.values()],
            list(markers),
            title="model",
            fontsize=6,
            title_fontsize=7,
            loc="lower left",
            bbox_to_anchor=(1.01, 0.0),
        )


def plots(records: list[dict[str, Any]]) -> dict[str, str]:
    """Base64 PNGs: speed-up vs gap, ROC curves, certified budget, exposure (if any)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: dict[str, str] = {}
    if not records:
        return images
    frame = pd.DataFrame.from_records(records)

    colours = method_colours(frame["method"])
    markers = model_markers(frame["model"]) if "model" in frame.columns else {}

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for (method, model), group in frame.groupby(["method", "model"], sort=False):
        axis.scatter(
            group["speedup"].clip(lower=1e-3),
            group["gap_test"],
            color=colours[method],
            marker=markers.get(model, "o"),
            s=28,
        )
    axis.set_xscale("log")
    axis.set_xlabel("speed-up over retraining from scratch (log)")
    axis.set_ylabel("|test accuracy − retrained|")
    axis.set_title("Speed-up vs gap to retraining (each point a cell)")
    axis.grid(alpha=0.3)
    _two_legends(axis, colours, markers)
    images["Speed-up vs gap to retraining"] = _figure_png(figure)

    if "roc" in frame.columns:
        figure, axis = plt.subplots(figsize=(5.6, 4.8))
        seen = set()
        for record in records:
            roc = record.get("roc") or {}
            if not roc.get("fpr") or record["method"] in seen:
                continue
            seen.add(record["method"])
            cell = "/".join(str(record.get(k, "?")) for k in ("dataset", "model", "request"))
            axis.plot(
                roc["fpr"],
                roc["tpr"],
                color=colours[record["method"]],
                label=f"{record['method']}: {cell}, seed {record.get('seed', '?')} "
                f"(AUC {record['mia_auc']:.2f})",
            )
        axis.plot([0, 1], [0, 1], "k--", lw=0.8)
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.set_title(
            "Loss-threshold MIA on the forget set\none cell per method (the table's AUCs are "
            "means over seeds)",
            fontsize=9,
        )
        axis.legend(fontsize=6)
        images["ROC curves of the membership-inference audit"] = _figure_png(figure)

    traces = [r for r in records if r.get("budget_trace")]
    if traces:
        figure, axis = plt.subplots(figsize=(6.5, 4.2))
        for record in traces[:6]:
            used = [step["used"] for step in record["budget_trace"]]
            axis.plot(
                range(1, len(used) + 1),
                used,
                marker="o",  # visible after a single request too
                markersize=3,
                label=f"{record['method']} seed {record['seed']}",
            )
            retrains = [i + 1 for i, step in enumerate(record["budget_trace"]) if step["retrained"]]
            axis.scatter(retrains, [used[i - 1] for i in retrains], marker="x", color="red")
        axis.axhline(
            traces[0]["budget_trace"][0]["total"], color="k", ls="--", lw=0.8, label="budget"
        )
        axis.set_xlabel("removal request")
        axis.set_ylabel("accumulated residual bound")
        axis.set_title("Certified budget consumption (x = retrain)")
        axis.legend(fontsize=7)
        images["Certified budget consumption"] = _figure_png(figure)

    exposures = [r for r in records if "exposure_before" in r.get("diagnostics", {})]
    if exposures:
        figure, axis = plt.subplots(figsize=(6, 4))
        names = [r["method"] for r in exposures]
        axis.bar(names, [r["diagnostics"]["exposure_after"] for r in exposures], label="after")
        axis.axhline(exposures[0]["diagnostics"]["exposure_before"], color="r", label="before")
        axis.set_ylabel("canary exposure (bits)")
        axis.legend()
        images["Canary exposure before and after"] = _figure_png(figure)
    return images


def write_report(results_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``results_dir``; return their paths."""
    results_dir = Path(results_dir)
    records = read_records(results_dir)
    if not records:
        raise FileNotFoundError(
            f"no results in {results_dir} (expected {results_dir}/results.jsonl)"
        )
    summary = summary_frame(records)
    table = markdown_table(summary)
    environment = {}
    if (results_dir / "environment.json").exists():
        environment = json.loads((results_dir / "environment.json").read_text())
    config_name = ""
    if (results_dir / "config.json").exists():
        config_name = json.loads((results_dir / "config.json").read_text()).get("name", "")
    header = f"# oblivio report: {config_name or results_dir.name}\n\n"
    notes = (
        f"{len(records)} cells; values are mean ± std over seeds. Gaps are absolute "
        "differences to the model retrained from scratch on the same edited data; speed-up "
        "is retraining time (one retrain per request of a sequence) / unlearning time "
        "(precomputation included), measured in the same run. Each method runs on the goal "
        "it serves (column goal): deletion methods are judged by their gaps to retraining "
        "(avg gap: mean |difference| over forget, retain and test accuracy and "
        "MIA-efficacy, in points; Fan et al., ICLR 2024); correction methods (L2UL) by forget "
        "accuracy (target 0) and the test-accuracy drop against the original model, so their "
        "avg gap is bracketed.\n\n"
    )
    env_line = ", ".join(f"{k} {v}" for k, v in environment.items() if k != "started")
    markdown = header + notes + table + (f"\nEnvironment: {env_line}\n" if env_line else "")
    markdown_path = results_dir / "report.md"
    write_text(markdown_path, markdown)

    images = plots(records)
    rows = []
    present = [(c, label) for c, label in COLUMNS if c in summary.columns]
    for _, row in summary.iterrows():
        cells = "".join(f"<td>{html.escape(str(row[g]))}</td>" for g in GROUP)
        cells += "".join(f"<td class='num'>{html.escape(_value(row, c))}</td>" for c, _ in present)
        rows.append(f"<tr>{cells}</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in GROUP + [label for _, label in present])
    figures = "".join(
        f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, data in images.items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>oblivio report: {html.escape(config_name or results_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f0f0f0; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 640px; }}
.env {{ color: #666; font-size: 12px; }}
</style></head><body>
<h1>oblivio report: {html.escape(config_name or results_dir.name)}</h1>
<p>{html.escape(notes.strip())}</p>
<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
<h2>Plots</h2>{figures}
<p class="env">{html.escape(env_line)}</p>
</body></html>
"""
    html_path = results_dir / "report.html"
    write_text(html_path, page)
    return markdown_path, html_path


def summary_text(records: list[dict[str, Any]]) -> str:
    """The Markdown comparison table alone."""
    return markdown_table(summary_frame(records))


__all__ = ["markdown_table", "plots", "summary_frame", "summary_text", "write_report"]
