"""Cheap checks of untrusted file headers, done before a parser trusts them.

A safetensors file is ``n`` (8 bytes, little-endian u64), a JSON header of ``n`` bytes, then the tensor data.
safetensors' own Rust reader validates dtypes, shapes, byte counts and that the data offsets tile the data area
exactly. What it accepts and lowrank must not:

- a header length past the end of the file or over :data:`MAX_HEADER_BYTES` is refused here first, from the
  first 8 bytes and the file size alone, so nothing is read or allocated for it (``n <= size - 8 <= cap``);
- duplicate tensor names (JSON allows them; the Rust parser keeps the last one silently);
- dimensions larger than the file: ``prod(shape) * itemsize`` must equal the byte count, so a dimension can only
  exceed the file's size when another dimension is 0; such a shape, ``[0, 2**62]``, would reach code that sizes
  buffers from shapes.

A sharded model's ``*.safetensors.index.json`` maps tensor names to shard files; its shard names must be plain
file names inside the index's folder (no absolute paths, no ``..``), so an index cannot make lowrank read files
elsewhere.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path, PurePosixPath, PureWindowsPath

from lowrank.errors import LowrankError
from lowrank.jsonfile import read_json_object

MAX_HEADER_BYTES = 100_000_000  # the cap safetensors itself applies (safetensors::tensor::MAX_HEADER_SIZE)
LENGTH_BYTES = 8


def check_safetensors_header(file: Path) -> None:
    """Refuse a safetensors file whose header length or JSON cannot be right, before safetensors maps it.

    Raises:
        LowrankError: unreadable file, shorter than 8 bytes, header length ``n`` over ``size - 8`` or the cap,
            a header that is not one JSON object, or a tensor name given twice (each message names ``file``).
    """
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            head = handle.read(LENGTH_BYTES)
            if len(head) < LENGTH_BYTES:
                raise LowrankError(f"{file} is not a valid safetensors file: {size} bytes, shorter than the "
                                   "8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > min(size - LENGTH_BYTES, MAX_HEADER_BYTES):
                raise LowrankError(f"{file} is not a valid safetensors file: its header length {length} is past "
                                   f"the end of the file ({size} bytes)" if length > size - LENGTH_BYTES else
                                   f"{file} is not a valid safetensors file: header length {length} is over the "
                                   f"{MAX_HEADER_BYTES}-byte cap")
            header = handle.read(length)
    except OSError as error:
        raise LowrankError(f"cannot read {file}: {error.strerror or error}") from None
    try:
        json.loads(header.decode("utf-8"), object_pairs_hook=lambda pairs: _unique(pairs, file))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise LowrankError(f"{file} is not a valid safetensors file: its header is not valid JSON "
                           f"({reason})") from None


def _unique(pairs: list[tuple[str, object]], file: Path) -> dict:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise LowrankError(f"{file} is not a valid safetensors file: its header names {key!r} twice")
        seen.add(key)
    return dict(pairs)


def check_shapes(file: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a dimension larger than ``file``'s size in bytes (only possible beside a zero dimension)."""
    size = file.stat().st_size
    for key, shape in shapes.items():
        if any(dim > max(size, 1) for dim in shape):
            raise LowrankError(f"{file}: tensor {key!r} has shape {list(shape)}, with a dimension larger than the "
                               f"file ({size} bytes); the header is corrupt")


def read_weight_map(index_path: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded safetensors index: tensor name -> shard file name in the same folder.

    Raises:
        LowrankError: unreadable or invalid JSON, no ``weight_map`` object, a name or shard that is not a string,
            or a shard name that is not a plain file name (absolute, ``..``, a folder part).
    """
    try:
        raw = read_json_object(index_path)
    except LowrankError as error:
        raise LowrankError(f"{index_path} is not a valid safetensors index: {error}") from None
    weight_map = raw.get("weight_map")
    if not isinstance(weight_map, dict):
        raise LowrankError(f"{index_path} is not a valid safetensors index (needs a 'weight_map' object)")
    for key, shard in weight_map.items():
        if not isinstance(shard, str):
            raise LowrankError(f"{index_path}: weight_map gives {key!r} the shard {shard!r}, expected a file name")
        if not _plain_name(shard):
            raise LowrankError(f"{index_path}: shard {shard!r} is not a plain file name in the index's folder; "
                               "an index may only name files beside it")
    return weight_map


def _plain_name(name: str) -> bool:
    """True for a single file-name component: not empty, not '.'/'..', no separator, no NUL, no drive."""
    return (bool(name) and "\0" not in name and name not in (".", "..")
            and PurePosixPath(name).name == name and PureWindowsPath(name).name == name)
