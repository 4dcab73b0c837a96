"""Ready-made networks: output shapes, input layouts, errors, and quick fits on tiny data."""

import numpy as np
import pytest
import torch

import oblivio as ob
from oblivio.data import Dataset
from oblivio.models import MLP, CharLSTM, SmallCNN, TorchModel


def test_mlp_flattens_input_and_names_its_layers():
    net = MLP(12, hidden=(7, 5), n_classes=4)
    assert net(torch.zeros(3, 3, 4)).shape == (3, 4)
    assert [name for name, _ in net.named_children() if name.startswith("fc")] == [
        "fc1",
        "fc2",
        "fc3",
    ]
    assert net.head_name == "fc3"
    assert net.fc3.out_features == 4
    assert MLP(12, hidden=(), n_classes=3)(torch.zeros(2, 12)).shape == (2, 3)
    with pytest.raises(ValueError, match="expects 12 input features, got 10"):
        net(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="n_classes"):
        MLP(12, n_classes=0)


@pytest.mark.parametrize(
    ("channels", "size", "shape"),
    [
        (1, 28, (5, 1, 28, 28)),
        (1, 28, (5, 28, 28)),
        (1, 28, (5, 784)),
        (3, 32, (5, 3, 32, 32)),
        (3, 32, (5, 3072)),
    ],
)
def test_small_cnn_forward_shapes(channels, size, shape):
    net = SmallCNN(in_channels=channels, image_size=size, n_classes=7)
    assert net(torch.zeros(shape)).shape == (5, 7)
    assert net.head_name == "fc2"


def test_small_cnn_rejects_mismatched_images():
    with pytest.raises(ValueError, match=r"images of shape \(1, 28, 28\), got \(3, 28, 28\)"):
        SmallCNN(1, 28)(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match="1x28x28 images, got 100 features"):
        SmallCNN(1, 28)(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="image_size"):
        SmallCNN(1, 2)


def test_char_lstm_predicts_the_last_step():
    net = CharLSTM(vocab_size=11, embed=4, hidden=6)
    tokens = torch.randint(0, 11, (3, 9))
    assert net(tokens).shape == (3, 11)
    assert CharLSTM(11, n_classes=5, layers=2)(tokens).shape == (3, 5)
    # only the window matters through the last step: changing the first token changes logits
    other = tokens.clone()
    other[:, 0] = (other[:, 0] + 1) % 11
    assert not torch.allclose(net(tokens), net(other))
    with pytest.raises(ValueError, match=r"\(n, T\)"):
        net(torch.zeros(3, dtype=torch.long))


def test_small_cnn_quick_fit_on_digits(digits_split):
    train, test = digits_split
    # digits are 8x8 images flattened to 64 features
    net = SmallCNN(in_channels=1, image_size=8, n_classes=10, channels=(8, 16), hidden=32)
    images = Dataset(train.X.reshape(-1, 1, 8, 8) * 8, train.y, train.ids, classes=train.classes)
    model = TorchModel(net, epochs=8, lr=3e-3, batch_size=64).fit(images)
    accuracy = np.mean(model.predict(test.X.reshape(-1, 1, 8, 8) * 8) == test.y)
    assert accuracy > 0.8


def test_char_lstm_quick_fit_learns_a_periodic_text():
    text = "abcdefg" * 40
    vocab = sorted(set(text))
    codes = np.array([vocab.index(c) for c in text])
    window = 4
    X = np.stack([codes[i : i + window] for i in range(len(codes) - window)])
    y = codes[window:]
    data = Dataset(X, y, classes=vocab)
    model = TorchModel(CharLSTM(len(vocab), embed=8, hidden=16), epochs=15, lr=2e-2, batch_size=32)
    model.fit(data)
    assert ob.audit.accuracy(model, data) == 1.0
    P = model.predict_proba(X[:5])
    assert P.shape == (5, len(vocab))
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-6)
