"""A peft LoRA adapter at a new rank, through the factored SVD of ``dW = s B A`` (``dW`` is never formed).

Per module, :func:`lowrank.spectra.lora_svd` gives ``dW = U diag(S) Vh`` exactly in ``O((m + n) r^2)``; the kept
rank is ``k = min(R, r)`` (``--rank R``) or the energy rank ``k_F`` (``--energy F``). Each module keeps its scaling
``s`` (``alpha' = s k``, or ``s sqrt(k)`` with rsLoRA, so further training sees the same step sizes), and the factors
are ``B' = U_k sqrt(S_k / s)``, ``A' = sqrt(S_k / s) V_k^T``, so ``s B' A'`` is the best rank-``k`` approximation of
``dW``. r / lora_alpha / rank_pattern / alpha_pattern are rewritten (:mod:`lowrank.adapters.patterns`); every other
config field and every fully trained tensor (modules_to_save, biases) is copied unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from lowrank import adapters, spectra
from lowrank.adapters.keys import EMBEDDING_A, LORA_A, WRITTEN
from lowrank.cpu import single_thread
from lowrank.assets import resolve_model_path
from lowrank.compress import factors
from lowrank.compress.evaluate import EvalConfig, evaluate_model, load_data, metric_name
from lowrank.compress.extract import REPORT_FILE
from lowrank.adapters.patterns import rank_alpha_fields
from lowrank.compress.records import CompressReport, Evaluation, ModuleRecord
from lowrank.compress.writer import AdapterWriter, check_new_folder
from lowrank.errors import LowrankError
from lowrank.options import option
from lowrank.outputs import staged_dir, write_text_atomic
from lowrank.progress import ProgressCallback, report

@dataclass(frozen=True)
class ResizeConfig:
    """Args:
        adapter: a peft LoRA adapter folder. out: the new adapter folder (new or empty).
        target: the rank or energy to keep per module.
        base: the base model, needed only to evaluate (default: the config's base_model_name_or_path).
    """

    adapter: str = option(argument=True, metavar="ADAPTER")
    out: Path
    target: factors.RankTarget
    base: str | None = option(None, "Base model for --data [default: the adapter's base_model_name_or_path].",
                              metavar="MODEL")
    evaluation: EvalConfig | None = None


def resize(config: ResizeConfig, progress: ProgressCallback | None = None) -> CompressReport:
    """Write the resized adapter into ``config.out`` (whole or not at all) and return what was kept and lost."""
    check_new_folder(config.out)
    folder_in = Path(config.adapter).expanduser()
    if not folder_in.is_dir():
        raise LowrankError(f"{folder_in} is not a folder (expected a peft adapter folder)")
    adapter_config = adapters.read_adapter_config(folder_in)
    if adapter_config.variant != "lora" or adapter_config.block_diagonal is not None:
        raise LowrankError(f"{folder_in}: resize writes plain LoRA; a {adapter_config.variant} adapter"
                           f"{' (block-diagonal)' * bool(adapter_config.block_diagonal)} is not s*B@A alone")
    raw = adapters.raw_adapter_config(folder_in)
    dataset, base = None, None
    if config.evaluation is not None:
        base = config.base or adapter_config.base_model_name_or_path
        if not base:
            raise LowrankError("--data needs the base model: pass --base (the adapter config names none)")
        base = str(resolve_model_path(base))
        dataset = load_data(config.evaluation)
    with staged_dir(config.out) as folder:
        writer = AdapterWriter(folder)
        try:
            records, alphas = _factorize(folder_in, config.target, bool(adapter_config.use_rslora), writer, progress)
            carried, count = _carry(folder_in, writer)
            settings = {**raw, **rank_alpha_fields({r.name: r.rank for r in records}, alphas)}
            writer.close(settings)
        except BaseException:
            writer.abort()
            raise
        evaluation = None
        if dataset is not None:
            evaluation = Evaluation(config.evaluation.data, metric_name(dataset, base),
                                    evaluate_model(base, folder_in, dataset, config.evaluation),
                                    evaluate_model(base, folder, dataset, config.evaluation))
        result = CompressReport("resize", config.adapter, str(config.out), config.target.describe(),
                                tuple(records), tuple(carried), count, {}, (), settings, evaluation)
        write_text_atomic(folder / REPORT_FILE, json.dumps(result.to_dict(), indent=1) + "\n")
    return result


def _factorize(folder: Path, target: factors.RankTarget, rslora: bool, writer: AdapterWriter,
               progress: ProgressCallback | None) -> tuple[list[ModuleRecord], dict[str, float]]:
    """New factors per module, keeping its scaling; returns the records and each module's new alpha."""
    updates = list(_module_names(folder))
    records, alphas = [], {}
    for i, update in enumerate(adapters.iter_lora_updates(folder, dtype=torch.float32)):
        with single_thread():
            svd = spectra.lora_svd(update.B, update.A, update.scale)  # float64, k = min(m, n, r) values
        shape = svd.shape
        cap = svd.S.numel()
        k = max(factors.choose_rank(svd.S, target, cap), 1)  # a zero update keeps one (zero) direction
        B, A = factors.split_factors(svd, k, update.scale)
        writer.add_lora(update.name, B, A, update.kind)
        alphas[update.name] = update.scale * (math.sqrt(k) if rslora else k)
        records.append(ModuleRecord(update.name, shape, update.kind, cap, k, factors.kept_energy(svd.S, k),
                                    factors.relative_error(svd.S, k), factors.lora_parameters(k, shape),
                                    shape[0] * shape[1], update.rank, float(torch.linalg.vector_norm(svd.S))))
        report(progress, "resize", i + 1, len(updates), update.name)
    return records, alphas


def _module_names(folder: Path) -> list[str]:
    with safe_open(str(folder / adapters.WEIGHTS_FILE), framework="pt") as handle:
        return [k for k in handle.keys() if k.endswith((LORA_A, EMBEDDING_A))]


def _carry(folder: Path, writer: AdapterWriter) -> tuple[list[str], int]:
    """Copy every tensor that is not a LoRA factor (modules_to_save, biases) unchanged, one at a time."""
    carried, count = [], 0
    with safe_open(str(folder / adapters.WEIGHTS_FILE), framework="pt") as handle:
        for key in handle.keys():
            if not key.endswith(WRITTEN):
                tensor = handle.get_tensor(key)
                writer.add_tensor(key, tensor)
                carried.append(key.removeprefix(adapters.PREFIX))
                count += tensor.numel()
    return carried, count
