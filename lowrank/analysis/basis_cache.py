"""W0's decompositions kept on disk by content (``lowrank analyze --cache DIR``), so that analyzing a second fine-tune
of the same base reads every left basis instead of decomposing W0 again.

An entry is ``DIR/<key>.safetensors`` holding the basis's float64 tensors (``S`` and ``U``, or ``V`` for a tall
W0, whose ``U = W0 V / S`` stays implicit), where ``key`` is the SHA-256 of W0's bytes as analyzed (compute dtype,
row-major), its shape and dtype, and the route (Gram or dense SVD). Entries are exact copies, so a report made
from the cache equals one made without it. Sizes: ``8 min(m, n) (min(m, n) + 1)`` bytes a module, 34 MB for a
2048-wide one, 134 MB for a 4096-wide one. Entries appear whole or not at all (:mod:`lowrank.outputs`); an
entry that cannot be read, or does not fit W0, is computed again and replaced.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from lowrank.errors import LowrankError
from lowrank.gram import LeftBasis
from lowrank.outputs import write_bytes_atomic

VERSION = "left-basis-1"  # changes when what an entry holds, or how it is computed, changes


def cached_basis(W0: torch.Tensor, folder: Path, route: str, compute: Callable[[], LeftBasis]) -> LeftBasis:
    """W0's left basis from ``folder`` when an entry for its content and ``route`` is there, else ``compute()``'s,
    then stored.

    Raises LowrankError when ``folder`` cannot be created or written."""
    path = folder / f"{_key(W0, route)}.safetensors"
    if path.is_file():
        basis = _read(path, W0)
        if basis is not None:
            return basis
    basis = compute()
    _write(path, basis)
    return basis


def _key(W0: torch.Tensor, route: str) -> str:
    digest = hashlib.sha256(f"{VERSION} {route} {tuple(W0.shape)} {W0.dtype}".encode())
    digest.update(memoryview(W0.detach().cpu().contiguous().view(torch.uint8).numpy()))
    return digest.hexdigest()


def _read(path: Path, W0: torch.Tensor) -> LeftBasis | None:
    """The stored basis, or None when the entry is damaged or does not fit W0's shape."""
    try:
        stored = load_file(path)
    except (OSError, SafetensorError):
        return None
    m, n = W0.shape
    p = min(m, n)
    S = stored.get("S")
    if S is None or tuple(S.shape) != (p,):
        return None
    S = S.to(W0.device)
    if m <= n and tuple(getattr(stored.get("U"), "shape", ())) == (m, p):
        return LeftBasis(S, U=stored["U"].to(W0.device))
    if m > n and tuple(getattr(stored.get("V"), "shape", ())) == (n, p):
        return LeftBasis(S, V=stored["V"].to(W0.device), M=W0)
    return None


def _write(path: Path, basis: LeftBasis) -> None:
    tensors = {"S": basis.S}
    tensors.update({"U": basis.U} if basis.U is not None else {"V": basis.V})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, save({name: t.detach().cpu().contiguous() for name, t in tensors.items()}))
    except OSError as error:
        raise LowrankError(f"--cache {path.parent}: cannot write the decomposition cache: "
                           f"{error.strerror or error}") from None
