"""Was rank r enough, measured as retraining measures it: the held-out loss of short continuations at r, 2r, r/2.

From a trained adapter, arms continue training on the same batches, with fresh AdamW state at ``lr_scale`` times
the run's learning rates (warmup over the first tenth, then linear decay to 0: the decay anneals the arms, which
at a constant rate scatter more than they differ) and the model in eval mode (no dropout), so that the arms differ
only in their rank:

- ``same``: rank ``r`` as trained;
- ``doubled``: rank ``2r`` (capped by ``min(out, in)``): ``r`` new rows of ``A`` drawn as LoRA draws them and ``r``
  new columns of ``B`` at zero, so the function is unchanged at the first step;
- ``halved``: ``s B A`` cut to its best rank-``r/2`` approximation (factored SVD, Eckart-Young), then continued
  (none at ``r = 1``);
- ``quartered`` (when asked; none at ``r <= 2``): the same cut to rank ``r/4``, the verdict's margin for "lower r"
  (:mod:`lowrank.advice.sufficiency.verdict`); ``analyze --data`` runs it only where "lower r" is in question.

Every arm keeps the adapter's scale ``s``: the directions the arms share then start with the same factors, the
same gradients and the same Adam steps, and the arms differ only in the directions added or removed. (Rescaling
to the scale a fresh rank-``2r`` run would have, ``alpha / 2r``, slows the shared directions down in the doubled arm
and speeds them up in the halved one; while the continuation still lowers the loss that alone ranks the arms.)

Every arm is scored on a fixed held-out sample, per example (language modelling: per block or instruction example,
its mean token loss over the tokens that carry a loss),
so that differences are paired:

    doubling gain   g = mean_i (l_same,i - l_doubled,i)        what r more directions buy
    halving cost    h = mean_i (l_halved,i - l_same,i)          what the lower half of the rank was worth
    quartering cost q = mean_i (l_quartered,i - l_same,i)       what all but the top quarter was worth
    continuation    c = mean_i (l_trained,i - l_same,i)         what training on at r buys

each with its standard error ``sd_i / sqrt(n)``, and the same differences in accuracy (classification).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lowrank import lora, spectra
from lowrank.adapters import read_adapter_config
from lowrank.advice import sample as samples
from lowrank.compress.factors import split_factors
from lowrank.data.batches import IGNORE_INDEX
from lowrank.errors import LowrankError
from lowrank.progress import ProgressCallback, report
from lowrank.tasks.loss import autocast, forward, loss_and_logits, next_tokens, to_device

WARMUP = 0.1
EVAL_BATCH = 64
LM_ROWS = 8
LR_SCALE = 0.1


@dataclass(frozen=True)
class Scores:
    """Per-example held-out losses and correctness (``correct`` is None for language modelling)."""

    losses: torch.Tensor
    correct: torch.Tensor | None

    @property
    def loss(self) -> float:
        return float(self.losses.mean())

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else float(self.correct.double().mean())


@dataclass(frozen=True)
class Difference:
    """A paired held-out difference: mean and standard error, in loss and (classification) accuracy points."""

    loss: float
    loss_se: float
    accuracy: float | None
    accuracy_se: float | None


def paired(worse: Scores, better: Scores) -> Difference:
    """``mean_i (worse_i - better_i)`` of the losses (and ``better - worse`` of accuracy, in points), with SEs."""
    def mean_se(d: torch.Tensor) -> tuple[float, float]:
        d = d.double()
        return float(d.mean()), float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else 0.0

    loss, loss_se = mean_se(worse.losses - better.losses)
    if worse.correct is None:
        return Difference(loss, loss_se, None, None)
    acc, acc_se = mean_se(better.correct.double() - worse.correct.double())
    return Difference(loss, loss_se, 100 * acc, 100 * acc_se)


@dataclass(frozen=True)
class ProbeResult:
    """Held-out scores of the trained adapter and of each arm after each of its checkpoint step counts
    (``arms[name][steps]``; an arm that cannot run, such as halving rank 1, is absent), and the paired differences."""

    rank: int
    trained: Scores
    arms: dict[str, dict[int, Scores]]
    seconds: float

    def doubling(self, steps: int) -> Difference | None:
        """Held-out loss of the same rank minus the doubled rank's, both after ``steps`` steps."""
        if "doubled" not in self.arms:
            return None
        return paired(self.arms["same"][steps], self.arms["doubled"][steps])

    def halving(self, steps: int) -> Difference | None:
        """Held-out loss of the halved rank minus the same rank's, both after ``steps`` steps."""
        if "halved" not in self.arms:
            return None
        return paired(self.arms["halved"][steps], self.arms["same"][steps])

    def quartering(self, steps: int) -> Difference | None:
        """Held-out loss of the rank-r/4 arm minus the same rank's, both after ``steps`` steps (None: not run)."""
        if "quartered" not in self.arms:
            return None
        return paired(self.arms["quartered"][steps], self.arms["same"][steps])

    def continuation(self, steps: int) -> Difference:
        """Held-out loss of the trained adapter minus the same rank's after ``steps`` more steps."""
        return paired(self.trained, self.arms["same"][steps])


@dataclass(frozen=True)
class ProbeSetup:
    """What the arms need: the model with its adapter loaded, the names of the modules trained in full beside it,
    the training examples the steps read (``steps * batch_size`` of them, in order), the held-out sample, and the
    run's learning rates."""

    model: nn.Module
    trainable_modules: tuple[str, ...]
    train: object
    heldout: object
    batch_size: int
    lr: float
    head_lr: float


@torch.no_grad()
def score(model: nn.Module, data, device: torch.device) -> Scores:
    """Per-example held-out loss (LM: each block's or instruction example's mean loss over its target tokens, the
    masked ones left out) and correctness, under bf16 autocast on CUDA."""
    model.eval()
    losses, correct = [], []
    for start in range(0, len(data), EVAL_BATCH):
        batch = to_device(data.collate(list(range(start, min(start + EVAL_BATCH, len(data))))), device)
        with autocast(device, True):
            logits = forward(model, batch)
        labels = batch["labels"]
        if logits.ndim == 3:
            losses.append(torch.cat([example_losses(logits[i:i + LM_ROWS], labels[i:i + LM_ROWS])
                                     for i in range(0, len(logits), LM_ROWS)]).cpu())
        else:
            losses.append(F.cross_entropy(logits.float(), labels, reduction="none").cpu())
            correct.append((logits.argmax(-1) == labels).cpu())
    return Scores(torch.cat(losses).double(), torch.cat(correct) if correct else None)


def example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean next-token cross-entropy over its target tokens (labels not IGNORE_INDEX), in float32.
    Taken :data:`LM_ROWS` sequences at a time, so that a large vocabulary's float32 logits are never held for the
    whole batch (SmolLM2: 64 x 128 tokens x 49,152 would be 1.6 GB)."""
    targets = next_tokens(labels)
    token = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                            reduction="none")
    return token.sum(1) / (targets != IGNORE_INDEX).sum(1).clamp(min=1)


Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A, B)


def _is_factor(name: str) -> bool:
    """Whether a parameter name is a LoRA factor (``...lora_A`` / ``...lora_B``)."""
    return name.rsplit(".", 1)[-1].startswith("lora_")


def _factors(model: nn.Module) -> Factors:
    return {name: (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
            for name, layer in lora.lora_layers(model).items()}


def _set_factors(model: nn.Module, factors: Factors, others: dict[str, torch.Tensor]) -> None:
    """Every LoRA layer's factors from ``factors`` (fresh parameters, rank from ``A``), and the modules trained in
    full beside them back to ``others``."""
    for name, layer in lora.lora_layers(model).items():
        A, B = factors[name]
        layer.lora_A = nn.Parameter(A.clone())
        layer.lora_B = nn.Parameter(B.clone())
        layer.r = A.shape[0]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in others:
                param.copy_(others[name])


def doubled_factors(A: torch.Tensor, B: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``r + k``, ``k = min(r, min(out, in) - r)``: ``k`` new rows of ``A`` drawn as LoRA draws them
    (kaiming-uniform, bound ``1/sqrt(in)``) and ``k`` zero columns of ``B``, so that ``B' A' = B A``."""
    r, n = A.shape
    k = min(r, min(B.shape[0], n) - r)
    bound = 1.0 / math.sqrt(n)
    new = torch.empty(k, n).uniform_(-bound, bound, generator=generator).to(A.device, A.dtype)
    zeros = torch.zeros(B.shape[0], k, dtype=B.dtype, device=B.device)
    return torch.cat([A, new]), torch.cat([B, zeros], 1)


def halved_factors(A: torch.Tensor, B: torch.Tensor, scale: float,
                   divisor: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``r // divisor`` (at least 1), with ``s B' A'`` the best approximation of ``s B A`` of that rank
    (Eckart-Young)."""
    B2, A2 = split_factors(spectra.lora_svd(B.cpu(), A.cpu(), scale), max(1, A.shape[0] // divisor), scale)
    return A2.to(A.device, A.dtype), B2.to(B.device, B.dtype)


def _continue(setup: ProbeSetup, checkpoints: tuple[int, ...], device: torch.device, lr_scale: float,
              horizon: int) -> dict[int, Scores]:
    """AdamW steps over the setup's training examples (a fixed shuffled order), eval mode, at ``lr_scale`` times the
    run's rates on a schedule of ``horizon`` steps: linear warmup over its first tenth, then linear decay to 0 at
    ``horizon`` (the decay anneals the arms: at a constant rate their held-out losses scatter more than they
    differ); runs to the last checkpoint and returns the held-out scores at each checkpoint."""
    model = setup.model
    lora.mark_trainable(model, setup.trainable_modules)
    order = torch.randperm(len(setup.train), generator=torch.Generator().manual_seed(0)).tolist()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    factors = [p for n, p in trainable if _is_factor(n)]
    others = [p for n, p in trainable if not _is_factor(n)]
    groups = [{"params": factors, "lr": setup.lr * lr_scale}] + (
        [{"params": others, "lr": setup.head_lr * lr_scale}] if others else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    peaks = [group["lr"] for group in optimizer.param_groups]
    warmup = max(1, round(WARMUP * horizon))
    scores = {}
    for step in range(max(checkpoints)):
        factor = (step + 1) / warmup if step < warmup else (horizon - step) / max(1, horizon - warmup)
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = peak * factor
        start = step * setup.batch_size
        batch = to_device(setup.train.collate([order[(start + i) % len(order)] for i in range(setup.batch_size)]),
                          device)
        model.eval()
        with autocast(device, True):
            loss, _ = loss_and_logits(model, batch)
        if not torch.isfinite(loss):
            raise LowrankError(f"the probe's loss became {float(loss)} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(factors + others, 1.0)
        optimizer.step()
        if step + 1 in checkpoints:
            scores[step + 1] = score(model, setup.heldout, device)
    return scores


def probe(setup: ProbeSetup, checkpoints: dict[str, tuple[int, ...]], device: torch.device, seed: int = 0,
          lr_scale: float = LR_SCALE, progress: ProgressCallback | None = None,
          horizon: int | None = None,
          only_if: dict[str, Callable[[dict[str, dict[int, Scores]]], bool]] | None = None) -> ProbeResult:
    """Score the trained adapter, then each arm (``"same"``, ``"doubled"``, ``"halved"``, ``"quartered"``, in that
    order) at its checkpoint step counts from it (see the module docstring); an arm left out of ``checkpoints`` is
    not run, nor one whose test in ``only_if`` is false on the scores of the arms run before it. The schedule
    decays to 0 at ``horizon`` steps (default: the last checkpoint), the same for every arm."""
    if not checkpoints.get("same") or any(step < 1 for steps in checkpoints.values() for step in steps):
        raise LowrankError(f"probe checkpoints must be >= 1 and include the same rank's, got {checkpoints}")
    horizon = horizon or max(max(steps) for steps in checkpoints.values())
    began = time.perf_counter()
    model = setup.model.to(device)
    layers = lora.lora_layers(model)
    if not layers:
        raise LowrankError("the probe needs a model with LoRA layers")
    ranks = {layer.r for layer in layers.values()}
    r = max(ranks)
    trained_factors = _factors(model)
    lora.mark_trainable(model, setup.trainable_modules)
    others = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and not _is_factor(n)}
    generator = torch.Generator().manual_seed(seed)
    arms = {"same": trained_factors}
    if "doubled" in checkpoints:
        arms["doubled"] = {name: doubled_factors(A, B, generator) for name, (A, B) in trained_factors.items()}
        if all(new[0].shape == old[0].shape for old, new in zip(trained_factors.values(), arms["doubled"].values())):
            del arms["doubled"]  # every module is already at full rank
    if "halved" in checkpoints and r > 1:
        arms["halved"] = {name: halved_factors(A, B, layers[name].scaling) for name, (A, B) in trained_factors.items()}
    if "quartered" in checkpoints and r > 2:
        arms["quartered"] = {name: halved_factors(A, B, layers[name].scaling, 4)
                             for name, (A, B) in trained_factors.items()}
    report(progress, "held-out score of the trained adapter", 0, len(arms) + 1)
    trained = score(model, setup.heldout, device)
    results = {}
    for index, (arm, factors) in enumerate(arms.items(), 1):
        if only_if and arm in only_if and not only_if[arm](results):
            continue
        report(progress, f"probe: {arm} rank", index, len(arms) + 1)
        _set_factors(model, factors, others)
        results[arm] = _continue(setup, checkpoints[arm], device, lr_scale, horizon)
    _set_factors(model, trained_factors, others)
    report(progress, "probe", len(arms) + 1, len(arms) + 1)
    model.requires_grad_(False)
    return ProbeResult(rank=r, trained=trained, arms=results, seconds=time.perf_counter() - began)


def load(adapter: str, base: str, data: str, steps: int, batch_size: int, heldout: int, max_length: int,
         lr: float, head_lr: float, loss_on: str, seed: int = 0) -> ProbeSetup:
    """The trained adapter on its base, ``steps * batch_size`` training examples and ``heldout`` test examples
    (instruction data: the loss on ``loss_on``)."""
    sample = samples.trained(adapter, base, data, steps * batch_size, max_length, seed, loss_on, heldout=heldout)
    config = read_adapter_config(adapter)
    return ProbeSetup(model=sample.model, trainable_modules=config.modules_to_save, train=sample.data,
                      heldout=sample.heldout, batch_size=batch_size, lr=lr, head_lr=head_lr)
