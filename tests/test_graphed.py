"""CUDA-graph steps (lowrank.training.graphed): the padding that keeps a run's batch shapes few leaves the loss and
the gradients of the unpadded batch, and the eager step is what runs where graphs cannot (here: the CPU). The
graphs themselves need a GPU: benchmarks/check_graphed_step.py compares them with eager steps there."""

from __future__ import annotations

import pytest
import torch

from lowrank.data.batches import IGNORE_INDEX, TokenizedSet
from lowrank.tiny_models import tiny_model
from lowrank.training import faults
from lowrank.train_config import TrainConfig
from lowrank.tasks.loss import loss_and_logits
from lowrank.training.graphed import WIDTH_STEP, padded, usable, widens
from lowrank.training.setup import prepare


def _batch(task: str, lengths: list[int], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """A random batch; task "instruction": LM examples whose first third of tokens (the prompt) has no target."""
    generator = torch.Generator().manual_seed(sum(lengths))
    width = max(lengths)
    ids = torch.randint(5, 1000, (len(lengths), width), generator=generator)
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, pad_id)
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX) if task != "classification" else torch.tensor([0, 2, 1][:len(lengths)])
    if task == "instruction":
        labels = labels.masked_fill(torch.arange(width) < torch.tensor(lengths)[:, None] // 3, IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_padding_rounds_the_width_up_and_masks_what_it_adds():
    batch = _batch("classification", [21, 9, 4], pad_id=7)
    out = padded(batch, pad_id=7)
    assert out["input_ids"].shape == (3, 32) and 32 % WIDTH_STEP == 0
    assert torch.equal(out["input_ids"][:, :21], batch["input_ids"]) and (out["input_ids"][:, 21:] == 7).all()
    assert torch.equal(out["attention_mask"][:, :21], batch["attention_mask"])
    assert out["attention_mask"][:, 21:].eq(0).all() and torch.equal(out["labels"], batch["labels"])
    full = _batch("classification", [32, 30, 1])
    assert padded(full, 0) is full
    chat = padded(_batch("instruction", [21, 9]), pad_id=7)  # token labels: the added positions carry no target
    assert chat["labels"].shape == (2, 32) and (chat["labels"][:, 21:] == IGNORE_INDEX).all()
    images = {"x": torch.zeros(3, 5), "labels": torch.zeros(3, dtype=torch.long)}
    assert padded(images, 0) is images


def test_only_sets_of_varying_length_are_widened():
    """Language-modelling blocks all have one width and run without a mask: never padded; classification and
    instruction examples are."""
    blocks = TokenizedSet(((1, 2, 3), (4, 5, 6)), (), 0)
    classes = TokenizedSet(((1, 2, 3), (4,)), (0, 1), 0)
    chat = TokenizedSet(((1, 2, 3), (4, 5)), (), 0, ((-100, 2, 3), (-100, 5)))
    assert (widens(blocks), widens(classes), widens(chat)) == (False, True, True)


@pytest.mark.parametrize("task, lengths", [("instruction", [24, 9, 17]), ("lm", [24, 24, 24])])
def test_causal_batches_without_their_mask_have_the_loss_their_mask_gives(task, lengths):
    """Instruction examples are right-padded, so without the mask a real token still attends only to the real
    tokens before it; language-modelling blocks are whole, so their all-ones mask says nothing."""
    model = tiny_model("llama", "causal-lm").double()
    batch = _batch(task, lengths)
    loss = loss_and_logits(model, batch)[0]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten())
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family, task", [("bert", "classification"), ("llama", "classification"),
                                          ("gpt2", "classification"), ("llama", "instruction"),
                                          ("gpt2", "instruction")])
def test_padded_batch_has_the_unpadded_loss_and_gradients(family, task):
    """Instruction examples run without their mask (right padding): padding them further changes nothing."""
    model = tiny_model(family, "classification" if task == "classification" else "causal-lm").double()
    batch = _batch(task, [13, 5, 10])  # eval mode: no dropout, both passes see one network
    wider = padded(batch, 0)
    assert wider["input_ids"].shape[1] == WIDTH_STEP  # 13 tokens, rounded up
    results = []
    for b in (batch, wider):
        model.zero_grad()
        loss = loss_and_logits(model, b)[0]
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss, grads), (loss_padded, grads_padded) = results
    # float64 weights; the loss is taken in float32 (loss_and_logits), so agreement is to float32 rounding, while
    # a padded position that leaked into attention moves the loss by about 1e-2
    torch.testing.assert_close(loss_padded, loss, rtol=1e-6, atol=1e-6)
    assert len(grads) == len(grads_padded) > 0
    for g, h in zip(grads, grads_padded):
        torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-7)


def test_graphs_are_used_only_where_they_apply(tiny_bert_folder, tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "\n".join(f"the market rose {i} points,{'ab'[i % 2]}" for i in range(12)))
    config = TrainConfig(model=str(tiny_bert_folder), data=str(csv), method="lora", out=tmp_path / "o", device="cpu")
    setup = prepare(config)
    assert not usable(config, setup)  # a CPU run steps eagerly
    setup.device = torch.device("cuda")
    assert usable(config, setup)
    for change in ({"grad_accum": 2}, {"nonfinite": "skip"}, {"compile": True}, {"cuda_graphs": False},
                   {"checkpointing": True}):
        assert not usable(TrainConfig(**{**config.__dict__, **change}), setup), change
    with faults.injected("loss", lambda loss, step: loss):
        assert not usable(config, setup)
