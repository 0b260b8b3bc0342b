"""Everything a training run needs, built and validated before anything is written: data, model, adapters,
optimizer, step count. Bad input (unknown names, missing columns, targets that match nothing, a network that does
not fit the images) fails here. Hugging Face models train on text; MLPs (``lowrank.tasks.images``) on images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lowrank import assets, cpu, cpu_dropout, lora
from lowrank.distributed import SINGLE, World
from lowrank.data.batches import ImageSet, TokenizedSet
from lowrank.data.text import TextDataset, load_text_dataset
from lowrank.data.tokenize import tokenize_split
from lowrank.errors import LowrankError
from lowrank.mlp import is_mlp_spec
from lowrank.tasks.images import is_image_model, load_image_task
from lowrank.tasks.kind import load_text_model, require_labels, text_task
from lowrank.tasks.modules import auto_targets, head_modules
from lowrank.training import checks, fused, parallel, pooled
from lowrank.tasks.defaults import DEFAULT_ALPHA, DEFAULT_HEAD_LR, DEFAULT_IMAGE_LR, DEFAULT_LR
from lowrank.train_config import TrainConfig



@dataclass
class Setup:
    """``model`` is the model itself (saved, evaluated); ``engine`` what a training step calls: ``model``, or a
    DistributedDataParallel around it (lowrank.training.parallel)."""

    model: nn.Module
    tokenizer: object | None
    model_path: str
    task: str
    train: TokenizedSet | ImageSet
    test: TokenizedSet | ImageSet
    device: torch.device
    optimizer: torch.optim.Optimizer
    trainable: list[nn.Parameter]
    trainable_count: int
    total_count: int
    total_steps: int
    lr: float
    lora_config: lora.LoraConfig | None
    adapted: list[str]
    engine: nn.Module
    world: World = SINGLE
    fused: bool = False  # liger-kernel's kernels installed (lowrank.training.fused)


def prepare(config: TrainConfig, world: World = SINGLE) -> Setup:
    """Build the run on this process; on several (``world``), each builds the same model from the same seed, then
    the model is wrapped for ``config.parallel`` and each rank's random stream (dropout) becomes its own."""
    torch.manual_seed(config.seed)
    image = is_image_model(config.model)
    model, tokenizer, model_path, task, train_set, test_set = (_image_inputs if image else _text_inputs)(config)
    lora_config, adapted = _adapt(model, config, task)
    checks.check_ranks(model)
    if config.checkpointing:
        _checkpoint_layers(model, config.model)
    if image and world.distributed and config.parallel == "fsdp":
        raise LowrankError("--parallel fsdp shards transformer blocks; train an MLP with --parallel ddp")
    device = world.device(config.device)
    model.to(device)
    if device.type == "cpu":
        cpu.keep_freed_memory()  # the next step's tensors reuse the last step's pages
    if not image:
        pooled.install(model, task)  # a BERT classifier's last layer at the position its head reads
        if device.type == "cpu":
            cpu_dropout.install(model)  # the same dropout, its masks drawn and applied faster (training)
    installed = (config.fused and not image and device.type == "cuda" and not world.distributed
                 and fused.available() and fused.install(model, task))
    counts = sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())
    engine = parallel.wrap(model, world, device, config.parallel)
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = config.lr if config.lr is not None else (DEFAULT_IMAGE_LR[config.method] if image else
                                                  DEFAULT_LR[(config.method, task)])
    fused_adam = not parallel.is_sharded(model)  # one pass over all parameters, faster than foreach on the CPU too
    # (reports/training_speed.md); foreach over FSDP's shards
    optimizer = torch.optim.AdamW(_param_groups(model, task, lr, config), lr=lr, weight_decay=config.weight_decay,
                                  fused=fused_adam)
    if config.compile:
        model.compile()
    if world.rank > 0:
        torch.manual_seed(config.seed + world.rank)
    total = total_steps(config, len(train_set))
    return Setup(model, tokenizer, model_path, task, train_set, test_set, device, optimizer, trainable, *counts,
                 total, lr, lora_config, adapted, engine, world, installed)


def total_steps(config: TrainConfig, train_examples: int) -> int:
    """Optimizer steps of a run: ``epochs`` passes of ``ceil(n / batch_size)`` micro-batches, ``grad_accum``
    micro-batches a step, capped by ``max_steps``."""
    total = max(1, config.epochs * (-(-train_examples // config.batch_size)) // config.grad_accum)
    return min(total, config.max_steps) if config.max_steps else total


def _text_inputs(config: TrainConfig) -> tuple:
    """A Hugging Face model (new classifier head, or causal LM) and its tokenized data."""
    dataset = load_text_dataset(config.data)
    model_path = str(assets.resolve_model_path(config.model))
    checks.check_tokenizer_files(Path(model_path))
    task = _task(config, dataset)
    model, tokenizer = load_text_model(config.model, task, dataset)
    checks.check_max_length(model, config.max_length)
    train_set, test_set = _tokenize(dataset, tokenizer, task, config)
    checks.check_token_ids(model, (train_set, test_set), model_path)
    return model, tokenizer, model_path, task, train_set, test_set


def _image_inputs(config: TrainConfig) -> tuple:
    """An MLP (``mlp:`` spec or saved folder) and its image data; always classification."""
    if config.task == "lm":
        raise LowrankError(f"model {config.model} is an MLP, which classifies images; --task lm needs a causal "
                           "language model")
    if config.checkpointing:
        raise LowrankError(f"model {config.model} is an MLP, whose activations are a few vectors per example; "
                           "--checkpointing is for transformer models")
    model, train_set, test_set = load_image_task(config.model, config.data, config.seed)
    if config.max_train_samples is not None:
        train_set = train_set.subset(_sample(len(train_set), config.max_train_samples, config.seed))
    model_path = config.model if is_mlp_spec(config.model) else str(Path(config.model).expanduser())
    return model, None, model_path, "classification", train_set, test_set


def _param_groups(model: nn.Module, task: str, lr: float, config: TrainConfig) -> list[dict]:
    """Trainable parameters in two groups: the head (:func:`head_modules`) at ``head_lr`` (default
    ``max(lr, DEFAULT_HEAD_LR)``), everything else at ``lr``. Each group keeps its peak rate as ``base_lr``."""
    head_lr = config.head_lr if config.head_lr is not None else max(lr, DEFAULT_HEAD_LR)
    heads = head_modules(model, task)
    head, rest = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (head if lora.is_under(name.rpartition(".")[0], heads) else rest).append(param)
    groups = [{"params": rest, "lr": lr, "base_lr": lr}, {"params": head, "lr": head_lr, "base_lr": head_lr}]
    return [g for g in groups if g["params"]]


def _task(config: TrainConfig, dataset: TextDataset) -> str:
    task = text_task(config.model) if config.task == "auto" else config.task
    require_labels(task, dataset, f"data {config.data} has no 'label' column, which classification needs "
                   "(use a causal language model, or --task lm)")
    return task


def _adapt(model: nn.Module, config: TrainConfig, task: str) -> tuple[lora.LoraConfig | None, list[str]]:
    """Inject LoRA (and free the head) or make every parameter trainable."""
    heads = head_modules(model, task)
    if config.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return None, []
    targets = config.targets
    if targets == "auto":
        targets = auto_targets(model)
    lora_config = lora.LoraConfig(r=config.rank, alpha=config.alpha if config.alpha is not None else DEFAULT_ALPHA,
                                  targets=lora.Targets.parse(targets), use_rslora=config.use_rslora,
                                  rank_pattern=dict(config.rank_pattern), alpha_pattern=dict(config.alpha_pattern),
                                  dropout=config.dropout, init=config.init, trainable_modules=heads)
    adapted = lora.inject(model, lora_config, torch.Generator().manual_seed(config.seed))
    lora.mark_trainable(model, heads)
    return lora_config, adapted


def _checkpoint_layers(model: nn.Module, name: str) -> None:
    """Activation checkpointing through the model's own (transformers): each transformer layer keeps only its input
    and is run again in the backward pass. Non-reentrant ``torch.utils.checkpoint``: gradients reach the LoRA factors
    inside a layer whose input needs none (a frozen embedding), and the random state is restored for the recompute,
    so dropout draws the same masks: losses and weights are those of a run without it. Memory: activations drop from
    every layer's intermediates to one (batch x length x width) input a layer plus one layer's intermediates;
    compute: one more forward pass (LoRA: 4N -> 6N FLOPs per token for N base weights, full: 6N -> 8N)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise LowrankError(f"model {name} ({type(model).__name__}) does not support activation checkpointing; "
                           "train it without --checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name; earlier ones lack it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _tokenize(dataset: TextDataset, tokenizer, task: str, config: TrainConfig) -> tuple[TokenizedSet, TokenizedSet]:
    """The training split (a seeded sample of ``max_train_samples`` examples) and the test split."""
    chosen = None
    if config.max_train_samples is not None and config.max_train_samples < dataset.size("train"):
        chosen = _sample(dataset.size("train"), config.max_train_samples, config.seed)
    train = tokenize_split(dataset, tokenizer, task, "train", config.max_length, config.loss_on, chosen)
    test = tokenize_split(dataset, tokenizer, task, "test", config.max_length, config.loss_on)
    if len(train) == 0 or len(test) == 0:
        raise LowrankError(f"data {config.data} gives no {'training' if len(train) == 0 else 'test'} examples "
                           f"at max length {config.max_length}")
    return train, test


def _sample(n: int, limit: int, seed: int) -> list[int]:
    """A fixed seeded choice of ``min(limit, n)`` of ``range(n)``, in order."""
    if limit >= n:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:limit].tolist())
