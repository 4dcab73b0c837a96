"""Report plots: one colour per method in every plot, model as marker, ROC legend names its
cell, a certified trace of one request is drawn."""

import matplotlib
import numpy as np

from oblivio.bench import report

matplotlib.use("Agg")


def _records():
    records = []
    for seed in (0, 1):
        for model in ("logreg", "mlp"):
            for method in ("retrain", "second-order", "first-order"):
                records.append(
                    {
                        "dataset": "digits",
                        "model": model,
                        "request": "remove-10",
                        "method": method,
                        "seed": seed,
                        "speedup": 1.0 + seed + len(method),
                        "gap_test": 0.01 * seed,
                        "mia_auc": 0.5 + 0.1 * seed,
                        "roc": {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.7, 1.0]},
                        "budget_trace": [{"used": 0.1, "total": 1.0, "retrained": False}]
                        if method == "second-order"
                        else None,
                    }
                )
    return records


def test_colours_markers_and_legends(monkeypatch):
    figures = []
    monkeypatch.setattr(report, "_figure_png", lambda figure: figures.append(figure) or "")
    images = report.plots(_records())
    assert "Certified budget consumption" in images  # one request is enough to draw
    scatter, roc = figures[0].axes[0], figures[1].axes[0]
    colours = report.method_colours(["retrain", "second-order", "first-order"])
    assert len(set(map(tuple, colours.values()))) == 3
    for line in roc.get_lines()[:-1]:  # the last line is the diagonal
        method = line.get_label().split(":")[0]
        assert np.allclose(matplotlib.colors.to_rgba(line.get_color()), colours[method])
        assert "digits/logreg/remove-10, seed 0" in line.get_label()
    assert "one cell per method" in roc.get_title()
    shapes = {tuple(c.get_paths()[0].vertices.round(3).ravel()) for c in scatter.collections}
    assert len(shapes) == 2  # two models, two marker shapes
    scatter_colours = {tuple(c.get_facecolor()[0]) for c in scatter.collections}
    assert scatter_colours == {tuple(v) for v in colours.values()}
    titles = {legend.get_title().get_text() for legend in scatter.findobj(matplotlib.legend.Legend)}
    assert titles == {"method", "model"}
