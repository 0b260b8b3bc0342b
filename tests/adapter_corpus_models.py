"""Tiny random-init models of the architectures the adapter corpus names (a test helper, not a test module).

:func:`architecture_for` reads a corpus file's ``auto_mapping`` class or ``base_model_name_or_path`` (or, where the
file names no base, the architecture its repository names); :func:`build_model` builds that architecture with
hidden size 32, two layers and a 128-token vocabulary, seeded, without any download. Remote-code models that
transformers lacks get the transformers architecture with the same module names (ChatGLM and GLM-4 use GPT-NeoX's
``query_key_value``/``dense``/``dense_h_to_4h``/``dense_4h_to_h``); diffusers models (not installed) get a small
torch module with diffusers' attention names (``to_q``, ``to_k``, ``to_v``, ``to_out.0``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

# Substrings of base_model_name_or_path (lower case), first match wins.
_BY_NAME = [("flan-t5", "t5"), ("whisper", "whisper"), ("distilbert", "distilbert"), ("xlm-roberta", "xlm_roberta"),
            ("roberta", "roberta"), ("bert", "bert"), ("bart", "bart"), ("gpt2", "gpt2"), ("phi-1_5", "phi"),
            ("phi-2", "phi"), ("unsloth/phi-3", "llama"), ("phi-3", "phi3"), ("smolvlm", "idefics3"),
            ("paligemma", "paligemma"), ("gemma-2", "gemma2"), ("3.2v", "mllama"), ("mistral", "mistral"),
            ("qwen2.5-vl", "qwen2_5_vl"), ("qwen", "qwen2"), ("chatglm", "gpt_neox"), ("glm-4", "gpt_neox"),
            ("gpt-neox", "gpt_neox"), ("rwkv", "rwkv"), ("vit-", "vit"), ("llama", "llama")]
_BY_CLASS = {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt2", "WhisperForConditionalGeneration": "whisper",
             "ViTForImageClassification": "vit", "UNet2DConditionModel": "diffusers",
             "SD3Transformer2DModel": "diffusers"}
# Files whose base_model_name_or_path is null: the architecture their repository names.
_BY_REPOSITORY = {"11_llava-null-base.json": "llava", "33_blip2-null-base-peftmodel-mapping.json": "blip2"}


def architecture_for(file_name: str, raw: dict) -> str:
    """The tiny architecture to build for a corpus file; ``llama`` for files that are not peft configs (their
    fixture carries plausible Llama LoRA weights)."""
    if file_name in _BY_REPOSITORY:
        return _BY_REPOSITORY[file_name]
    mapped = (raw.get("auto_mapping") or {}).get("base_model_class")
    if mapped in _BY_CLASS:
        return _BY_CLASS[mapped]
    name = str(raw.get("base_model_name_or_path") or "").lower()
    return next((arch for key, arch in _BY_NAME if key in name), "llama")


def _decoder(**extra) -> dict:
    return dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                **extra)


def _encoder(**extra) -> dict:
    return dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=64, num_labels=3, **extra)


def _vision(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16,
                patch_size=8, **extra)


def _config(architecture: str):
    """The transformers config of a tiny model of ``architecture``."""
    import transformers as t

    simple = {"llama": t.LlamaConfig, "mistral": t.MistralConfig, "qwen2": t.Qwen2Config, "phi": t.PhiConfig,
              "phi3": t.Phi3Config, "gpt_neox": t.GPTNeoXConfig}
    if architecture in simple:
        return simple[architecture](**_decoder())
    if architecture in ("bert", "roberta", "xlm_roberta"):
        return {"bert": t.BertConfig, "roberta": t.RobertaConfig, "xlm_roberta": t.XLMRobertaConfig}[architecture](
            **_encoder(pad_token_id=1))
    factories = {
        "gemma2": lambda: t.Gemma2Config(**_decoder(head_dim=8)),
        "gpt2": lambda: t.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0,
                                     num_labels=3),
        "t5": lambda: t.T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                 decoder_start_token_id=0, feed_forward_proj="gated-gelu"),
        "bart": lambda: t.BartConfig(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=64),
        "whisper": lambda: t.WhisperConfig(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2,
                                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                           decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16,
                                           max_target_positions=16, pad_token_id=0, decoder_start_token_id=1),
        "distilbert": lambda: t.DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                 max_position_embeddings=64, num_labels=3),
        "vit": lambda: t.ViTConfig(**_vision(num_labels=3)),
        "rwkv": lambda: t.RwkvConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32,
                                     intermediate_size=64, context_length=16),
        "idefics3": lambda: t.Idefics3Config(text_config=_decoder(), vision_config=_vision(), scale_factor=1,
                                             image_token_id=3),
        "llava": lambda: t.LlavaConfig(text_config=dict(_decoder(), model_type="llama"),
                                       vision_config=dict(_vision(), model_type="clip_vision_model",
                                                          projection_dim=32), image_token_index=3),
        "paligemma": lambda: t.PaliGemmaConfig(text_config=dict(_decoder(head_dim=8), model_type="gemma"),
                                               vision_config=dict(_vision(), model_type="siglip_vision_model"),
                                               projection_dim=32, image_token_index=3),
        "blip2": lambda: t.Blip2Config(vision_config=_vision(), qformer_config=dict(
            _encoder(), encoder_hidden_size=32), text_config=dict(
            vocab_size=128, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
            word_embed_proj_dim=32, max_position_embeddings=64, model_type="opt"), num_query_tokens=2),
        "mllama": lambda: t.MllamaConfig(text_config=dict(_decoder(), cross_attention_layers=[1]), vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1, attention_heads=4,
            image_size=16, patch_size=8, intermediate_layers_indices=[0], vision_output_dim=64, max_num_tiles=1,
            supported_aspect_ratios=[[1, 1]])),
        "qwen2_5_vl": lambda: t.Qwen2_5_VLConfig(text_config=dict(_decoder(), rope_scaling={
            "type": "mrope", "mrope_section": [1, 1, 2]}), vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=4,
            spatial_merge_size=1, temporal_patch_size=1, fullatt_block_indexes=[1], window_size=8)),
    }
    return factories[architecture]()


_CLASSES = {"SEQ_CLS": "AutoModelForSequenceClassification", "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
            "CAUSAL_LM": "AutoModelForCausalLM"}
_DEFAULT_CLASS = {"whisper": "WhisperForConditionalGeneration", "vit": "ViTForImageClassification",
                  "blip2": "Blip2ForConditionalGeneration"}
_MULTIMODAL = {"idefics3", "llava", "paligemma", "mllama", "qwen2_5_vl"}


class _Attention(nn.Module):
    """diffusers' attention names: ``to_q``, ``to_k``, ``to_v`` and ``to_out`` = [Linear, Dropout]."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Linear(width, width) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(width, width), nn.Dropout(0.0)])


class DiffusersLike(nn.Module):
    """Two transformer blocks with a self- and a cross-attention each, named as in diffusers' UNet and SD3 blocks."""

    def __init__(self):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(nn.ModuleDict({"attn1": _Attention(), "attn2": _Attention()})
                                                for _ in range(2))


def build_model(architecture: str, task_type: str | None, seed: int = 0) -> nn.Module:
    """A seeded random-init tiny model: the head follows ``task_type`` (causal LM, seq2seq, sequence classifier),
    multimodal models are image-text-to-text, others their usual class."""
    import transformers as t

    torch.manual_seed(seed)
    if architecture == "diffusers":
        return DiffusersLike().eval()
    config = _config(architecture)
    if architecture in _MULTIMODAL:
        name = "AutoModelForImageTextToText"
    else:
        name = _CLASSES.get(task_type or "", _DEFAULT_CLASS.get(architecture, "AutoModelForCausalLM"))
    factory = getattr(t, name)
    model = factory.from_config(config) if name.startswith("Auto") else factory(config)
    return model.eval()


def save_base(model: nn.Module, folder: Path) -> Path:
    """Save the base weights (safetensors): ``save_pretrained`` for transformers models, a plain file otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder
