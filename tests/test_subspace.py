"""The subspace-reparametrized wrapper: theta = theta0 + P theta_d (DID) and SAID, on an MLP and a tiny BERT."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.errors import LowrankError
from lowrank.intrinsic.subspace import SubspaceConfig, SubspaceModel, count_projected
from lowrank.mlp import build_mlp
from lowrank.tiny_models import tiny_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _flat_delta(wrapped: SubspaceModel) -> torch.Tensor:
    own = dict(wrapped.model.named_parameters())
    params = wrapped.parameters_dict()
    return torch.cat([(params[n] - own[n]).reshape(-1) for n in wrapped.projected_names])


def test_only_theta_d_trains_and_theta0_is_not_copied():
    model = build_mlp("mlp:8,6,3", seed=0)
    pointers = [p.data_ptr() for p in model.parameters()]
    wrapped = SubspaceModel(model, SubspaceConfig(d=10, projection="dense"))
    assert [name for name, _ in wrapped.named_parameters()] == ["theta_d"]
    assert list(wrapped.state_dict()) == ["theta_d"]
    assert all(not p.requires_grad for p in model.parameters())
    assert [p.data_ptr() for p in wrapped.model.parameters()] == pointers
    assert wrapped.D == 8 * 6 + 6 + 6 * 3 + 3 and wrapped.trained_count == 10


@pytest.mark.parametrize("projection", ["dense", "sparse", "fastfood"])
def test_starts_at_theta0_and_moves_by_P_theta_d(projection):
    model = build_mlp("mlp:8,6,3", seed=1)
    x = torch.randn(5, 8)
    wrapped = SubspaceModel(model, SubspaceConfig(d=12, projection=projection, seed=4))
    torch.testing.assert_close(wrapped(x=x), model(x), rtol=0, atol=0)
    with torch.no_grad():
        wrapped.theta_d.copy_(torch.randn(12))
    expected = wrapped.projection(wrapped.theta_d.detach())
    torch.testing.assert_close(_flat_delta(wrapped), expected, rtol=1e-5, atol=1e-6)
    # the output is the model run with those tensors
    params = wrapped.parameters_dict()
    h = torch.relu(x @ params["layers.0.weight"].T + params["layers.0.bias"])
    torch.testing.assert_close(wrapped(x), h @ params["layers.1.weight"].T + params["layers.1.bias"])


def test_gradient_reaches_theta_d_only():
    model = build_mlp("mlp:8,6,3", seed=0)
    wrapped = SubspaceModel(model, SubspaceConfig(d=7, projection="fastfood"))
    wrapped(torch.randn(4, 8)).square().sum().backward()
    assert wrapped.theta_d.grad is not None and wrapped.theta_d.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_said_scales_each_tensor_and_counts_in_d():
    model = build_mlp("mlp:8,6,3", seed=0)
    wrapped = SubspaceModel(model, SubspaceConfig(d=20, projection="dense", said=True))
    assert wrapped.theta_d.shape == (16,) and wrapped.said_scales.shape == (4,)  # m = 4 tensors, d - m = 16
    assert sorted(n for n, _ in wrapped.named_parameters()) == ["said_scales", "theta_d"]
    with torch.no_grad():
        wrapped.theta_d.copy_(torch.randn(16))
        base = _flat_delta(wrapped)
        wrapped.said_scales.copy_(torch.tensor([2.0, 0.0, -1.0, 3.0]))
    sizes = [48, 6, 18, 3]
    factors = torch.repeat_interleave(torch.tensor([2.0, 0.0, -1.0, 3.0]), torch.tensor(sizes))
    torch.testing.assert_close(_flat_delta(wrapped), base * factors, rtol=1e-5, atol=1e-6)


def test_per_tensor_layout_keeps_unit_columns_overall():
    model = build_mlp("mlp:16,8,4", seed=0)
    wrapped = SubspaceModel(model, SubspaceConfig(d=6, projection="dense", layout="per_tensor"))
    columns = []
    for j in range(6):
        with torch.no_grad():
            wrapped.theta_d.zero_()
            wrapped.theta_d[j] = 1.0
        columns.append(_flat_delta(wrapped))
    norms = torch.stack(columns, 1).norm(dim=0)
    torch.testing.assert_close(norms, torch.ones(6), rtol=1e-5, atol=1e-6)


def test_direct_patterns_train_a_copy_of_the_head():
    model = build_mlp("mlp:8,6,3", seed=0)
    wrapped = SubspaceModel(model, SubspaceConfig(d=5, direct=("layers.1.*",)))
    assert wrapped.direct_names == ("layers.1.weight", "layers.1.bias")
    assert wrapped.projected_names == ("layers.0.weight", "layers.0.bias")
    assert wrapped.D == 54 and wrapped.trained_count == 5 + 21
    assert count_projected(model, ("layers.1.*",)) == (54, 2)
    wrapped(torch.randn(3, 8)).sum().backward()
    assert all(p.grad is not None for p in wrapped.direct_params)
    assert wrapped.direct_params[0].data_ptr() != model.layers[1].weight.data_ptr()


def test_bad_input():
    model = build_mlp("mlp:4,3", seed=0)  # D = 15
    with pytest.raises(LowrankError, match="d=16 is larger than the number of parameters D=15"):
        SubspaceModel(model, SubspaceConfig(d=16))
    with pytest.raises(LowrankError, match=r"SAID needs d > 2"):
        SubspaceModel(model, SubspaceConfig(d=2, said=True))
    with pytest.raises(LowrankError, match="'head.*' matches no parameter"):
        SubspaceModel(model, SubspaceConfig(d=3, direct=("head.*",)))
    with pytest.raises(LowrankError, match="unknown projection 'gauss'"):
        SubspaceConfig(d=3, projection="gauss")
    with pytest.raises(LowrankError, match="unknown layout"):
        SubspaceConfig(d=3, layout="blocks")
    with pytest.raises(LowrankError, match="no parameter left"):
        SubspaceModel(model, SubspaceConfig(d=3, direct=("*",)))


def test_hugging_face_bert_with_said_and_a_direct_head():
    model = tiny_model("bert", "classification", seed=0, num_labels=3).eval()
    ids = torch.randint(5, 1000, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    labels = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
    config = SubspaceConfig(d=200, projection="fastfood", said=True, direct=("classifier.*",))
    wrapped = SubspaceModel(model, config).eval()
    D, m = count_projected(model, ("classifier.*",))
    assert wrapped.D == D and wrapped.theta_d.numel() == 200 - m and wrapped.said_scales.numel() == m
    assert wrapped.D == sum(p.numel() for p in model.parameters()) - 32 * 3 - 3
    torch.testing.assert_close(wrapped(input_ids=ids, attention_mask=mask).logits, reference, rtol=0, atol=0)
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = wrapped(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in model.parameters())
    assert math.isclose(sum(p.numel() for p in wrapped.parameters()), 200 + 99)


def test_to_and_train_reach_the_wrapped_model():
    model = build_mlp("mlp:4,3", seed=0)
    wrapped = SubspaceModel(model, SubspaceConfig(d=5, projection="fastfood")).double()
    assert model.layers[0].weight.dtype == torch.float64 and wrapped.theta_d.dtype == torch.float64
    assert wrapped(torch.randn(2, 4, dtype=torch.float64)).dtype == torch.float64
    wrapped.eval()
    assert not model.training
    wrapped.train()
    assert model.training


def test_projection_stays_float32_under_bf16_autocast():
    wrapped = SubspaceModel(build_mlp("mlp:8,6,3", seed=0), SubspaceConfig(d=12, projection="fastfood"))
    with torch.no_grad():
        wrapped.theta_d.copy_(torch.randn(12))
    expected = _flat_delta(wrapped)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _flat_delta(wrapped)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
