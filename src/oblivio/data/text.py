"""Character-level text corpora for language-model unlearning (canary experiments).

Follows the protocol of Warnecke et al. (NDSS 2023, Sec. 6.2), after Carlini et al.'s
*Secret Sharer*: a public-domain text, lower-cased, with a canary sentence inserted at
paragraph starts a given number of times (seeded); samples are windows of ``window``
characters (stride 1) whose target is the next character. A window's id is its start offset
in the text, so a window keeps its id when the text is edited in place (same length).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oblivio.data.dataset import Dataset, Split
from oblivio.data.loaders import DataNotFoundError, register_loader, search_folders
from oblivio.data.requests import Replace

__all__ = ["CharCorpus", "insert_canary", "load_text", "replace_secret"]

_PARAGRAPH_START = re.compile(r"\n\n\s*(?=\w)")


@dataclass(frozen=True)
class CharCorpus:
    """A text, its vocabulary, and the windows made from it.

    Attributes
    ----------
    text : str
        The (edited) full text.
    vocab : str
        Sorted characters; token id ``i`` is ``vocab[i]``.
    window : int
        Characters per sample.
    canary_offsets : tuple of int
        Start offsets of inserted canaries.
    """

    text: str
    vocab: str
    window: int
    canary_offsets: tuple[int, ...] = ()

    def encode(self, text: str) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.vocab)}
        unknown = sorted(set(text) - set(lookup))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown}")
        return np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, tokens: np.ndarray) -> str:
        return "".join(self.vocab[int(t)] for t in tokens)

    def windows(self, text: str | None = None, name: str = "text") -> Dataset:
        """All windows of ``text`` (default: the corpus text) with next-character targets."""
        tokens = self.encode(self.text if text is None else text)
        n = tokens.size - self.window
        if n < 1:
            raise ValueError(f"text of {tokens.size} characters is shorter than a window")
        positions = np.arange(n)[:, None] + np.arange(self.window)[None, :]
        return Dataset(
            X=tokens[positions],
            y=tokens[self.window :],
            ids=np.arange(n, dtype=np.int64),
            classes=tuple(self.vocab),
            name=name,
        )


def insert_canary(
    text: str, canary: str, times: int, seed: int | None = 42
) -> tuple[str, list[int]]:
    """Insert ``canary`` at ``times`` distinct paragraph starts chosen with ``seed``.

    A paragraph start is a blank line followed by optional spaces and a word character
    (Warnecke et al.: ``"\\n\\n  "`` then a word character); the canary goes right before
    that word. Returns the new text and the canaries' start offsets in it.
    """
    if times < 0:
        raise ValueError(f"times must be >= 0, got {times}")
    starts = [match.end() for match in _PARAGRAPH_START.finditer(text)]
    if times > len(starts):
        raise ValueError(
            f"the text has {len(starts)} paragraph starts, cannot insert {times} canaries"
        )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(starts), size=times, replace=False).tolist())
    pieces, offsets, previous, shift = [], [], 0, 0
    for index in chosen:
        position = starts[index]
        pieces.append(text[previous:position])
        offsets.append(position + shift)
        pieces.append(canary)
        shift += len(canary)
        previous = position
    pieces.append(text[previous:])
    return "".join(pieces), offsets


def replace_secret(corpus: CharCorpus, train: Dataset, secret: str, replacement: str) -> Replace:
    """The :class:`~oblivio.Replace` request that overwrites ``secret`` by ``replacement``.

    Both strings must have the same length, so every window keeps its id; the request
    covers exactly the windows whose input or target changes: ``window + len`` per
    occurrence when no character is shared (34 for 24-character windows and a 10-digit
    number; Warnecke et al. count the 33 windows whose *input* holds a digit and miss the
    one that only predicts the first digit).
    """
    if len(secret) != len(replacement):
        raise ValueError(
            f"replacement must have the secret's length {len(secret)}, got {len(replacement)}"
        )
    missing = sorted(set(replacement) - set(corpus.vocab))
    if missing:
        raise ValueError(f"replacement uses characters outside the model's vocabulary: {missing}")
    edited = corpus.text.replace(secret, replacement)
    new_windows = corpus.windows(edited)
    keep = np.isin(new_windows.ids, train.ids)
    old = corpus.windows()
    changed = keep & (np.any(old.X != new_windows.X, axis=1) | (old.y != new_windows.y))
    ids = new_windows.ids[changed]
    return Replace(ids=ids, X=new_windows.X[changed], y=new_windows.y[changed])


def load_text(
    path: str | Path,
    *,
    window: int = 24,
    skip: int = 0,
    lower: bool = True,
    canary: str | None = None,
    canary_times: int = 0,
    canary_seed: int | None = 42,
    test_fraction: float = 0.1,
    max_chars: int | None = None,
) -> tuple[CharCorpus, Split]:
    """Read a UTF-8 text and make character windows.

    The last ``test_fraction`` of the text is held out as the test split; canaries are
    inserted into the training part only.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"text corpus not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")[skip:]
    if lower:
        text = text.lower()
    if max_chars is not None:
        text = text[:max_chars]
    cut = int(len(text) * (1 - test_fraction))
    train_text, test_text = text[:cut], text[cut:]
    offsets: list[int] = []
    if canary and canary_times:
        train_text, offsets = insert_canary(train_text, canary, canary_times, canary_seed)
    vocab = "".join(sorted(set(train_text) | set(test_text)))
    corpus = CharCorpus(train_text, vocab, window, tuple(offsets))
    train = corpus.windows(name=f"{path.stem}-train")
    if len(test_text) > window:
        test = corpus.windows(test_text, name=f"{path.stem}-test")
        test = Dataset(
            test.X, test.y, test.ids + len(train_text), classes=test.classes, name=test.name
        )
    else:
        test = train.empty()
    return corpus, Split(train, test)


ALICE_FILE = "alice_in_wonderland.txt"


def alice_path(root: str | Path | None = None) -> Path:
    """Where the canary corpus is: ``root`` (a folder or the file), else the first of
    ``$OBLIVIO_DATA/alice/``, ``$OBLIVIO_DATA/`` and ``~/.oblivio/data/alice/`` holding
    ``alice_in_wonderland.txt``.

    Raises
    ------
    DataNotFoundError
        Naming every place looked in and where the text comes from.
    """
    if root is not None and Path(root).is_file():
        return Path(root)
    looked = [
        folder / ALICE_FILE
        for folder in search_folders("alice", None if root is None else Path(root))
    ]
    for candidate in looked:
        if candidate.is_file():
            return candidate
    raise DataNotFoundError(
        f"{ALICE_FILE} not found; looked in: {', '.join(str(p) for p in looked)}. Pass the "
        "folder holding it (root=, or --corpus FILE on the command line), or set OBLIVIO_DATA "
        "to the folder with the seed data (it holds alice/). Project Gutenberg eBook #11."
    )


def _alice_present(root: Path | None) -> bool:
    try:
        alice_path(root)
    except DataNotFoundError:
        return False
    return True


@register_loader(
    "text",
    "plain UTF-8 text as character windows: 'text:<path>' (options window, canary, ...)",
)
def _load_text_split(root: Path | None, seed: int | None, path: str, **options) -> Split:
    return load_text(path, **options)[1]


@register_loader(
    "alice",
    "Alice in Wonderland character windows (Warnecke et al.'s canary corpus; user-supplied)",
    is_present=_alice_present,
)
def _load_alice(root: Path | None, seed: int | None, **options) -> Split:
    options.setdefault("skip", 265)
    return load_text(alice_path(root), **options)[1]
