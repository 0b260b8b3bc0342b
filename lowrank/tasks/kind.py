"""Which task a Hugging Face model learns on text data: language modelling ("lm") or sequence classification.

The rule, the one place it is decided: causal ("lm") when the adapter's ``task_type`` is ``CAUSAL_LM``, or it has
none (no adapter, or an adapter that does not say) and the base is a causal language model
(:func:`lowrank.assets.is_causal_lm`); else "classification", which needs labelled data. An MLP on image data is
the third kind of task (lowrank.tasks.images: :func:`~lowrank.tasks.images.is_image_model`), always classification.
A text task's model is its base loaded for it (:func:`load_text_model`).
"""

from __future__ import annotations

from lowrank import adapters, assets
from lowrank.data.text import TextDataset
from lowrank.errors import LowrankError


def is_causal(base: str, task_type: str | None = None) -> bool:
    """Whether ``base`` (with an adapter of ``task_type``, if any) is a causal LM's task rather than a classifier's."""
    return task_type == "CAUSAL_LM" or (task_type is None and assets.is_causal_lm(base))


def text_task(base: str, task_type: str | None = None) -> str:
    """"lm" or "classification", by :func:`is_causal`."""
    return "lm" if is_causal(base, task_type) else "classification"


def require_labels(task: str, dataset: TextDataset, message: str) -> None:
    """Raise LowrankError(``message``) when ``task`` is classification and ``dataset`` has no labels."""
    if task == "classification" and not dataset.has_labels:
        raise LowrankError(message)


def adapter_is_causal(config: adapters.AdapterConfig, base: str, dataset: TextDataset, where: str) -> bool:
    """Whether the adapter ``config`` (of ``where``) on ``base`` is a causal LM's rather than a classifier's.
    Raises LowrankError when ``dataset`` cannot serve that task: a classifier needs labels."""
    task = text_task(base, config.task_type)
    require_labels(task, dataset, f"data {dataset.name} has no labels, but the adapter in {where} is a classifier")
    return task == "lm"


def load_text_model(base: str, task: str, dataset: TextDataset) -> tuple:
    """``(model, tokenizer)`` of ``base`` for ``task``: the causal LM for "lm", else a classifier with a new head of
    ``dataset.num_labels`` outputs."""
    return assets.load_causal_lm(base) if task == "lm" else assets.load_classifier(base, dataset.num_labels)
