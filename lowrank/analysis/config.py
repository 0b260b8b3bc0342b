"""What ``lowrank analyze`` is asked to do: :class:`AnalyzeConfig`, one field per option, validated on construction."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from lowrank import devices
from lowrank.data.instructions import DATA_FILES, LOSS_ON, LOSS_ON_HELP
from lowrank.errors import LowrankError, check_regex
from lowrank.options import option

DTYPES = {"float32": torch.float32, "float64": torch.float64}
ENERGY_LEVELS = ("0.5", "0.9", "0.99")
MIN_KEPT = 64


@dataclass(frozen=True)
class AnalyzeConfig:
    """What to analyze and how; each field is one ``lowrank analyze`` option.

    Args:
        checkpoint: a peft adapter folder, or a full model folder / safetensors file (then ``base`` is needed).
        base: the pre-trained model (folder, file or registry key) giving ``W0``; enables amplification and
            intruder dimensions (``base_metrics``).
        against: a second update (adapter or full model against the same ``base``) compared module by module.
        dtype: ``"float32"`` (default): weights read in float32; a full delta's spectrum from the eigenvalues of
            its float64 Gram matrix (every value within ``sqrt(p u64) s_1``, about ``1e-7 s_1``; :mod:`lowrank.gram`),
            W0's and W1's singular vectors (intruders, amplification) from float64 Gram matrices too.
            ``"float64"``: dense float64 SVDs throughout (the slow reference, exact to ``u64 s_1``). Factored LoRA
            SVDs always run in float64.
        k: subspace dimension for phi and principal angles; None means the smaller LoRA rank of the two updates
            (``reference_rank`` when both are full deltas).
        reference_rank: the rank a full delta is judged at when no LoRA partner gives one. Default 16.
        grid_max: the phi(i, j) grid covers ``i, j <= min(grid_max, rank)``. Default 64.
        base_metrics: compute amplification and intruder dimensions when a base is given. Default True.
        intruder_k, intruder_epsilon: Shuttleworth et al.'s k (10) and epsilon (0.5).
        allow_pickle: read ``.bin``/``.pt`` checkpoints with ``torch.load(weights_only=True)``. Default False.
        modules: a regular expression; only module names where it matches (``re.search``) are analyzed.
        seed: seeds the random baselines of the amplification factor.
        device: where SVDs run, ``"cpu"`` (default) or ``"cuda"``; tensors are read on the CPU and moved there
            one module at a time.
        data: the dataset the adapter was trained on; with ``base`` (needed, checked when the analysis starts:
            :mod:`lowrank.api` first fills it in from the adapter's ``base_model_name_or_path``), the model's data
            verdict (:mod:`lowrank.analysis.data_verdict`).
        max_length: tokens per example in the gradient sample (as in training; default 128).
        loss_on: instruction data's loss, on the ``"completion"`` or on ``"all"`` tokens; None (default): the
            run's choice from the adapter folder's metrics.json, else "completion".
        fast: sketch full deltas instead of decomposing them exactly (:mod:`lowrank.sketch`): energy ranks become
            intervals certain to hold the exact ones, singular values the sketch's top ``l`` (lower bounds), W0's top
            values sketched for amplification, intruders not computed. LoRA updates stay exact. Default False.
        cache: a folder where W0's decompositions are kept by content (:mod:`lowrank.analysis.basis_cache`); a
            later analysis against the same base reads them. Default None (nothing kept).
    """

    checkpoint: str = option(metavar="CHECKPOINT", argument=True)
    base: str | None = option(None, "Pre-trained model (folder, safetensors file or registry key) giving W0. Needed "
                              "for a full CHECKPOINT; for an adapter it adds amplification and intruder dimensions "
                              "[default for an adapter: its base_model_name_or_path when that is a local folder].",
                              metavar="MODEL")
    against: str | None = option(None, "A second update (adapter, or full model against --base) to compare module by "
                                 "module: phi(i, j), principal angles, random baselines.", metavar="CHECKPOINT2")
    dtype: str = option("float32", "float32: full-delta spectra from float64 Gram eigenvalues (within 1e-7 of s_1), "
                        "base vectors from float64 Gram eigenvectors; float64: dense float64 SVDs throughout (slow "
                        "reference). LoRA: always float64.", choices=tuple(DTYPES))
    k: int | None = option(None, "Subspace dimension for phi and angles [default: the smaller LoRA rank of the two "
                           "updates, else --reference-rank].", minimum=1)
    reference_rank: int = option(16, "Rank a full delta is judged at when no LoRA partner gives one.", minimum=1)
    grid_max: int = option(64, "Largest i, j of the phi(i, j) grid.", minimum=1)
    base_metrics: bool = option(True, "Skip amplification and intruder dimensions (dense SVDs of W0 and W1 per "
                                "module, the slow part with a large base).", flag="--no-base-metrics")
    intruder_k: int = option(10, "Top singular vectors of W1 checked for intruder dimensions.", minimum=1)
    intruder_epsilon: float = option(0.5, "Cosine below which a singular vector is an intruder.")
    modules: str | None = option(None, "Analyze only modules whose name matches this regular expression.",
                                 metavar="REGEX")
    allow_pickle: bool = option(False, "Read .bin/.pt checkpoints with torch.load(weights_only=True). Pickle files "
                                "can run code; they are refused without this flag.")
    data: str | None = option(None, f"The data the adapter was trained on (registry key, or {DATA_FILES}, as it is "
                              "on disk; .json: an array of rows): judge whether r was enough, one verdict for the "
                              "model. First the adapter must be at a trained point (not collapsed on held-out data, "
                              "training loss no longer falling per metrics.json); then the probe continues it at r, "
                              "2r and r/2 for a share of its run's steps at a fraction of its learning rates (run "
                              "settings from metrics.json), scores each on held-out examples and compares the "
                              "losses: raise r, adequate or lower r (the values are in the report's 'How verdicts "
                              "are decided'). Each module's gradient signal-to-noise is shown as evidence. Loads the "
                              "base model (needs --base) and trains: minutes on a CPU. Without --data LoRA ranks are "
                              "not judged.", metavar="DATA")
    max_length: int = option(128, "Tokens per example with --data (LM of plain text: per block), as in training.",
                             minimum=8)
    loss_on: str | None = option(None, LOSS_ON_HELP + " [default: the run's, from the adapter folder's metrics.json; "
                                 "else completion]", choices=LOSS_ON)
    seed: int = option(0, "Seed of the random baselines and the sample.")
    fast: bool = option(False, "Sketch full deltas (randomized range finding, seeded by --seed) instead of "
                        "decomposing them exactly: k90/k99 become intervals certain to hold the exact ranks (shown "
                        "lo-hi), singular values the sketch's top l (lower bounds); W0's top values sketched for "
                        "amplification; intruders not computed. LoRA updates stay exact. Exact is the default.")
    cache: str | None = option(None, "Keep W0's decompositions (intruders' left bases) in DIR by content, and read "
                               "them from there: a second analysis against the same base skips W0's "
                               "eigendecompositions. About 8 p^2 bytes a module (p = min(out, in)).", metavar="DIR")
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise LowrankError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("reference_rank", "grid_max", "intruder_k"):
            if getattr(self, name) < 1:
                raise LowrankError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.loss_on is not None and self.loss_on not in LOSS_ON:
            raise LowrankError(f"loss-on must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}")
        if self.loss_on is not None and self.data is None:
            raise LowrankError("--loss-on says what --data's instruction examples learn; give --data too")
        if self.k is not None and self.k < 1:
            raise LowrankError(f"k must be >= 1, got {self.k}")
        if not 0.0 < self.intruder_epsilon <= 1.0:
            raise LowrankError(f"intruder_epsilon must be in (0, 1], got {self.intruder_epsilon}")
        devices.checked(self.device)
        if self.cache is not None and os.path.exists(self.cache) and not os.path.isdir(self.cache):
            raise LowrankError(f"--cache {self.cache}: exists and is not a folder")
        if self.modules is not None:
            check_regex("--modules", self.modules)
