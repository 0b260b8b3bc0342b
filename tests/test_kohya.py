"""Single-file diffusion LoRAs: kohya's SDXL layout (real key names, shapes and alphas, random weights) and
diffusers' layouts, against dense float64 references; with a diffusers pipeline base; compared with --against."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lowrank.adapters.kohya import module_name
from lowrank.analysis.run import AnalyzeConfig, analyze
from lowrank.errors import LowrankError

# (kohya stem, out, in[, kernel]) of real SDXL modules: UNet in sd-scripts' (SGM) naming, both text encoders.
SDXL = [
    ("lora_unet_input_blocks_4_1_proj_in", 640, 640), ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 640, 640),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 640, 2048),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_out_0", 640, 640),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_ff_net_0_proj", 5120, 640),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_ff_net_2", 640, 2560),
    ("lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v", 1280, 2048),
    ("lora_unet_output_blocks_2_1_transformer_blocks_1_attn1_to_k", 1280, 1280),
    ("lora_unet_input_blocks_1_0_in_layers_2", 320, 320, 3), ("lora_unet_input_blocks_1_0_emb_layers_1", 320, 1280),
    ("lora_unet_output_blocks_5_0_skip_connection", 640, 1920, 1),
    ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
    ("lora_te1_text_model_encoder_layers_11_mlp_fc1", 3072, 768),
    ("lora_te2_text_model_encoder_layers_0_self_attn_out_proj", 1280, 1280),
    ("lora_te2_text_model_encoder_layers_31_mlp_fc2", 1280, 5120),
]


def kohya_file(path, modules, rank=8, alpha=4.0, seed=0):
    """A kohya LoRA file (lora_down, lora_up, alpha per module) and the dense float64 update of each module."""
    generator = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for stem, out, inp, *kernel in modules:
        k = kernel[0] if kernel else None
        down = torch.randn((rank, inp) + ((k, k) if k else ()), generator=generator)
        up = torch.randn((out, rank) + ((1, 1) if k else ()), generator=generator) * 0.1
        tensors |= {f"{stem}.lora_down.weight": down.half(), f"{stem}.lora_up.weight": up.half(),
                    f"{stem}.alpha": torch.tensor(alpha)}
        deltas[stem] = alpha / rank * up.half().double().reshape(out, rank) @ down.half().double().reshape(rank, -1)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return deltas


def dense_singular_values(delta: np.ndarray) -> np.ndarray:
    """Singular values of the dense float64 ``delta`` from the eigenvalues of its smaller Gram matrix (exact to
    about ``1e-16 s_1^2`` in s^2, ample for the top values; a dense SVD of 1280 x 5120 is too slow for CI)."""
    gram = delta @ delta.T if delta.shape[0] <= delta.shape[1] else delta.T @ delta
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None))


def test_sdxl_kohya_lora_spectra_equal_a_dense_float64_reference(tmp_path):
    deltas = kohya_file(tmp_path / "sdxl.safetensors", SDXL)
    report = analyze(AnalyzeConfig(str(tmp_path / "sdxl.safetensors")))
    by_name = {m.name: m for m in report.modules}
    assert report.adapter_format == "kohya" and len(report.modules) == len(SDXL)
    for stem, delta in deltas.items():
        module = by_name[module_name(stem)]
        reference = dense_singular_values(delta.numpy())[:8]
        assert tuple(module.shape) == delta.shape and module.rank == 8 and module.scale == 0.5
        np.testing.assert_allclose(module.singular_values, reference, rtol=1e-6, atol=1e-9 * reference[0])
    assert by_name["unet.input_blocks.1.0.in_layers.2"].layer_kind == "conv"
    assert "unet.input_blocks.4.1.transformer_blocks.0.ff.net.0.proj" in by_name
    assert "text_encoder_2.text_model.encoder.layers.31.mlp.fc2" in by_name


@pytest.mark.parametrize("stem, name", [
    ("lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0",
     "unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0"),
    ("lora_unet_mid_block_resnets_0_time_emb_proj", "unet.mid_block.resnets.0.time_emb_proj"),
    ("lora_te_text_model_encoder_layers_3_self_attn_v_proj", "text_encoder.text_model.encoder.layers.3.self_attn.v_proj"),
    ("lora_unet_double_blocks_7_img_attn_qkv", "unet.double_blocks.7.img_attn.qkv"),
    ("lora_unet_single_blocks_0_linear1", "unet.single_blocks.0.linear1"),
    ("unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora",
     "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0"),
])
def test_stems_become_module_paths(stem, name):
    assert module_name(stem) == name


def sd_pipeline(folder, names_shapes, seed=1):
    """A diffusers pipeline folder (model_index.json, unet/ and text_encoder/ safetensors) with random weights."""
    generator = torch.Generator().manual_seed(seed)
    (folder / "unet").mkdir(parents=True)
    (folder / "text_encoder").mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    parts = {"unet": {}, "text_encoder": {}}
    for name, shape in names_shapes.items():
        component, _, module = name.partition(".")
        parts[component][f"{module}.weight"] = torch.randn(shape, generator=generator)
    save_file(parts["unet"], str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    save_file(parts["text_encoder"], str(folder / "text_encoder" / "model.safetensors"))


SD15 = [("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", 64, 64),
        ("lora_unet_down_blocks_1_attentions_0_proj_in", 64, 64, 1),
        ("lora_unet_down_blocks_1_resnets_0_conv1", 64, 32, 3),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1", 128, 48)]


def test_kohya_lora_against_a_diffusers_pipeline_base_gets_base_metrics(tmp_path):
    kohya_file(tmp_path / "style.safetensors", SD15, rank=4)
    shapes = {module_name(stem): (out, inp) + ((k[0], k[0]) if k else ()) for stem, out, inp, *k in SD15}
    sd_pipeline(tmp_path / "sd15", shapes)
    report = analyze(AnalyzeConfig(str(tmp_path / "style.safetensors"), base=str(tmp_path / "sd15")))
    assert all(m.amplification is not None and m.intruders is not None for m in report.modules)
    assert {m.name for m in report.modules} == set(shapes)


def test_two_kohya_files_compare_module_by_module(tmp_path):
    kohya_file(tmp_path / "a.safetensors", SD15, rank=4, seed=0)
    kohya_file(tmp_path / "b.safetensors", SD15, rank=8, seed=0)
    report = analyze(AnalyzeConfig(str(tmp_path / "a.safetensors"), against=str(tmp_path / "b.safetensors")))
    assert len(report.comparisons) == len(SD15)
    assert all(c.k == 4 and 0.0 <= c.phi <= 1.0 for c in report.comparisons)


@pytest.mark.parametrize("down, up", [(".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"),
                                      (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight")])
def test_diffusers_layouts_read_with_scale_one_without_alphas(tmp_path, down, up):
    generator = torch.Generator().manual_seed(0)
    stem = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"
    A, B = torch.randn(4, 40, generator=generator), torch.randn(24, 4, generator=generator)
    save_file({stem + down: A, stem + up: B}, str(tmp_path / "pytorch_lora_weights.safetensors"))
    report = analyze(AnalyzeConfig(str(tmp_path / "pytorch_lora_weights.safetensors")))
    (module,) = report.modules
    reference = np.linalg.svd((B.double() @ A.double()).numpy(), compute_uv=False)[:4]
    assert module.name == stem and report.adapter_format == "diffusers"
    np.testing.assert_allclose(module.singular_values, reference, rtol=1e-6)
    assert any("scale 1" in note for note in report.notes)


@pytest.mark.parametrize("key, what", [("lora_unet_x.hada_w1_a", "LoHa"), ("lora_unet_x.lokr_w1", "LoKr"),
                                       ("lora_unet_x.dora_scale", "DoRA in kohya's layout")])
def test_other_lycoris_networks_are_refused_by_name(tmp_path, key, what):
    save_file({key: torch.ones(2, 2)}, str(tmp_path / "net.safetensors"))
    with pytest.raises(LowrankError, match=f"net.safetensors holds {what}"):
        analyze(AnalyzeConfig(str(tmp_path / "net.safetensors")))
