"""``lowrank analyze --cache DIR``: W0's left bases kept by content and read back by a later analysis."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_analysis import planted_pair

from lowrank.analysis.config import AnalyzeConfig
from lowrank.analysis.run import analyze
from lowrank.errors import LowrankError

MODULES = {"layers.0.q": 3, "layers.1.v": 5}


def _report(folder: Path, cache: Path | None) -> dict:
    config = AnalyzeConfig(str(folder / "tuned.safetensors"), base=str(folder / "base.safetensors"),
                           reference_rank=4, cache=str(cache) if cache else None)
    return analyze(config).to_dict()


@pytest.mark.parametrize("shape", [(100, 80), (80, 100)])  # tall (implicit U = W0 V / S) and wide (explicit U)
def test_a_second_analysis_reads_the_cache_and_reports_the_same(tmp_path, shape):
    planted_pair(tmp_path, MODULES, shape=shape)
    cache = tmp_path / "cache"
    uncached = _report(tmp_path, None)
    assert _report(tmp_path, cache) == uncached
    entries = sorted(cache.glob("*.safetensors"))
    assert len(entries) == len(MODULES) and not list(cache.glob(".*"))  # one per W0, no leftovers
    stamps = [entry.stat().st_mtime_ns for entry in entries]
    assert _report(tmp_path, cache) == uncached  # read, not recomputed: the entries are untouched
    assert [entry.stat().st_mtime_ns for entry in entries] == stamps

    # What the cache holds is what the report uses: halve the stored values and amplification's W0 baseline halves.
    for entry in entries:
        stored = load_file(entry)
        save_file({**stored, "S": stored["S"] / 2}, entry)
    halved = _report(tmp_path, cache)
    for before, after in zip(uncached["modules"], halved["modules"]):
        assert after["amplification"]["w_top_projected_norm"] == pytest.approx(
            before["amplification"]["w_top_projected_norm"] / 2, rel=1e-12)

    # A damaged entry and a missing one are computed again: the report is the uncached one, the entries whole.
    entries[0].write_bytes(b"not a safetensors file")
    entries[1].unlink()
    assert _report(tmp_path, cache) == uncached
    assert all(set(load_file(entry)) in ({"S", "U"}, {"S", "V"}) for entry in entries)


def test_a_changed_base_gets_its_own_entries(tmp_path):
    planted_pair(tmp_path, MODULES)
    cache = tmp_path / "cache"
    _report(tmp_path, cache)
    planted_pair(tmp_path, MODULES, seed=1)  # other weights, same names and shapes
    fresh = _report(tmp_path, None)
    assert _report(tmp_path, cache) == fresh
    assert len(list(cache.glob("*.safetensors"))) == 2 * len(MODULES)


def test_a_cache_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LowrankError, match="is not a folder"):
        AnalyzeConfig("tuned", base="base", cache=str(tmp_path / "file"))


def test_keys_depend_on_content_only():
    from lowrank.analysis.basis_cache import _key

    W = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    assert _key(W, "gram64") == _key(W.clone(), "gram64")
    assert _key(W, "gram64") != _key(W, "svd64")
    changed = W.clone()
    changed[5, 3] += 1e-6
    assert _key(W, "gram64") != _key(changed, "gram64")
