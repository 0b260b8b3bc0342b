"""What a training run is asked to do: :class:`TrainConfig`, validated on construction (its defaults per task:
:mod:`lowrank.tasks.defaults`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lowrank.data.instructions import LOSS_ON
from lowrank.errors import LowrankError


@dataclass(frozen=True)
class TrainConfig:
    """What to train. ``alpha`` defaults to ``DEFAULT_ALPHA`` (scale 8 / r) and ``lr`` to ``DEFAULT_LR`` for the
    method and task (``DEFAULT_IMAGE_LR`` for an MLP; all in :mod:`lowrank.tasks.defaults`), ``head_lr`` (a new
    classifier head's, an MLP's last layer's) to ``max(lr, DEFAULT_HEAD_LR)``; ``targets`` 'auto' picks the
    attention query and value projections of known architectures, or an MLP's hidden layers.
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
