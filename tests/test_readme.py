"""Every Python example in the README runs verbatim (from a clean clone: bundled data only).

A block preceded by ``<!-- needs: WHAT -->`` needs data or services a clone does not have
(Fashion-MNIST, the seed papers' files, a Dask cluster); it is skipped here, with WHAT as
the reason, so the skip shows in the test report.
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


@pytest.mark.parametrize(("code", "needs"), list(_blocks()))
def test_readme_example_runs(code, needs, tmp_path, monkeypatch):
    if needs:
        pytest.skip(f"README example needs {needs}")
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    monkeypatch.delenv("OBLIVIO_DATA", raising=False)
    import matplotlib

    matplotlib.use("Agg")
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
