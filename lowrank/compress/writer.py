"""Write a peft adapter one module at a time, so memory stays bounded by one module's factors.

A safetensors file is ``u64 little-endian header length`` + JSON header ``{key: {dtype, shape, data_offsets}}``
+ the tensors' bytes back to back. Offsets are known only once every tensor is, so the bytes go to a temporary
body file as modules arrive, and :meth:`AdapterWriter.close` writes the header and copies the body after it.
Key layout and config fields are those of :mod:`lowrank.adapters` (:mod:`lowrank.adapters.keys`; fully carried
modules under their own parameter names).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import torch

from lowrank.adapters import WEIGHTS_FILE
from lowrank.adapters.config import write_adapter_config
from lowrank.adapters.keys import factor_keys
from lowrank.errors import LowrankError

_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
           torch.int64: "I64"}
BODY_FILE = ".adapter_body.tmp"


def check_new_folder(path: Path) -> Path:
    """``path`` if it does not exist or is an empty folder; LowrankError otherwise (nothing is replaced)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        kind = "is a file" if not path.is_dir() else "is not empty"
        raise LowrankError(f"--out {path} {kind}; give a new or empty folder")
    return path


class AdapterWriter:
    """Collects tensors into ``folder/adapter_model.safetensors`` without holding them in memory.

    Use :meth:`add_lora` per module and :meth:`add_tensor` for carried parameters, then :meth:`close` with the
    adapter config. ``folder`` should be a staging folder (``lowrank.outputs.staged_dir``), so that an error leaves
    nothing behind.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.header: dict[str, dict] = {}
        self.offset = 0
        self.body = (self.folder / BODY_FILE).open("wb")

    def add_tensor(self, key: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` (CPU copy, contiguous) under ``key``."""
        if key in self.header:
            raise LowrankError(f"adapter tensor {key!r} written twice")
        tensor = tensor.detach().to("cpu")
        if tensor.dtype not in _DTYPES:
            raise LowrankError(f"cannot write tensor {key!r} of dtype {tensor.dtype}")
        # reshape(-1), not contiguous(): a (m, 1) column of a column-major U counts as contiguous with stride m
        flat = tensor.contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        self.body.write(data)
        self.header[key] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                            "data_offsets": [self.offset, self.offset + len(data)]}
        self.offset += len(data)

    def add_lora(self, module: str, B: torch.Tensor, A: torch.Tensor, kind: str) -> None:
        """Factors of ``dW = s B A`` (``dW`` shaped like the module's ``(out, in)``; for an embedding
        ``(num_embeddings, dim)``) under peft's key names."""
        key_a, key_b = factor_keys(module, kind)
        if kind == "embedding":  # peft: dW = s (B_e A_e)^T with A_e (r, vocab), B_e (dim, r)
            self.add_tensor(key_a, B.T.contiguous())
            self.add_tensor(key_b, A.T.contiguous())
        else:  # linear and GPT-2 Conv1D alike: lora_A (r, in), lora_B (out, r)
            self.add_tensor(key_a, A)
            self.add_tensor(key_b, B)

    def close(self, config: dict) -> None:
        """Write the safetensors file (header, then the body) and ``adapter_config.json``."""
        self.body.close()
        header = dict(self.header)
        header["__metadata__"] = {"format": "pt"}
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)  # the body starts 8-byte aligned
        body_path = self.folder / BODY_FILE
        with (self.folder / WEIGHTS_FILE).open("wb") as out, body_path.open("rb") as body:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            shutil.copyfileobj(body, out, length=16 << 20)
        body_path.unlink()
        write_adapter_config(self.folder, config)

    def abort(self) -> None:
        self.body.close()
