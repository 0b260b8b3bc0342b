"""What a training run is asked to do: :class:`TrainConfig`, validated on construction, and the default learning
rates, which depend on the method and the task (measured on Reuters R8: reports/training_reuters_r8.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lowrank.data.instructions import LOSS_ON
from lowrank.errors import LowrankError

DEFAULT_LR = {("lora", "classification"): 2e-3, ("lora", "lm"): 1e-3,
              ("full", "classification"): 5e-5, ("full", "lm"): 2e-5}
# A newly initialized classifier head learns at max(lr, this): at full fine-tuning's 5e-5 a fresh head is still
# under-trained after 3 epochs (MiniLM-L6 on R52: 83.6% full against 92.4% LoRA r=16, reports/rank_advice.md).
DEFAULT_HEAD_LR = 2e-3
# MLPs on images (lowrank.tasks.images), by method. The text rates are far too low there: full at 5e-5 barely
# moves a fresh network. Measured (held-out accuracy): full from scratch, mlp:784,200,200,10 on mnist-5k, 10 epochs
# of 32: 0.955 at 3e-3, 0.950 at 1e-2, 0.937 at 3e-2 (1e-2 wins only short runs); LoRA r=1/4 adapting a trained
# network to left-right mirrored mnist-5k, 3 epochs: 0.894/0.906 at 1e-2, 0.833/0.867 at 3e-3, 0.889/0.909 at 3e-2.
DEFAULT_IMAGE_LR = {"lora": 1e-2, "full": 3e-3}
# LoRA's alpha when not given: fixed, so that the scale s = alpha / r falls as 1/r. With Adam every entry of B and
# A moves by about lr a step, so the step of s B A, a sum of r such rank-1 terms, grows like s r: at alpha = r it
# grew with r, and the rate that suits r = 8 collapsed r >= 16 on real tasks; at a fixed alpha it is the same at
# every rank (the learning rate transfers across ranks), and at r = 8 it is the earlier default exactly.
DEFAULT_ALPHA = 8.0


@dataclass(frozen=True)
class TrainConfig:
    """What to train. ``alpha`` defaults to :data:`DEFAULT_ALPHA` (scale 8 / r) and ``lr`` to :data:`DEFAULT_LR` for the method
    and task (:data:`DEFAULT_IMAGE_LR` for an MLP), ``head_lr`` (a new classifier head's, an MLP's last layer's)
    to ``max(lr, DEFAULT_HEAD_LR)``; ``targets`` 'auto' picks the attention query and value projections of known
    architectures, or an MLP's hidden layers.
    ``max_steps`` caps the optimizer steps below ``epochs`` passes; ``max_train_samples`` / ``eval_samples``
    take fixed seeded subsets. ``nonfinite``: at a non-finite loss or gradient, ``"stop"`` the run (the last good
    checkpoint is kept) or ``"skip"`` the step (lowrank.training.guard). ``parallel``: on several processes
    (torchrun), ``"ddp"`` or ``"fsdp"`` (lowrank.training.parallel); ``batch_size`` is then the global batch.
    ``compile`` runs the model through torch.compile (pays off on long runs only: compiling takes tens of
    seconds). ``cuda_graphs``: on one GPU, replay each step from a CUDA graph (lowrank.training.graphed).
    ``loss_on``: instruction data's loss on the ``"completion"`` (prompt and non-assistant tokens masked) or on
    ``"all"`` tokens (lowrank.data.chat); plain text learns every token either way."""

    model: str
    data: str
    method: str
    out: Path
    task: str = "auto"
    rank: int = 8
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    alpha: float | None = None
    targets: str = "auto"
    use_rslora: bool = False
    dropout: float = 0.0
    init: str = "kaiming"
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    max_length: int = 128
    lr: float | None = None
    head_lr: float | None = None
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int | None = None
    eval_samples: int | None = None
    max_train_samples: int | None = None
    save_every: int | None = None
    seed: int = 0
    bf16: bool = True
    compile: bool = False
    cuda_graphs: bool = True
    device: str = "auto"
    overwrite: bool = False
    resume: bool = False
    nonfinite: str = "stop"
    parallel: str = "ddp"
    loss_on: str = "completion"

    def __post_init__(self) -> None:
        checks = [
            (self.method in ("lora", "full"), f"method must be 'lora' or 'full', got {self.method!r}"),
            (self.task in ("auto", "classification", "lm"), f"task must be auto, classification or lm, got {self.task!r}"),
            (self.rank >= 1, f"rank must be >= 1, got {self.rank}"),
            (self.alpha is None or self.alpha > 0, f"alpha must be > 0, got {self.alpha}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"steps must be >= 1, got {self.max_steps}"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch size and gradient accumulation must be >= 1"),
            (self.max_length >= 8, f"max length must be >= 8, got {self.max_length}"),
            (self.lr is None or self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.head_lr is None or self.head_lr > 0, f"head learning rate must be > 0, got {self.head_lr}"),
            (0 <= self.warmup_ratio < 1, f"warmup ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}"),
            (self.nonfinite in ("stop", "skip"), f"on-nonfinite must be stop or skip, got {self.nonfinite!r}"),
            (self.parallel in ("ddp", "fsdp"), f"parallel must be ddp or fsdp, got {self.parallel!r}"),
            (self.loss_on in LOSS_ON, f"loss-on must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LowrankError(message)
        for name in ("eval_every", "eval_samples", "max_train_samples", "save_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LowrankError(f"{name.replace('_', ' ')} must be >= 1, got {value}")
