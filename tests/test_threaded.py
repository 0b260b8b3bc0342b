"""A CPU LoRA step split over threads (lowrank.training.threaded): the same gradients as the whole batch's, the same
masks whatever order the threads run in, and used by `lowrank train` where it applies."""

from __future__ import annotations

import threading

import pytest
import torch

from lowrank import cpu_dropout
from lowrank.data.batches import IGNORE_INDEX
from lowrank.training import faults, threaded
from lowrank.training.config import TrainConfig
from lowrank.training.evaluate import loss_and_logits, target_count
from lowrank.training.loop import train
from lowrank.training.setup import prepare


@pytest.fixture()
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _config(model, data, out, **changes) -> TrainConfig:
    settings = dict(model=str(model), data=str(data), method="lora", out=out, rank=4, max_steps=3, batch_size=7,
                    max_length=24, dropout=0.1, eval_samples=4, seed=11, device="cpu")
    return TrainConfig(**{**settings, **changes})


def _setup(tiny_bert_folder, r8_csv, tmp_path, **changes):
    """A float64 LoRA setup of the tiny BERT (the loss itself is reduced in float32), and its first training batch
    (7 rows)."""
    config = _config(tiny_bert_folder, r8_csv, tmp_path / "o", **changes)
    setup = prepare(config)
    setup.model.double()
    return setup, setup.train.collate(list(range(7)))


def _whole_gradients(setup, batch, scale=1.0) -> list[torch.Tensor]:
    setup.optimizer.zero_grad(set_to_none=True)
    (loss_and_logits(setup.model, batch)[0] * scale).backward()
    return [p.grad.clone() for p in setup.trainable]


def _gradients(setup) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in setup.trainable]
    setup.optimizer.zero_grad(set_to_none=True)
    return grads


def test_shards_split_the_rows_and_weigh_them_by_their_targets():
    ids = torch.arange(5 * 6).view(5, 6)
    labels = ids.clone()
    labels[:3, 2:] = IGNORE_INDEX  # next-token targets: 1 in each of the first three rows, 5 in the last two
    parts = threaded.split({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}, 2)
    assert [len(shard["labels"]) for shard, _ in parts] == [2, 3]
    assert torch.equal(torch.cat([shard["input_ids"] for shard, _ in parts]), ids)
    assert [weight for _, weight in parts] == [2 / 13, 11 / 13]
    one = {"input_ids": ids[:1], "attention_mask": torch.ones_like(ids[:1]), "labels": torch.tensor([3])}
    assert [weight for _, weight in threaded.split(one, 4)] == [1.0]  # never more shards than rows
    labels[:2] = IGNORE_INDEX  # a shard without targets adds nothing
    parts = threaded.split({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}, 2)
    assert [weight for _, weight in parts] == [1.0] and target_count(parts[0][0]) == 11


def test_split_gradients_are_the_whole_batchs(tiny_bert_folder, r8_csv, tmp_path):
    setup, batch = _setup(tiny_bert_folder, r8_csv, tmp_path)
    setup.model.eval()  # no dropout: the same function of the weights
    expected = _whole_gradients(setup, batch, scale=0.5)
    setup.optimizer.zero_grad(set_to_none=True)
    shards = threaded.Shards(3)
    loss = shards.backward(setup.model, setup.trainable, batch, lambda loss: loss * 0.5)
    shards.pool.shutdown()
    assert loss.item() == pytest.approx(0.5 * loss_and_logits(setup.model, batch)[0].item(), rel=1e-6)
    for param, grad in zip(setup.trainable, expected):
        torch.testing.assert_close(param.grad, grad, rtol=1e-5, atol=1e-10)
        assert param.grad.stride() == param.stride()  # the layout fused AdamW reads
    shards = threaded.Shards(2)
    shards.backward(setup.model, setup.trainable, batch, lambda loss: loss)  # accumulates, as backward()
    shards.pool.shutdown()
    for param, grad in zip(setup.trainable, expected):
        torch.testing.assert_close(param.grad, 3 * grad, rtol=1e-5, atol=1e-10)


def test_each_shard_drops_with_its_own_seeded_masks(tiny_bert_folder, r8_csv, tmp_path):
    setup, batch = _setup(tiny_bert_folder, r8_csv, tmp_path)
    setup.model.train()
    shards = threaded.Shards(2)
    torch.manual_seed(4)
    shards.backward(setup.model, setup.trainable, batch, lambda loss: loss)
    split = _gradients(setup)
    torch.manual_seed(4)  # the same shards, one after another on this thread, each with its own generator
    parts = threaded.split(batch, 2)
    for (shard, weight), seed in zip(parts, torch.empty(2, dtype=torch.int64).random_(0, None).tolist()):
        with cpu_dropout.own_words(seed):
            (loss_and_logits(setup.model, shard)[0] * weight).backward()
    in_turn = _gradients(setup)
    assert all(torch.equal(a, b) for a, b in zip(split, in_turn))
    torch.manual_seed(5)
    shards.backward(setup.model, setup.trainable, batch, lambda loss: loss)
    assert not all(torch.equal(a, b) for a, b in zip(_gradients(setup), split))  # other seeds, other masks
    shards.pool.shutdown()


def test_lora_training_on_two_threads_splits_its_steps(two_threads, tiny_bert_folder, r8_csv, tmp_path):
    threads = []

    def record(loss, step):
        threads.append(threading.current_thread().name)
        return loss

    with faults.injected("loss", record):
        first = train(_config(tiny_bert_folder, r8_csv, tmp_path / "a"))
    assert len(threads) == 2 * 3 and sum(name.startswith("lowrank-shard") for name in threads) == 3
    assert not any(thread.name.startswith("lowrank-shard") for thread in threading.enumerate())  # shut down
    second = train(_config(tiny_bert_folder, r8_csv, tmp_path / "b"))
    assert [h.get("train_loss") for h in first["history"]] == [h.get("train_loss") for h in second["history"]]
    config = _config(tiny_bert_folder, r8_csv, tmp_path / "c")
    setup = prepare(config)
    assert threaded.usable(config, setup)
    assert not threaded.usable(_config(tiny_bert_folder, r8_csv, tmp_path / "c", method="full"), setup)
    assert not threaded.usable(_config(tiny_bert_folder, r8_csv, tmp_path / "c", compile=True), setup)
    torch.set_num_threads(1)
    assert not threaded.usable(config, setup)
