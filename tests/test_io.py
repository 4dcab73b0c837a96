"""Output folders and files: oblivio never deletes or overwrites what it did not write."""

import json

import pytest

from oblivio._io import MARKER, OutputError, claim_output_file, prepare_output
from oblivio.cli import main


def _user_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    (folder / "results.jsonl").write_text("my own records\n")
    return folder


def test_foreign_folder_is_refused_and_left_alone(tmp_path):
    folder = _user_folder(tmp_path)
    with pytest.raises(OutputError, match=r"not empty.*--force"):
        prepare_output(folder, fresh=True)
    assert sorted(p.name for p in folder.iterdir()) == ["results.jsonl", "thesis.tex"]
    assert (folder / "results.jsonl").read_text() == "my own records\n"


def test_force_writes_the_marker_and_deletes_nothing(tmp_path):
    folder = _user_folder(tmp_path)
    prepare_output(folder, force=True, fresh=True)
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert (folder / "results.jsonl").exists()  # fresh only cleans folders oblivio made
    assert (folder / MARKER).is_file()


def test_fresh_removes_only_oblivios_files(tmp_path):
    folder = prepare_output(tmp_path / "out")
    (folder / "results.jsonl").write_text("{}\n")
    (folder / "cache" / "originals").mkdir(parents=True)
    (folder / "cache" / "originals" / "a.npz").write_bytes(b"x")
    (folder / "notes.txt").write_text("keep me")
    prepare_output(folder, fresh=True)
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "notes.txt"]


def test_empty_or_missing_folders_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert (prepare_output(tmp_path / "empty") / MARKER).exists()
    assert (prepare_output(tmp_path / "new" / "deep") / MARKER).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        prepare_output(tmp_path / "file", force=True)


def test_output_file_is_replaced_only_with_force(tmp_path):
    path = tmp_path / "rows.json"
    assert claim_output_file(path) == path
    path.write_text(json.dumps([1]))
    with pytest.raises(OutputError, match="exists.*--force"):
        claim_output_file(path)
    claim_output_file(path, force=True)
    with pytest.raises(OutputError, match="is a folder"):
        claim_output_file(tmp_path, force=True)


@pytest.mark.parametrize("command", [["demo"], ["canary", "--quick"]])
def test_cli_refuses_a_foreign_out_folder(tmp_path, capsys, command):
    folder = _user_folder(tmp_path)
    assert main([*command, "--out", str(folder)]) == 2
    assert "--force" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["results.jsonl", "thesis.tex"]


def test_benchmark_refuses_an_existing_out_file(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "sisa.py"
    spec = importlib.util.spec_from_file_location("bench_sisa", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target = tmp_path / "rows.json"
    target.write_text("precious")
    with pytest.raises(SystemExit):
        module.main(["--out", str(target)])
    assert target.read_text() == "precious"
    assert "--force" in capsys.readouterr().err


def test_a_results_folder_from_before_the_marker_is_recognised(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    for name in ("results.jsonl", "config.json", "environment.json"):
        (folder / name).write_text("{}")
    (folder / "notes.txt").write_text("keep me")
    prepare_output(folder)  # resumable: nothing removed
    assert (folder / "results.jsonl").exists() and (folder / MARKER).is_file()
