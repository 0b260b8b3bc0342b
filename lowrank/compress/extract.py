"""A full fine-tune as a peft adapter: ``dW = W1 - W0`` of each module, truncated by its exact SVD.

Per module, ``dW = U diag(S) Vh`` (dense, float32, exact) is cut to rank ``k`` (``--rank R``: ``min(R, m, n)``;
``--energy F``: the smallest ``k`` with ``sum(S[:k]^2) >= F sum(S^2)``) and written as ``B' = U_k sqrt(S_k)``,
``A' = sqrt(S_k) V_k^T`` with ``lora_alpha = r`` per module, so peft's scaling is 1 and ``B' A' = dW_k``.
Modules are read, factored and written one at a time (memory: one module's W0, W1 and SVD). Per-module ranks go
into rank_pattern / alpha_pattern keyed by the escaped full module name. Modules found only in the tuned model
(a new head) are carried in full as modules_to_save; ``bias="all"`` carries every bias as peft does.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lowrank import lora, spectra
from lowrank.adapters import PREFIX
from lowrank.adapters.config import lora_settings
from lowrank.cpu import release_freed_memory, single_thread
from lowrank.assets import resolve_model_path
from lowrank.weights import Checkpoint, find_name, match_modules, module_kind, open_checkpoint
from lowrank.compress import factors
from lowrank.compress.evaluate import EvalConfig, evaluate_model, load_data, metric_name
from lowrank.adapters.patterns import rank_alpha_fields
from lowrank.compress.records import CompressReport, Evaluation, ModuleRecord
from lowrank.compress.writer import AdapterWriter, check_new_folder
from lowrank.errors import LowrankError, check_regex
from lowrank.options import option
from lowrank.outputs import staged_dir, write_text_atomic
from lowrank.progress import ProgressCallback, report

REPORT_FILE = "compress_report.json"
TASK_HEADS = ("classifier", "score", "qa_outputs")
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
_TASKS = {"ForSequenceClassification": "SEQ_CLS", "ForCausalLM": "CAUSAL_LM", "ForTokenClassification": "TOKEN_CLS"}


@dataclass(frozen=True)
class ExtractConfig:
    """Args:
        tuned / base: model folders, safetensors files or registry keys (W1 and W0).
        out: the adapter folder to create (new or empty).
        target: the rank or energy to keep per module.
        embeddings: also extract embedding deltas (as lora_embedding_A/B).
        modules: a regex (``re.search``) restricting the modules extracted; None: every linear module.
        save_modules: modules carried in full (peft modules_to_save); None: task heads and modules found only in
            ``tuned``.
        bias: ``"none"`` or ``"all"`` (carry every bias of the tuned model, peft's bias="all").
    """

    tuned: str = option(argument=True, metavar="TUNED")
    base: str = option(help="The pre-trained model TUNED started from (folder, safetensors file or registry key): "
                       "dW = W1 - W0.", metavar="MODEL")
    out: Path
    target: factors.RankTarget
    embeddings: bool = option(False, "Also extract embedding deltas (lora_embedding_A/B).")
    modules: str | None = option(None, "Extract only modules whose name matches this regular expression.",
                                 metavar="REGEX")
    save_modules: tuple[str, ...] | None = None
    bias: str = option("none", "all: carry every bias of TUNED (peft bias='all').", choices=("none", "all"))
    allow_pickle: bool = option(False, "Read .bin/.pt checkpoints with torch.load(weights_only=True).")
    device: str = "cpu"
    evaluation: EvalConfig | None = None

    def __post_init__(self) -> None:
        if self.bias not in ("none", "all"):
            raise LowrankError(f"--bias must be 'none' or 'all', got {self.bias!r}")
        if self.modules is not None:
            check_regex("--modules", self.modules)


def extract(config: ExtractConfig, progress: ProgressCallback | None = None) -> CompressReport:
    """Write the adapter into ``config.out`` (whole or not at all) and return what was kept and lost."""
    check_new_folder(config.out)
    tuned = open_checkpoint(resolve_model_path(config.tuned), config.allow_pickle)
    base = open_checkpoint(resolve_model_path(config.base), config.allow_pickle)
    match = match_modules(tuned, base)  # shapes of every pair checked here, from the headers alone
    dataset = load_data(config.evaluation) if config.evaluation else None
    saved = config.save_modules if config.save_modules is not None else _trained_in_full(tuned, base)
    chosen = [(t, b) for t, b in match.pairs if _wanted(t, config, saved)]
    if not chosen:
        raise LowrankError(f"no module of {config.tuned} is left to extract (--modules {config.modules!r}, "
                           f"--embeddings {config.embeddings})")
    if {"conv1d", "linear"} <= {module_kind(t) for t, _ in chosen}:
        raise LowrankError("the chosen modules mix Conv1D and Linear layers, which one peft config cannot hold "
                           "(fan_in_fan_out is global); restrict them with --modules")
    with staged_dir(config.out) as folder:
        writer = AdapterWriter(folder)
        try:
            records, unchanged = _factorize(tuned, base, chosen, config, writer, progress)
            if not records:
                raise LowrankError(f"{config.tuned} does not differ from {config.base} in any chosen module")
            adapted = {r.name for r in records}
            carried, carried_count = _carry(tuned, base, saved, adapted, config.bias, writer)
            settings = _config_dict(records, saved, config)
            writer.close(settings)
        except BaseException:
            writer.abort()
            raise
        left = _not_carried(tuned, base, adapted, set(carried), saved)
        evaluation = None
        if dataset is not None:  # the tuned model as it is, then the base with the new adapter
            tuned_path, base_path = str(resolve_model_path(config.tuned)), str(resolve_model_path(config.base))
            evaluation = Evaluation(config.evaluation.data, metric_name(dataset, base_path),
                                    evaluate_model(tuned_path, None, dataset, config.evaluation),
                                    evaluate_model(base_path, folder, dataset, config.evaluation))
        result = CompressReport("extract", config.tuned, str(config.out), config.target.describe(), tuple(records),
                                tuple(carried), carried_count, left, tuple(unchanged), settings, evaluation)
        write_text_atomic(folder / REPORT_FILE, json.dumps(result.to_dict(), indent=1) + "\n")
    return result


def _trained_in_full(tuned: Checkpoint, base: Checkpoint) -> tuple[str, ...]:
    """Modules carried in full by default: task heads (``classifier``, ``score``, ``qa_outputs``: peft's task
    models put them in modules_to_save themselves) and modules with float tensors in ``tuned`` but none in
    ``base`` (a new head, typically)."""
    base_keys = set(base.tensors)
    names = []
    for key, info in tuned.tensors.items():
        module = key.rpartition(".")[0]
        new = find_name(key, base_keys) is None or module.split(".")[-1] in TASK_HEADS
        if info.dtype in _FLOAT_DTYPES and new and module and module not in names:
            names.append(module)
    return tuple(names)


def _wanted(name: str, config: ExtractConfig, saved: tuple[str, ...]) -> bool:
    if lora.is_under(name, saved):
        return False
    if module_kind(name) == "embedding" and not config.embeddings:
        return False
    return config.modules is None or re.search(config.modules, name) is not None


def _factorize(tuned: Checkpoint, base: Checkpoint, chosen: list[tuple[str, str]], config: ExtractConfig,
               writer: AdapterWriter, progress: ProgressCallback | None) -> tuple[list[ModuleRecord], list[str]]:
    """SVD and truncate each chosen module's delta, one at a time; zero deltas are listed, not adapted.

    CPU SVDs run on one thread (:func:`lowrank.cpu.single_thread`: two threads were many times slower on a shared
    2-core machine)."""
    device = torch.device(config.device)
    records, unchanged = [], []
    for i, (name, base_name) in enumerate(chosen):
        delta = tuned.weight(name).to(device)
        delta.sub_(base.weight(base_name).to(device))
        if not bool(delta.any()):
            unchanged.append(name)
        else:
            with single_thread() if device.type == "cpu" else contextlib.nullcontext():
                svd = spectra.dense_svd(delta, dtype=torch.float32)
            del delta
            shape = svd.shape
            k = factors.choose_rank(svd.S, config.target, min(shape))
            B, A = factors.split_factors(svd, k, 1.0)
            writer.add_lora(name, B, A, module_kind(name))
            s = svd.S.cpu()
            records.append(ModuleRecord(name, shape, module_kind(name), min(shape), k, factors.kept_energy(s, k),
                                        factors.relative_error(s, k), factors.lora_parameters(k, shape),
                                        shape[0] * shape[1], None, float(torch.linalg.vector_norm(s))))
            del svd, B, A
        release_freed_memory()
        report(progress, "extract", i + 1, len(chosen), name)
    return records, unchanged


def _carry(tuned: Checkpoint, base: Checkpoint, saved: tuple[str, ...], adapted: set[str], bias: str,
           writer: AdapterWriter) -> tuple[list[str], int]:
    """Copy the saved modules' tensors (and, with bias="all", every bias) from ``tuned`` into the adapter."""
    base_keys = set(base.tensors)
    carried, count = [], 0
    for key, info in tuned.tensors.items():
        if info.dtype not in _FLOAT_DTYPES:
            continue
        module = key.rpartition(".")[0]
        if lora.is_under(module, saved):
            out_key = PREFIX + key
        elif bias == "all" and key.endswith(".bias") and find_name(key, base_keys) is not None:
            out_key = f"{PREFIX}{module}.base_layer.bias" if module in adapted else PREFIX + key
        else:
            continue
        tensor = tuned.tensor(key)
        writer.add_tensor(out_key, tensor)
        carried.append(key)
        count += tensor.numel()
    return carried, count


def _not_carried(tuned: Checkpoint, base: Checkpoint, adapted: set[str], carried: set[str],
                 saved: tuple[str, ...]) -> dict[str, float]:
    """Changed tensors the adapter leaves out -> ``||W1 - W0||_F / ||W0||_F`` (``/ ||W1||_F`` where ``W0 = 0``),
    one tensor in memory at a time."""
    base_keys = set(base.tensors)
    left = {}
    for key, info in tuned.tensors.items():
        module = key.rpartition(".")[0]
        if (info.dtype not in _FLOAT_DTYPES or key in carried or lora.is_under(module, saved)
                or (module in adapted and key.endswith(".weight"))):
            continue
        other = find_name(key, base_keys)
        if other is None or base.tensors[other].shape != info.shape:
            continue
        w1, w0 = tuned.tensor(key), base.tensor(other)
        change = float(torch.linalg.vector_norm(w1 - w0))
        if change > 0:  # relative to ||W0||, or to ||W1|| where W0 was zero (then 1.0)
            left[key] = change / (float(torch.linalg.vector_norm(w0)) or float(torch.linalg.vector_norm(w1)))
    return left


def _config_dict(records: list[ModuleRecord], saved: tuple[str, ...], config: ExtractConfig) -> dict:
    """peft's adapter_config.json: r = the most common rank, lora_alpha = r (scaling 1), patterns for the rest."""
    ranks = {r.name: r.rank for r in records}
    return lora_settings(task_type=_task_type(config.tuned), base_model_name_or_path=config.base,
                         **rank_alpha_fields(ranks, {n: k for n, k in ranks.items()}), target_modules=list(ranks),
                         use_rslora=False, lora_dropout=0.0, fan_in_fan_out=any(r.kind == "conv1d" for r in records),
                         init_lora_weights=True, bias=config.bias, modules_to_save=list(saved) or None)


def _task_type(tuned: str) -> str | None:
    """peft's task_type from the tuned model's ``config.json`` architectures, when there is one."""
    path = resolve_model_path(tuned)
    config = path / "config.json" if path.is_dir() else path.parent / "config.json"
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    for suffix, task in _TASKS.items():
        if any(str(a).endswith(suffix) for a in architectures):
            return task
    return None
