"""Training on several processes: DistributedDataParallel or FSDP2 (``fully_shard``), and the same global batch.

Every rank builds the same model from the same seed and walks the same stream of global micro-batches; rank ``k``
of ``n`` computes on the examples at positions ``k, k+n, ...`` of each (:func:`shard`). One process's loss for a
micro-batch is the mean over its ``T`` targets, ``L = (1/T) sum_i l_i``; rank ``k`` back-propagates
``n * (1/T) sum_{i in shard k} l_i`` and DDP / FSDP average the gradients over the ``n`` ranks, so the update is
the gradient of ``L`` itself: the same as one process up to the order of float additions. A rank whose shard is
empty (a last batch smaller than ``n``) runs one example with weight 0, since every rank must join every
collective.

- ``ddp``: each rank holds the whole model; the trainable gradients are all-reduced.
- ``fsdp``: each transformer block (the model's ``_no_split_modules``) and then the root are ``fully_shard``-ed:
  frozen base and trainable adapters alike are split over the ranks and gathered block by block; for full
  fine-tuning and for bases too large for one device. The optimizer works on the shards (DTensors).

Results and checkpoints are written by rank 0 from full tensors: :func:`gathered` unshards FSDP parameters for
the duration of a block (a collective every rank enters).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from lowrank.distributed import World

STRATEGIES = ("ddp", "fsdp")


def wrap(model: nn.Module, world: World, device: torch.device, strategy: str) -> nn.Module:
    """The module the training step calls: ``model`` itself on one process or under FSDP (sharded in place),
    else a DistributedDataParallel around it."""
    if not world.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world.size,))
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in blocks and module is not model:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def shard(host: dict[str, torch.Tensor], world: World) -> tuple[dict[str, torch.Tensor], bool]:
    """This rank's rows of a global host batch, and whether it holds any (else one row, to be weighted 0)."""
    rows = len(host["labels"])
    if world.rank < rows:
        return {k: v[world.rank:: world.size] for k, v in host.items()}, True
    return {k: v[:1] for k, v in host.items()}, False


def _fsdp_modules(model: nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: nn.Module) -> bool:
    return bool(_fsdp_modules(model))


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every parameter of ``model`` is a full, plain tensor (FSDP parameters all-gathered; a
    collective); a no-op for an unsharded model. Writes into the parameters inside the block are lost."""
    modules = _fsdp_modules(model)
    for module in modules:
        module.unshard()
    try:
        yield model
    finally:
        for module in modules:
            module.reshard()


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers as full CPU tensors (for ``save_pretrained(state_dict=...)``)."""
    with gathered(model):
        state = {name: p.detach().cpu().clone() for name, p in model.named_parameters()}
        state.update({name: b.detach().cpu().clone() for name, b in model.named_buffers()
                      if name.rpartition(".")[2] not in _non_persistent(model, name)})
    return state


def _non_persistent(model: nn.Module, name: str) -> set[str]:
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return set(getattr(owner, "_non_persistent_buffers_set", ()))


def load_full(param: torch.Tensor, tensor: torch.Tensor) -> None:
    """Copy a full ``tensor`` into ``param``, which may be an FSDP shard (a DTensor)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(param, DTensor):
            param.copy_(distribute_tensor(tensor.to(param.device, param.dtype), param.device_mesh, param.placements))
        else:
            param.copy_(tensor)


@contextlib.contextmanager
def plain_class(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block an FSDP model has its own class again (``FSDPLlamaForCausalLM`` -> ``LlamaForCausalLM``),
    so that ``save_pretrained`` writes the true architecture name into config.json."""
    from torch.distributed.fsdp import FSDPModule

    sharded = type(model)
    if not isinstance(model, FSDPModule):
        yield model
        return
    model.__class__ = next(c for c in sharded.__mro__ if not issubclass(c, FSDPModule))
    try:
        yield model
    finally:
        model.__class__ = sharded


def plain(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a replicated gradient norm, say); any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state keyed by parameter name, with full CPU tensors (a collective under FSDP; the full
    state lands on rank 0)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of :func:`optimizer_state`, sharding the state again under FSDP."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def sync_gradients(engine: nn.Module, sync: bool):
    """A context for one micro-batch: gradients reduced across ranks only when ``sync`` (the step's last)."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(engine, "no_sync"):  # DistributedDataParallel
        return engine.no_sync()
    from torch.distributed.fsdp import FSDPModule

    if isinstance(engine, FSDPModule):  # the root is always sharded last (:func:`wrap`)
        return _fsdp_no_sync(engine)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
