"""Property-based fuzzing of the readers of untrusted files: the safetensors header reader
(``lowrank.weights.open_checkpoint`` and the tensors it then reads, also as a kohya single-file adapter), the
``adapter_config.json`` parser (through ``lowrank.adapters.open_adapter``, which applies every field) and the sharded
index. Each reader gets at least 2,000 generated files: truncated, header lengths past the end or over the cap,
overlapping or outside offsets, dtype / shape / byte-count disagreements, duplicate keys, deeply nested JSON,
non-UTF-8 bytes. The only outcome allowed besides success is :class:`LowrankError` (one ``Error:`` line in the
CLI): any other exception fails the test, and so does an example over the deadline (a hang).

Memory: the files are at most a few kilobytes; the process's peak resident size may not grow by more than
:data:`RSS_GROWTH_LIMIT` over all examples, and ``test_hostile_headers_allocate_nothing_under_an_address_limit``
reads the worst headers in a child process whose address space is capped a little above what it already uses.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from lowrank.adapters import open_adapter
from lowrank.adapters.kohya import is_single_file_lora
from lowrank.weights import open_checkpoint
from lowrank.errors import LowrankError

EXAMPLES = int(os.environ.get("LOWRANK_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
RSS_GROWTH_LIMIT = 256 * 2**20  # bytes
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
NAMES = ["w", "a.weight", "a.bias", "m.lora_A.weight", "m.lora_B.weight", "base_model.model.q.lora_A.weight",
         "base_model.model.q.lora_B.weight", "lora_unet_x.lora_down.weight", "lora_unet_x.lora_up.weight",
         "lora_unet_x.alpha", "__metadata__", "é", ""]
BIG = [2**31, 2**32 + 1, 2**40, 2**53, 2**62, 2**63, 2**64 - 1]


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.fixture(scope="module")
def rss_budget():
    start = _peak_rss()
    yield
    assert _peak_rss() - start < RSS_GROWTH_LIMIT


def _json_value(rng: random.Random, depth: int = 0):
    """Any JSON value: null, booleans, huge and negative integers, NaN / infinities, odd text, lists, objects."""
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, 1, -1, 2, 7, 2**31, 2**63, -2**70, 2**70])
    if kind == 2:
        return rng.choice([0.5, -0.0, 1e308, -1e-308, float("nan"), float("inf"), float("-inf")])
    if kind in (3, 4):
        return "".join(rng.choice("aZ.(*[\\0é_ /") for _ in range(rng.randrange(6)))
    if kind in (5, 6):
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {_json_value(rng, 3) if rng.random() < 0.8 else "k": _json_value(rng, depth + 1)
            for _ in range(rng.randrange(3))}


def _dim(rng: random.Random) -> int:
    return rng.choice([rng.randrange(7), rng.choice(BIG), -rng.randrange(1, 4)])


def safetensors_blob(rng: random.Random) -> bytes:
    """A header of 0-4 tensors laid out consistently, then mutated: wrong dtypes, shapes, offsets (overlapping,
    outside), duplicate names, metadata, nesting, a wrong or huge header length, truncated or padded data."""
    entries, data_size = [], 0
    for _ in range(rng.randrange(5)):
        name = rng.choice(NAMES) if rng.random() < 0.8 else str(_json_value(rng, 3))
        dtype = rng.choice(list(DTYPES))
        shape = [rng.randrange(6) for _ in range(rng.randrange(4))]
        size = DTYPES[dtype] * math.prod(shape)
        offsets = [data_size, data_size + size]
        data_size += size
        kind = rng.choice(["none", "none", "dtype", "shape", "offsets", "value"])
        if kind == "dtype":
            dtype = rng.choice(["F8", "XX", "f32", 1, None])
        elif kind == "shape":
            shape = [_dim(rng) for _ in range(rng.randrange(5))]
        elif kind == "offsets":
            offsets = [rng.choice([rng.randrange(65), rng.choice(BIG)]) for _ in range(rng.randrange(4))]
        elif kind == "value":
            entries.append(f"{json.dumps(name)}: {json.dumps(_json_value(rng))}")
            continue
        entries.append(f"{json.dumps(name)}: " + json.dumps({"dtype": dtype, "shape": shape, "data_offsets": offsets}))
    if entries and rng.random() < 0.3:
        entries.append(rng.choice(entries))  # a duplicate name
    if rng.random() < 0.3:
        entries.append('"__metadata__": ' + json.dumps({"format": "pt", "n": _json_value(rng)}))
    header = ("{" + ", ".join(entries) + "}").encode()
    if rng.random() < 0.1:
        header = rng.choice([b"[" * 5000 + b"]" * 5000, b'{"\xff": 1}', header[:-1], b"", b"null"])
    length = rng.choice(["right"] * 4 + ["short", "long", "huge"])
    n = {"right": len(header), "short": max(0, len(header) - rng.randrange(1, 10)),
         "long": len(header) + rng.randrange(1, 100), "huge": rng.choice(BIG + [100_000_001])}[length]
    blob = struct.pack("<Q", min(n, 2**64 - 1)) + header + b"\x3f" * max(0, data_size + rng.randrange(-4, 5))
    return blob[: rng.randrange(len(blob) + 1)] if rng.random() < 0.15 else blob


seeds = st.integers(min_value=0, max_value=2**64 - 1)


@FUZZ
@given(seed=seeds)
def test_safetensors_header_reader(tmp_path, rss_budget, seed):
    blob = safetensors_blob(random.Random(seed))
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(blob)
    try:
        checkpoint = open_checkpoint(path)
        for module in checkpoint.modules():
            checkpoint.weight_shape(module)
        for key in checkpoint.tensors:
            try:
                assert checkpoint.tensor(key).numel() * 4 <= max(len(blob), 1) * 4
            except LowrankError:
                pass
    except LowrankError:
        pass
    if is_single_file_lora(path):
        try:
            adapter = open_adapter(path)
            for module in adapter.modules.values():
                adapter.factors(module)
        except LowrankError:
            pass


PLAUSIBLE = {
    "r": [2, 0, -1, 4, 2.5, "2", 2**70, None, float("inf"), float("nan")],
    "lora_alpha": [2, 0, -8, 16.0, "x", None, float("inf"), float("nan"), 1e308],
    "target_modules": [["q"], "q", ".*", "(", [], None, [1, 2], {"a": 1}, "re:(", ["q", "q"]],
    "rank_pattern": [{}, {"q": 2}, {"(": 2}, {"q": 0}, {"q": "x"}, [1], {"q": 2**70}, {"q": None}],
    "alpha_pattern": [{}, {"q": 4}, {"[": 4}, {"q": -1}, {"q": float("nan")}, "q"],
    "use_rslora": [True, False, "yes", None, 0],
    "lora_dropout": [0.0, 0.1, 1.5, -1, "x", None],
    "modules_to_save": [None, [], ["classifier"], "classifier", [None], 5],
    "peft_type": ["LORA", "ADALORA", "IA3", "lora", None, 3, ["LORA"]],
    "init_r": [2, 0, "x", None, -4],
    "init_lora_weights": [True, False, "pissa", "olora", "gaussian", "pissa_niter_4", "loftq", 7],
    "use_dora": [True, False, None],
    "use_bdlora": [None, {}, {"target_modules_bd_a": ["q"], "nblocks": 2}, {"nblocks": 0},
                   {"nblocks": "x"}, [1], {"target_modules_bd_b": "q", "nblocks": 3}],
    "enable_lora": [None, [True, False], False],
    "fan_in_fan_out": [True, False, None],
    "task_type": ["CAUSAL_LM", None, 1],
    "model_type": ["bert", None],
    "lora_bias": [True, False],
}


def adapter_config(rng: random.Random) -> bytes:
    """A config of plausible and hostile field values, or bytes that are not a JSON object at all."""
    mode = rng.randrange(20)
    if mode == 0:
        return rng.choice([b"[" * 100_000 + b"]" * 100_000, b'{"r": \xff}', b"", b"[]", b"null", b'{"r": 2',
                           b"\xef\xbb\xbf{}", ('{"a": ' * 5000 + "1" + "}" * 5000).encode()])
    if mode == 1:
        return rng.randbytes(rng.randrange(64))
    fields = {key: rng.choice(values) if rng.random() < 0.8 else _json_value(rng)
              for key, values in PLAUSIBLE.items() if rng.random() < 0.5}
    if rng.random() < 0.5:
        fields.setdefault("r", 2)
    return json.dumps(fields).encode()


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory):
    """A real two-module rank-2 peft adapter file; the config beside it is rewritten by each example."""
    folder = tmp_path_factory.mktemp("adapter")
    generator = torch.Generator().manual_seed(0)
    tensors = {f"base_model.model.layer.{name}.lora_{side}.weight": torch.randn(shape, generator=generator)
               for name in ("q", "v") for side, shape in (("A", (2, 6)), ("B", (4, 2)))}
    save_file(tensors, folder / "adapter_model.safetensors")
    return folder


@FUZZ
@given(seed=seeds)
def test_adapter_config_parsing(adapter_folder, rss_budget, seed):
    config = adapter_config(random.Random(seed))
    (adapter_folder / "adapter_config.json").write_bytes(config)
    try:
        adapter = open_adapter(adapter_folder)
        for module in adapter.modules.values():
            scale = adapter.scale(module)
            assert isinstance(scale, float) and scale == scale and abs(scale) != float("inf")
            adapter.factors(module)
        adapter.config.to_lora_config(list(adapter.modules))
    except LowrankError:
        pass


SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
SHARD_NAMES = list(SHARDS) + ["../outside.safetensors", "/etc/passwd", "", ".", "..", "sub/x.safetensors",
                              "missing.safetensors", "a\0b", "C:\\x.safetensors", "model.safetensors.index.json"]


def shard_index(rng: random.Random) -> bytes:
    """An index whose weight_map names real shards, missing ones, paths outside the folder, non-strings."""
    mode = rng.randrange(10)
    if mode == 0:
        return rng.choice([b'{"weight_map": ' * 3000 + b"{}" + b"}" * 3000, b"\xff\xfe", b"[]",
                           b'{"weight_map": [1]}', b'{"weight_map": null}', b"{}"])
    if mode == 1:
        return json.dumps(_json_value(rng)).encode()
    keys = ["a.weight", "b.weight", "c.weight", "nope.weight"]
    entries = [(rng.choice(keys) if rng.random() < 0.8 else str(_json_value(rng, 3)),
                rng.choice(SHARD_NAMES) if rng.random() < 0.7 else _json_value(rng))
               for _ in range(rng.randrange(6))]
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in entries)
    return ('{"metadata": {"total_size": 12}, "weight_map": {' + body + "}}").encode()


@pytest.fixture(scope="module")
def sharded_folder(tmp_path_factory):
    """Two real shards (a.weight in the first, b.weight and c.weight in the second) and a valid file outside the
    folder that a hostile index may try to name."""
    root = tmp_path_factory.mktemp("sharded")
    folder = root / "model"
    folder.mkdir()
    save_file({"a.weight": torch.ones(2, 3)}, folder / SHARDS[0])
    save_file({"b.weight": torch.ones(3, 3), "c.weight": torch.zeros(1, 3)}, folder / SHARDS[1])
    save_file({"secret.weight": torch.ones(1, 1)}, root / "outside.safetensors")
    (folder / "sub").mkdir()
    return folder


@FUZZ
@given(seed=seeds)
def test_sharded_index(sharded_folder, rss_budget, seed):
    index = shard_index(random.Random(seed))
    (sharded_folder / "model.safetensors.index.json").write_bytes(index)
    try:
        checkpoint = open_checkpoint(sharded_folder)
    except LowrankError:
        return
    for info in checkpoint.tensors.values():
        assert info.file.parent == sharded_folder and info.file.name in SHARDS
        checkpoint.tensor(info.key)


def test_fuzzers_find_nothing_escapes_with_known_hostile_files(tmp_path):
    """The named cases of the issue, each refused with a message that says what is wrong."""
    cases = {
        "past the end of the file": struct.pack("<Q", 2**40) + b"{}",
        "over the 100000000-byte cap": struct.pack("<Q", 100_000_001) + b"{}",  # made sparse-long below
        "shorter than the 8-byte header length": b"\x05\x00",
        "names 'a' twice": _file('{"a": %s, "a": %s}' % (_entry(0, 4), _entry(0, 4)), 4),
        "nested too deeply": struct.pack("<Q", 20_000) + b"[" * 10_000 + b"]" * 10_000,
        "dimension larger than the file": _file('{"a": {"dtype": "F32", "shape": [0, 4611686018427387904], '
                                                '"data_offsets": [0, 0]}}', 0),
        "overflow": _file('{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}', 4),
        "invalid offset for tensor `b`": _file('{"a": %s, "b": %s}' % (_entry(0, 8), _entry(4, 12)), 12),  # overlapping
        "file not fully covered": _file('{"a": %s}' % _entry(0, 4096), 4),  # pointing outside the data
    }
    for fragment, blob in cases.items():
        path = tmp_path / "hostile.safetensors"
        path.write_bytes(blob)
        if "cap" in fragment:
            os.truncate(path, 100_000_200)
        with pytest.raises(LowrankError, match=fragment.replace("(", r"\(")) as caught:
            open_checkpoint(path)
        assert str(path) in str(caught.value)


def _entry(start: int, end: int) -> str:
    return json.dumps({"dtype": "F32", "shape": [(end - start) // 4], "data_offsets": [start, end]})


def _file(header: str, data_bytes: int) -> bytes:
    return struct.pack("<Q", len(header)) + header.encode() + b"\0" * data_bytes


def test_hostile_headers_allocate_nothing_under_an_address_limit(tmp_path):
    """Headers that claim terabytes (length, shape, offsets) are read in a child process whose address space is
    capped 512 MiB above its size after imports: an allocation sized by the header would fail there."""
    blobs = [struct.pack("<Q", 2**40) + b"{}", struct.pack("<Q", 2**63) + b"{}" * 10,
             _file('{"a": {"dtype": "F64", "shape": [1099511627776], "data_offsets": [0, 8796093022208]}}', 8),
             _file('{"a": {"dtype": "F32", "shape": [0, 4611686018427387904], "data_offsets": [0, 0]}}', 0),
             _file('{"a": {"dtype": "U8", "shape": [4000000000], "data_offsets": [0, 4000000000]}}', 16)]
    for i, blob in enumerate(blobs):
        (tmp_path / f"{i}.safetensors").write_bytes(blob)
    script = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from lowrank.weights import open_checkpoint
        from lowrank.errors import LowrankError
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 512 * 2**20, resource.RLIM_INFINITY))
        refused = 0
        for path in sorted(Path({str(tmp_path)!r}).glob("*.safetensors")):
            try:
                open_checkpoint(path)
            except LowrankError:
                refused += 1
        print(refused)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == str(len(blobs)), result.stderr[-2000:]
