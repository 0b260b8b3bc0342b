"""What a training run is asked to do: :class:`TrainConfig`, validated on construction (its defaults per task:
:mod:`lowrank.tasks.defaults`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lowrank.data.instructions import DATA_FILES, LOSS_ON, LOSS_ON_HELP
from lowrank.errors import LowrankError
from lowrank.options import option


@dataclass(frozen=True)
class TrainConfig:
    """What to train; each field with an :func:`~lowrank.options.option` is one ``lowrank train`` option, its help
    saying what it does. ``alpha`` defaults to ``DEFAULT_ALPHA`` (scale 8 / r) and ``lr`` to ``DEFAULT_LR`` for the
    method and task (``DEFAULT_IMAGE_LR`` for an MLP; all in :mod:`lowrank.tasks.defaults`), ``head_lr`` to
    ``max(lr, DEFAULT_HEAD_LR)``. ``max_train_samples`` / ``eval_samples`` take fixed seeded subsets. Where the
    work is done: ``nonfinite`` in lowrank.training.guard, ``parallel`` in lowrank.training.parallel,
    ``cuda_graphs`` in lowrank.training.graphed, ``checkpointing`` in lowrank.training.setup, ``loss_on`` in
    lowrank.data.chat."""

    model: str = option(help="Registry key (minilm-l6, smollm2-135m), a local Hugging Face folder, mlp:784,200,10 "
                        "(a new fully connected network from --seed) or a folder a full MLP run wrote.")
    data: str = option(help=f"Registry key (reuters-r8, reuters-r52, 20newsgroups) or {DATA_FILES}; for an MLP an "
                       "image set (digits, mnist-5k, fashion-mnist, .npz/.csv file).")
    method: str = option(choices=("lora", "full"), cli_default="lora")
    out: Path = option(help="Output folder (must be empty or new).")
    task: str = option("auto", "auto: language modelling for causal LMs, else classification.",
                       choices=("auto", "classification", "lm"))
    rank: int = option(8, "LoRA rank r.")
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    alpha: float | None = option(None, "LoRA alpha; the update is scaled by alpha/r. [default: 8, so that the "
                                 "default learning rate suits every rank]")
    targets: str = option("auto", "Module suffixes (query,value), 're:<regex>', or all-linear; auto: attention "
                          "query and value (MLP: every hidden layer, the last layer trained in full).")
    use_rslora: bool = option(False, "Scale by alpha/sqrt(r) (rank-stabilized LoRA).", flag="--rslora")
    dropout: float = option(0.0, "Dropout on the LoRA branch input.")
    init: str = option("kaiming", "Initialization of A (B starts at zero).", choices=("kaiming", "gaussian"))
    epochs: int = option(3)
    max_steps: int | None = option(None, "Stop after this many optimizer steps.", flag="--steps")
    batch_size: int = option(32)
    grad_accum: int = option(1, "Micro-batches per optimizer step.")
    max_length: int = option(128, "Tokens per example (LM of plain text: per block).")
    lr: float | None = option(None, "Peak learning rate. [default: 5e-3 LoRA, 5e-5 full; LM 1e-3 / 2e-5; MLP 1e-2 / "
                              "3e-3]")
    head_lr: float | None = option(None, "Peak learning rate of a new classifier head (an MLP's last layer). "
                                   "[default: max(lr, 2e-3)]")
    warmup_ratio: float = option(0.06)
    weight_decay: float = option(0.0)
    grad_clip: float = option(1.0)
    eval_every: int | None = option(None, "Evaluate on the held-out split every N steps (and always at the end).")
    eval_samples: int | None = option(None, "Evaluate on a fixed sample of N held-out examples.")
    max_train_samples: int | None = option(None, "Train on a fixed sample of N training examples.",
                                           flag="--train-samples")
    save_every: int | None = option(None, "Checkpoint every N steps (for --resume).")
    seed: int = option(0)
    bf16: bool = option(True, "bf16 autocast on CUDA.", flag="--bf16/--no-bf16")
    compile: bool = option(False, "Run the model through torch.compile (long runs only: compiling takes tens of "
                           "seconds).")
    cuda_graphs: bool = option(True, "On one GPU, replay each training step from a CUDA graph (one per batch "
                               "shape).", flag="--cuda-graphs/--no-cuda-graphs")
    device: str = option("auto", choices=("auto", "cpu", "cuda"))
    overwrite: bool = option(False, "Replace a non-empty --out folder.")
    resume: bool = option(False, "Continue from the checkpoint in --out (refused when a setting that changes the "
                          "result differs from the checkpoint's).")
    nonfinite: str = option("stop", "At a NaN/Inf loss or gradient: stop (the last good checkpoint is kept) or skip "
                            "the step.", choices=("stop", "skip"), flag="--on-nonfinite")
    parallel: str = option("ddp", "On several processes: DistributedDataParallel, or FSDP2 (the model sharded over "
                           "the processes, for models too large for one device). --batch-size is the global batch.",
                           choices=("ddp", "fsdp"))
    loss_on: str = option("completion", LOSS_ON_HELP, choices=LOSS_ON, listed_after="max_length")
    fused: bool = option(False, "On CUDA, liger-kernel's fused RMSNorm, SwiGLU and rotary kernels, and a causal LM "
                         "head's loss without its full logits, where liger-kernel is installed (the fused extra) and "
                         "knows the model type. Not yet measured on a GPU.", flag="--fused/--no-fused",
                         listed_after="compile")
    checkpointing: bool = option(False, "Activation checkpointing: keep only each transformer layer's input and "
                                 "recompute it in the backward pass: less memory, one more forward pass a step, "
                                 "the same results. Turns CUDA graphs off.", listed_after="compile")

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
