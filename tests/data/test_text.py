"""Character corpora and canary insertion (Warnecke et al., Sec. 6.2)."""

import numpy as np
import pytest

from oblivio.data.text import CharCorpus, insert_canary, load_text, replace_secret

TEXT = (
    "chapter one\n\n  alice was beginning to get very tired.\n\n  so she was considering."
    "\n\n  there was nothing so very remarkable in that.\n\n  the end.\n"
)
CANARY = "my number is 0123! "


def test_insert_canary_at_paragraph_starts():
    text, offsets = insert_canary(TEXT, CANARY, 2, seed=1)
    assert len(text) == len(TEXT) + 2 * len(CANARY)
    assert len(offsets) == 2
    for offset in offsets:
        assert text[offset : offset + len(CANARY)] == CANARY
        assert text[offset - 4 : offset] == "\n\n  "
    again, same_offsets = insert_canary(TEXT, CANARY, 2, seed=1)
    assert again == text and same_offsets == offsets
    with pytest.raises(ValueError, match="4 paragraph starts, cannot insert 5"):
        insert_canary(TEXT, CANARY, 5)


def test_windows_and_targets():
    corpus = CharCorpus("abcdef", "abcdef", window=3)
    data = corpus.windows()
    assert data.X.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert data.y.tolist() == [3, 4, 5]
    assert corpus.decode(data.X[1]) == "bcd"


def test_replace_secret_covers_exactly_the_changed_windows(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT * 3)
    corpus, split = load_text(path, window=6, canary=CANARY, canary_times=3, canary_seed=0)
    request = replace_secret(corpus, split.train, "0123", "abcd")
    # window + len(secret) windows per occurrence when no character is shared.
    assert len(request.ids) == 3 * (6 + 4)
    change = request.resolve(split.train)
    edited = change.result
    assert not any("0" in corpus.decode(row) for row in edited.X)
    untouched = np.setdiff1d(split.train.ids, request.ids)
    np.testing.assert_array_equal(edited.select(untouched).X, split.train.select(untouched).X)
    with pytest.raises(ValueError, match="same length|secret's length"):
        replace_secret(corpus, split.train, "0123", "xy")


def test_held_out_tail_has_no_canary(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT * 5)
    corpus, split = load_text(path, window=5, canary=CANARY, canary_times=2, test_fraction=0.2)
    assert len(split.test) > 0
    assert not any("0123" in corpus.decode(row) for row in split.test.X)
    assert not set(split.train.ids) & set(split.test.ids)
