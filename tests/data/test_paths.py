"""Data paths: OBLIVIO_DATA finds the seed data (Alice for the canary); no cwd-relative
defaults."""

import pytest

import oblivio as ob
from oblivio.bench.canary import CanarySettings
from oblivio.data.loaders import DataNotFoundError
from oblivio.data.text import alice_path


def test_alice_is_found_under_oblivio_data(tmp_path, monkeypatch):
    (tmp_path / "alice").mkdir()
    text = "chapter one\n\n" + "alice was beginning to get very tired. " * 40
    (tmp_path / "alice" / "alice_in_wonderland.txt").write_text(text)
    monkeypatch.setenv("OBLIVIO_DATA", str(tmp_path))
    assert alice_path() == tmp_path / "alice" / "alice_in_wonderland.txt"
    assert alice_path(tmp_path / "alice") == tmp_path / "alice" / "alice_in_wonderland.txt"
    split = ob.datasets.load("alice", window=8, skip=0)
    assert len(split.train) > 100


def test_missing_alice_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIO_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataNotFoundError, match=r"looked in: .*alice.*OBLIVIO_DATA"):
        alice_path()


def test_canary_has_no_cwd_relative_default():
    assert CanarySettings().corpus is None
    assert CanarySettings.quick().corpus is None
