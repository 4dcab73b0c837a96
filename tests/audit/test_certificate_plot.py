"""The certificate budget plot draws something after a single request."""

import matplotlib

matplotlib.use("Agg")

import oblivio as ob  # noqa: E402
from oblivio.audit.plots import plot_certificate_budget  # noqa: E402


def test_one_request_is_visible(binary_data):
    u = ob.unlearners.create(
        "certified", ob.models.LogisticRegression(l2=1e-2), sigma=1.0, seed=0
    ).fit(binary_data)
    u.forget(ob.Remove(ids=binary_data.ids[:2]))
    figure = plot_certificate_budget(u)
    ax = figure.axes[0]
    bound = ax.lines[0]
    assert len(bound.get_xdata()) == 1 and bound.get_marker() == "o"  # a point, not an empty line
    low, high = ax.get_xlim()
    assert low < 1 < high and high - low <= 2
