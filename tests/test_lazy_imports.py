"""The package loads lazily, and every name the README uses is reachable from ``ob``."""

import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_import_oblivio_does_not_import_torch():
    code = "import sys, oblivio as ob; ob.Remove; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.stdout.strip() == "False", done.stderr


def test_public_names_resolve():
    import oblivio as ob
    from oblivio.audit.evaluate import Evaluation  # loading the submodule first ...

    assert callable(ob.audit.evaluate)  # ... does not hide the function of the same name
    assert callable(ob.audit.unlearning_attack)
    assert Evaluation is ob.audit.Evaluation
    assert callable(ob.audit.exposure.exposure_skewnormal)  # named in the README
    assert ob.models.from_sklearn and ob.sklearn.UnlearningLogisticRegression
    assert ob.audit.SklearnModel is ob.models.SklearnModel
    assert set(ob.__all__) <= set(dir(ob))
    for name in ob.__all__:
        getattr(ob, name)
    for name in ob.audit.__all__:
        getattr(ob.audit, name)
