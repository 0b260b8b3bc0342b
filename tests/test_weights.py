"""lowrank.weights: lazy safetensors reading, sharded folders, module matching, and every refusal."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from lowrank.weights import (find_name, match_modules, module_kind, open_checkpoint, pairs)
from lowrank.errors import LowrankError


def _bert(num_labels: int | None):
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, num_labels=num_labels or 2)
    torch.manual_seed(0)
    return BertModel(config) if num_labels is None else BertForSequenceClassification(config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_single_file_reads_each_dtype_as_float32(tmp_path, dtype):
    weights = {"a.weight": torch.randn(5, 3).to(dtype), "a.bias": torch.randn(5).to(dtype)}
    save_file(weights, tmp_path / "model.safetensors")
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint.modules() == ["a"]
    assert checkpoint.tensors["a.weight"].shape == (5, 3)
    value = checkpoint.tensor("a.weight")
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, weights["a.weight"].float(), rtol=0, atol=0)
    assert checkpoint.tensor("a.weight", torch.float64).dtype == torch.float64


def test_sharded_folder_written_by_transformers_matches_the_state_dict(tmp_path):
    model = _bert(None)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    checkpoint = open_checkpoint(tmp_path)
    state = model.state_dict()
    assert set(checkpoint.tensors) == set(state)
    for key in ("encoder.layer.1.output.dense.weight", "embeddings.word_embeddings.weight"):
        torch.testing.assert_close(checkpoint.tensor(key), state[key], rtol=0, atol=0)


def test_tensor_owns_its_memory_after_the_file_is_closed(tmp_path):
    save_file({"w.weight": torch.arange(12.0).reshape(3, 4)}, tmp_path / "m.safetensors")
    value = open_checkpoint(tmp_path / "m.safetensors").tensor("w.weight")
    os.remove(tmp_path / "m.safetensors")
    assert float(value.sum()) == sum(range(12))


def test_gpt2_conv1d_weights_are_reported_out_in(tmp_path):
    stored = torch.randn(8, 24)  # Conv1D stores (in, out)
    save_file({"h.0.attn.c_attn.weight": stored, "wte.weight": torch.randn(10, 8)}, tmp_path / "m.safetensors")
    checkpoint = open_checkpoint(tmp_path / "m.safetensors")
    assert module_kind("h.0.attn.c_attn") == "conv1d" and module_kind("wte") == "embedding"
    assert module_kind("model.layers.0.self_attn.q_proj") == "linear"
    assert checkpoint.weight_shape("h.0.attn.c_attn") == (24, 8)
    torch.testing.assert_close(checkpoint.weight("h.0.attn.c_attn"), stored.T)


def test_pairs_match_task_prefix_and_list_one_sided_modules(tmp_path):
    base, tuned = _bert(None), _bert(3)
    base.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        tuned.bert.encoder.layer[0].attention.self.query.weight.add_(1.0)
    tuned.save_pretrained(tmp_path / "tuned")
    b, t = open_checkpoint(tmp_path / "base"), open_checkpoint(tmp_path / "tuned")
    match = match_modules(t, b)
    assert ("bert.encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.query") in match.pairs
    assert match.only_tuned == ("classifier",)
    assert find_name("encoder.layer.0.attention.self.query", set(t.modules())) == (
        "bert.encoder.layer.0.attention.self.query")
    iterator = pairs(t, b, modules=("bert.encoder.layer.0.attention.self.query",))
    assert iter(iterator) is iterator  # a generator: nothing read before asked
    (pair,) = list(iterator)
    torch.testing.assert_close(pair.W1 - pair.W0, torch.ones(16, 16))


def test_shape_mismatch_names_module_and_shapes(tmp_path):
    save_file({"a.weight": torch.zeros(4, 3)}, tmp_path / "base.safetensors")
    save_file({"a.weight": torch.zeros(4, 5)}, tmp_path / "tuned.safetensors")
    with pytest.raises(LowrankError, match=r"module a has shape \[4, 5\].*\[4, 3\]"):
        match_modules(open_checkpoint(tmp_path / "tuned.safetensors"), open_checkpoint(tmp_path / "base.safetensors"))


def test_missing_empty_truncated_corrupt(tmp_path):
    with pytest.raises(LowrankError, match="does not exist"):
        open_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowrankError, match="holds no model weights"):
        open_checkpoint(tmp_path / "empty")
    save_file({"a.weight": torch.randn(64, 64)}, tmp_path / "good.safetensors")
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LowrankError, match="trunc.safetensors is not a valid safetensors file"):
        open_checkpoint(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(LowrankError, match="junk.safetensors is not a valid safetensors file"):
        open_checkpoint(tmp_path / "junk.safetensors")


def test_broken_index_and_missing_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": "s1.safetensors"}}))
    with pytest.raises(LowrankError, match="names shard s1.safetensors, which is missing"):
        open_checkpoint(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(LowrankError, match="not a valid safetensors index"):
        open_checkpoint(tmp_path)


def test_several_unindexed_files_are_ambiguous(tmp_path):
    save_file({"a.weight": torch.zeros(2, 2)}, tmp_path / "x.safetensors")
    save_file({"b.weight": torch.zeros(2, 2)}, tmp_path / "y.safetensors")
    with pytest.raises(LowrankError, match="2 safetensors files but no model.safetensors.index.json"):
        open_checkpoint(tmp_path)


def test_nan_weight_is_refused_when_read(tmp_path):
    bad = torch.randn(3, 3)
    bad[1, 2] = float("nan")
    save_file({"a.weight": bad}, tmp_path / "m.safetensors")
    checkpoint = open_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(LowrankError, match="'a.weight'.*NaN"):
        checkpoint.tensor("a.weight")


class _Payload:
    """Unpickling this calls ``open(path, 'w')``: a file appears if pickle code ever runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_refused_without_opt_in_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "pytorch_model.bin"
    evil.write_bytes(pickle.dumps({"a.weight": _Payload(marker)}))
    with pytest.raises(LowrankError, match="pickle file.*--allow-pickle"):
        open_checkpoint(evil)
    with pytest.raises(LowrankError, match="pickle file"):
        open_checkpoint(tmp_path)  # a folder holding only the pickle
    with pytest.raises(LowrankError, match="could not be loaded safely"):
        open_checkpoint(evil, allow_pickle=True)
    assert not marker.exists()


def test_pickle_with_opt_in_loads_plain_tensors(tmp_path):
    state = {"a.weight": torch.randn(4, 2), "a.bias": torch.randn(4)}
    torch.save(state, tmp_path / "w.pt")
    checkpoint = open_checkpoint(tmp_path / "w.pt", allow_pickle=True)
    assert checkpoint.modules() == ["a"]
    torch.testing.assert_close(checkpoint.tensor("a.weight"), state["a.weight"])
