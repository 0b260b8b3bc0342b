"""Image classification with fully connected networks: an MLP (an ``mlp:`` spec built from a seed, or a folder
saved by :func:`lowrank.mlp.save_mlp`, optionally with a LoRA adapter loaded on top) and an image dataset
(``lowrank.data.images``) as train/test :class:`ImageSet`, checked to fit each other.

Datasets without an official split are split with seed 0 whatever the training seed, so every run of a sweep
and every later measurement sees the same training and test images.
"""

from __future__ import annotations

from lowrank import adapters
from lowrank.data.batches import ImageSet
from lowrank.data.images import ImageDataset, load_image_dataset
from lowrank.errors import LowrankError
from lowrank.mlp import MLP, build_mlp, is_mlp_folder, is_mlp_spec, load_mlp


def is_image_model(name: str) -> bool:
    """True for an ``mlp:`` spec or a saved MLP folder (config.json with ``"model_type": "lowrank-mlp"``)."""
    return is_mlp_spec(name) or is_mlp_folder(name)


def load_network(name: str, seed: int) -> MLP:
    """``mlp:...`` -> a fresh network drawn from ``seed``; a saved MLP folder -> its weights (``seed`` unused)."""
    if is_mlp_spec(name):
        return build_mlp(name, seed)
    if not is_mlp_folder(name):
        raise LowrankError(f"{name} is neither an mlp: spec nor a folder with a lowrank-mlp config.json")
    return load_mlp(name)


def check_fits(network: MLP, model: str, dataset: ImageDataset, data: str) -> None:
    """The network must read one image (n0 = pixels per image) and have an output per class (nk >= classes)."""
    if network.sizes[0] != dataset.features:
        raise LowrankError(f"model {model} takes {network.sizes[0]} inputs but data {data} has "
                           f"{dataset.features} pixels per image")
    if network.sizes[-1] < dataset.num_classes:
        raise LowrankError(f"model {model} has {network.sizes[-1]} outputs but data {data} has "
                           f"{dataset.num_classes} classes")


def load_image_task(model: str, data: str, seed: int = 0,
                    adapter: str | None = None) -> tuple[MLP, ImageSet, ImageSet]:
    """``(network, train_set, test_set)`` for ``model`` (``mlp:`` spec or MLP folder) on image ``data``.

    Args:
        model: ``mlp:n0,...,nk`` (freshly initialized from ``seed``) or a folder written by a full fine-tune.
        data: ``digits``, ``mnist-5k``, ``fashion-mnist`` or a local .npz/.csv image file.
        seed: initializes an ``mlp:`` network; a saved folder ignores it.
        adapter: a peft adapter folder trained on this network, loaded on top (its LoRA layers injected).

    Raises:
        LowrankError: unknown model or data, a network that does not fit the data (naming both sizes), an
            adapter that does not fit the network.
    """
    network = load_network(model, seed)
    dataset = load_image_dataset(data)
    check_fits(network, model, dataset, data)
    if adapter is not None:
        adapters.load_adapter(network, adapter)
    return network, ImageSet(dataset.train_x, dataset.train_y), ImageSet(dataset.test_x, dataset.test_y)
