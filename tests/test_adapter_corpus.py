"""``lowrank analyze`` on real-world adapter_config.json files, checked against peft's own applied update.

Each corpus file (tests/data/adapter_configs, sources in SOURCES.md there) is built into a tiny adapter with real peft
(tests/adapter_corpus.py). lowrank must either analyze it exactly (every module's singular values within 1e-6 of
peft's float64 update, relative to the largest, and the same module set) or refuse it with exit status 2 and one
``Error:`` line naming the adapter. Files peft itself rejects must be refused; the LoRA, DoRA and AdaLoRA files peft
applies must be analyzed exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from adapter_corpus import CORPUS, build_fixture, corpus_files, judge, run_lowrank
from safetensors.numpy import load_file

NAMES = [path.name for path in corpus_files()]

# Every file peft applies as LoRA, DoRA or AdaLoRA: lowrank must reproduce peft's update exactly.
MUST_BE_EXACT = {
    "01_flan-t5-seq2seq-peft018.json", "02_bert-seqcls-modules-to-save.json", "03_whisper-auto-mapping.json",
    "04_llama2-old-peft-enable-lora.json", "05_phi15-dead-wqkv-target.json", "06_smolvlm-vision-text.json",
    "09_chatglm6b-query-key-value.json", "10_phi3-unsloth-fused-qkv.json", "11_llava-null-base.json",
    "12_llama1-old-peft-q-v.json", "13_llama-oldest-peft-local-path.json", "14_gpt2-conv1d-fan-in-fan-out.json",
    "15_phi2-q-v-fc.json", "16_paligemma-peft019-bdlora-null.json", "17_phi35-unsloth-llamafied.json",
    "18_llama32-unsloth-all-proj.json", "19_roberta-seqcls-duplicated-modules-to-save.json",
    "20_bert-seqcls-r64.json", "21_bart-seq2seq-q-v.json", "22_mllama-vision-cross-attn.json",
    "23_xlmr-dora-seqcls.json", "25_bert-adalora-int-booleans.json", "27_flan-t5-dora.json",
    "29_mistral-lm-head-target.json", "30_gemma2-unsloth-r64.json", "31_glm4-fused-qkv-local-path.json",
    "32_gpt-neox-rinna-old-peft.json", "33_blip2-null-base-peftmodel-mapping.json",
    "34_sd3-transformer-diffusers-peft.json", "35_qwen25-local-path-all-proj.json",
    "36_distilbert-seqcls-q-lin.json", "37_gpt2-seqcls-score-head.json", "39_phi3-fused-qkv-gate-up.json",
    "40_sd-unet-diffusers-peft.json", "42_axolotl-fan-in-fan-out-null.json",
    "43_axolotl-tinyllama-inference-mode-false.json", "44_rwkv-old-peft-key-value-output.json",
    "45_qwen25-vl-both-towers-mlp.json",
}
# Files that are not peft configs at all (MLX-LM, LeRobot, a model's config.json).
FOREIGN = {"07_foreign-lerobot-smolvla.json", "08_foreign-mlx-lm-lora.json", "41_foreign-model-config-json.json"}
# peft adapters that are not low-rank updates.
NOT_LORA = {"24_xlmr-ia3-not-lora.json", "28_flan-t5-prefix-tuning-not-lora.json"}

_BUILT: dict = {}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, one_thread_module):
    """Build each corpus file on first use (one temporary folder per file), then reuse it."""
    root = tmp_path_factory.mktemp("adapter-corpus")

    def get(name: str):
        if name not in _BUILT:
            _BUILT[name] = build_fixture(CORPUS / name, root / name.removesuffix(".json"))
        return _BUILT[name]

    return get


@pytest.fixture(scope="module")
def one_thread_module():
    """Tiny tensors on a shared CPU: one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_corpus_is_large_documented_and_classified():
    sources = (CORPUS / "SOURCES.md").read_text()
    assert len(NAMES) >= 40
    assert all(f"`{name}`" in sources for name in NAMES)
    assert MUST_BE_EXACT | FOREIGN | NOT_LORA <= set(NAMES)
    for name in NAMES:
        json.loads((CORPUS / name).read_bytes())  # every file is JSON, foreign ones included


@pytest.mark.parametrize("name", NAMES)
def test_lowrank_matches_peft_or_refuses_by_name(corpus, name):
    fixture = corpus(name)
    outcome = judge(fixture, run_lowrank(fixture))
    if name in MUST_BE_EXACT:
        assert outcome.kind == "exact", outcome.detail
    elif fixture.must_refuse or name in FOREIGN or name in NOT_LORA:
        assert outcome.kind == "refused", outcome.detail
    else:
        assert outcome.kind in ("exact", "refused"), outcome.detail


def test_peft_agrees_with_the_classification(corpus):
    """The explicit sets above match what peft itself does with each file."""
    for name in NAMES:
        fixture = corpus(name)
        assert fixture.lora_like == (name in MUST_BE_EXACT), name
        if name in FOREIGN:
            assert fixture.must_refuse and fixture.peft_type is None, name
        if name in MUST_BE_EXACT:
            assert fixture.reference and all(s[0] > 0 for s in fixture.reference.values()), name


@pytest.mark.parametrize("name", ["14_gpt2-conv1d-fan-in-fan-out.json", "20_bert-seqcls-r64.json"])
def test_reference_is_the_saved_factors_update(corpus, name):
    """The harness itself: peft's reference equals (alpha / r) B A from the saved file, so a reader that reproduces
    the reference reads the file, not the harness."""
    fixture = corpus(name)
    config = json.loads(fixture.source.read_bytes())
    tensors = load_file(str(fixture.adapter / "adapter_model.safetensors"))
    scale = config["lora_alpha"] / config["r"]
    for module, expected in fixture.reference.items():
        prefix = f"base_model.model.{module}"
        b = tensors[f"{prefix}.lora_B.weight"].astype(np.float64)
        a = tensors[f"{prefix}.lora_A.weight"].astype(np.float64)
        values = np.linalg.svd(scale * b @ a, compute_uv=False)
        assert np.allclose(values, expected, rtol=0, atol=1e-9 * expected[0]), module
        assert math.isclose(float(values[0]), float(expected[0]), rel_tol=1e-9)
