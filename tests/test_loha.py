"""A LyCORIS LoHa file (real SD 1.5 key names and shapes, random weights) is detected by its own format and refused
by name, through the Python API and the command line alike."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lowrank.adapters import detect, loha
from lowrank.analysis.run import AnalyzeConfig, analyze
from lowrank.errors import LowrankError


def _loha_file(path):
    """Two modules as LyCORIS saves them at r=4: a linear one, and a 3x3 convolution with Tucker cores."""
    generator = torch.Generator().manual_seed(0)
    r, tensors = 4, {}
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    for w in ("w1", "w2"):
        tensors[f"{stem}.hada_{w}_a"] = torch.randn(320, r, generator=generator)
        tensors[f"{stem}.hada_{w}_b"] = torch.randn(r, 320, generator=generator)
    tensors[f"{stem}.alpha"] = torch.tensor(2.0)
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    for w, t in (("w1", "t1"), ("w2", "t2")):
        tensors[f"{conv}.hada_{t}"] = torch.randn(r, r, 3, 3, generator=generator)
        tensors[f"{conv}.hada_{w}_a"] = torch.randn(r, 320, generator=generator)
        tensors[f"{conv}.hada_{w}_b"] = torch.randn(r, 320, generator=generator)
    tensors[f"{conv}.alpha"] = torch.tensor(4.0)
    save_file(tensors, str(path))
    return path


def test_loha_is_detected_by_its_own_format_and_refused_by_name(tmp_path):
    path = _loha_file(tmp_path / "sd15_loha.safetensors")
    assert detect(path) is loha.LOHA
    with pytest.raises(LowrankError, match="sd15_loha.safetensors holds LoHa tensors .* a LyCORIS LoHa adapter: its "
                                           "update is a Hadamard product of two low-rank factors, not a low-rank"):
        analyze(AnalyzeConfig(str(path)))


def test_loha_gives_one_error_line_on_the_command_line(tmp_path, invoke):
    result = invoke("analyze", _loha_file(tmp_path / "sd15_loha.safetensors"), "--json", "-")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and "LyCORIS LoHa" in lines[0]
    assert result.stdout == ""
