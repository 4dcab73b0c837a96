"""Every Python example in the README runs verbatim (from a clean clone: bundled data only).

A block preceded by ``<!-- needs: WHAT -->`` needs data or services a clone does not have
(Fashion-MNIST, the seed papers' files, a Dask cluster). It runs where this machine has
them (Fashion-MNIST from Debian's package, the seed data under ``$OBLIVIO_DATA``) and is
skipped otherwise, with WHAT as the reason, so the skip shows in the test report.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(
    r"(?:<!--\s*needs:\s*(?P<needs>[^>]*?)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S
)


def _blocks():
    text = README.read_text()
    for match in BLOCK.finditer(text):
        line = text[: match.start("code")].count("\n") + 1
        yield pytest.param(match.group("code"), match.group("needs"), id=f"README.md:{line}")


def test_the_readme_has_runnable_examples():
    blocks = list(_blocks())
    assert len(blocks) >= 4
    assert sum(1 for b in blocks if b.values[1] is None) >= 3


#: The data sets each ``needs`` text stands for; other needs (a Dask scheduler) always skip.
DATA_NEEDS = {
    "Fashion-MNIST (apt-get install dataset-fashion-mnist)": ["fashion-mnist"],
    "Fashion-MNIST and the seed data (OBLIVIO_DATA)": ["fashion-mnist", "adult"],
}


def _met(needs: str) -> bool:
    """Whether this machine has the data a block's ``needs`` names."""
    from oblivio.data import loaders

    present = {name for name, _, found in loaders.describe() if found}
    return needs in DATA_NEEDS and all(name in present for name in DATA_NEEDS[needs])


@pytest.mark.parametrize(("code", "needs"), list(_blocks()))
def test_readme_example_runs(code, needs, tmp_path, monkeypatch):
    if needs and not _met(needs):
        pytest.skip(f"README example needs {needs}")
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    if not needs or "OBLIVIO_DATA" not in needs:
        monkeypatch.delenv("OBLIVIO_DATA", raising=False)
    import matplotlib

    matplotlib.use("Agg")
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
