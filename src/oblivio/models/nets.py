"""Ready-made networks for :class:`~oblivio.models.TorchModel`.

Small architectures of the kind the unlearning papers train: a multi-layer perceptron, a
two-block convolutional network for 28x28 (MNIST / Fashion-MNIST) and 32x32 (CIFAR-10)
images, and a character-level LSTM language model (Warnecke et al., NDSS 2023, Sec. 6.3;
Carlini et al.'s canary set-up). Each module names its final linear layer in ``head_name``,
so ``TorchModel(net, params=[net.head_name])`` restricts ``theta`` to the last layer, and
keeps its constructor arguments in ``architecture``, so that a saved unlearner rebuilds the
network without a template (``ob.load(path)``, ``oblivio ledger init --from``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["MLP", "NETWORKS", "CharLSTM", "SmallCNN", "rebuild_network"]


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


class MLP(nn.Module):
    """Fully connected network with ReLU activations; inputs are flattened.

    Layers are named ``fc1 .. fc{L+1}`` (``L = len(hidden)``); the last one is the
    classification head (``head_name``).

    Parameters
    ----------
    in_features : int
        Number of input features after flattening (e.g. 784 for 28x28 images).
    hidden : sequence of int
        Widths of the hidden layers; ``()`` gives multinomial logistic regression.
    n_classes : int
        Number of outputs (logits).
    dropout : float
        Dropout probability after each hidden activation (off in evaluation mode).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256,),
        n_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [_positive_int(in_features, "in_features")]
        widths += [_positive_int(h, "hidden width") for h in hidden]
        widths.append(_positive_int(n_classes, "n_classes"))
        self.in_features = widths[0]
        self.n_classes = widths[-1]
        self.dropout = nn.Dropout(_check_dropout(dropout))
        self.depth = len(widths) - 1
        for index in range(self.depth):
            self.add_module(f"fc{index + 1}", nn.Linear(widths[index], widths[index + 1]))
        self.head_name = f"fc{self.depth}"
        self.architecture: dict[str, Any] = {
            "in_features": widths[0],
            "hidden": widths[1:-1],
            "n_classes": widths[-1],
            "dropout": self.dropout.p,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} input features, got {x.shape[1]}")
        for index in range(1, self.depth):
            x = self.dropout(torch.relu(getattr(self, f"fc{index}")(x)))
        return getattr(self, self.head_name)(x)


class SmallCNN(nn.Module):
    """Two convolution blocks and two linear layers, for small square images.

    ``conv(3x3) -> ReLU -> maxpool(2)`` twice, then ``fc1`` (ReLU) and the head ``fc2``.
    Works for any ``image_size >= 4`` (28 for MNIST / Fashion-MNIST, 32 for CIFAR-10, 8
    for scikit-learn's digits). Inputs may be ``(n, C, H, W)``, ``(n, H, W)`` (one channel)
    or flattened ``(n, C*H*W)``.

    Parameters
    ----------
    in_channels : int
        Image channels (1 grey, 3 colour).
    image_size : int
        Height and width of the images.
    n_classes : int
        Number of outputs (logits).
    channels : tuple of two ints
        Output channels of the two convolutions.
    hidden : int
        Width of ``fc1``.
    dropout : float
        Dropout probability before ``fc2`` (off in evaluation mode).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        n_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"channels must hold two widths, got {tuple(channels)!r}")
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.image_size = _positive_int(image_size, "image_size")
        if self.image_size < 4:
            raise ValueError(f"image_size must be at least 4, got {image_size!r}")
        self.n_classes = _positive_int(n_classes, "n_classes")
        c1, c2 = (_positive_int(c, "channels") for c in channels)
        self.conv1 = nn.Conv2d(self.in_channels, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        side = self.image_size // 2 // 2
        self.fc1 = nn.Linear(c2 * side * side, _positive_int(hidden, "hidden"))
        self.dropout = nn.Dropout(_check_dropout(dropout))
        self.fc2 = nn.Linear(self.fc1.out_features, self.n_classes)
        self.head_name = "fc2"
        self.architecture: dict[str, Any] = {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "n_classes": self.n_classes,
            "channels": [c1, c2],
            "hidden": self.fc1.out_features,
            "dropout": self.dropout.p,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, channels = self.image_size, self.in_channels
        if x.dim() == 2:
            if x.shape[1] != channels * size * size:
                raise ValueError(
                    f"SmallCNN expects {channels}x{size}x{size} images, got {x.shape[1]} features"
                )
            x = x.reshape(x.shape[0], channels, size, size)
        elif x.dim() == 3:
            x = x.unsqueeze(1)
        if tuple(x.shape[1:]) != (channels, size, size):
            raise ValueError(
                f"SmallCNN expects images of shape ({channels}, {size}, {size}), "
                f"got {tuple(x.shape[1:])}"
            )
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(self.dropout(x))


class CharLSTM(nn.Module):
    """Next-character model: embedding, LSTM, linear head on the last time step.

    Input is a window of token ids of shape ``(n, T)`` (integers in ``0 .. vocab_size-1``);
    the output is the logits of the character that follows the window (the set-up of
    Carlini et al.'s canary exposure, used by Warnecke et al., NDSS 2023, Sec. 6.3).

    Parameters
    ----------
    vocab_size : int
        Number of distinct tokens.
    embed : int
        Embedding width.
    hidden : int
        LSTM hidden size.
    n_classes : int, optional
        Number of outputs; defaults to ``vocab_size``.
    layers : int
        Stacked LSTM layers.
    dropout : float
        Dropout between LSTM layers (only with ``layers > 1``) and before the head.
    """

    def __init__(
        self,
        vocab_size: int,
        embed: int = 64,
        hidden: int = 128,
        n_classes: int | None = None,
        layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.vocab_size = _positive_int(vocab_size, "vocab_size")
        self.n_classes = (
            self.vocab_size if n_classes is None else _positive_int(n_classes, "n_classes")
        )
        dropout = _check_dropout(dropout)
        self.embedding = nn.Embedding(self.vocab_size, _positive_int(embed, "embed"))
        self.lstm = nn.LSTM(
            embed,
            _positive_int(hidden, "hidden"),
            num_layers=_positive_int(layers, "layers"),
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, self.n_classes)
        self.head_name = "fc"
        self.architecture: dict[str, Any] = {
            "vocab_size": self.vocab_size,
            "embed": int(embed),
            "hidden": int(hidden),
            "n_classes": self.n_classes,
            "layers": int(layers),
            "dropout": dropout,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"CharLSTM expects token ids of shape (n, T), got {tuple(x.shape)}")
        if x.is_floating_point():
            x = x.long()
        output, _ = self.lstm(self.embedding(x))
        return self.fc(self.dropout(output[:, -1, :]))


#: oblivio's networks by class name: the ones a saved unlearner can rebuild by itself.
NETWORKS: dict[str, type[nn.Module]] = {"MLP": MLP, "SmallCNN": SmallCNN, "CharLSTM": CharLSTM}


def rebuild_network(name: str, architecture: dict[str, Any]) -> nn.Module:
    """A fresh network of class ``name`` (one of :data:`NETWORKS`) with the constructor
    arguments ``architecture`` (its ``architecture`` attribute when it was saved)."""
    if name not in NETWORKS:
        raise ValueError(f"{name!r} is not one of oblivio's networks {sorted(NETWORKS)}")
    if not isinstance(architecture, dict):
        raise ValueError(f"architecture must be a dict, got {architecture!r}")
    try:
        return NETWORKS[name](**architecture)
    except TypeError as error:
        raise ValueError(f"cannot build {name}({architecture!r}): {error}") from None
