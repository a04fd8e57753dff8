"""Read a transformers `CLIPModel` checkpoint and convert it to open_clip's layout.

transformers keeps q/k/v as separate projections and stores projections as Linear weights; open_clip fuses
q/k/v into `in_proj_weight` and stores projections as matrices applied on the right. Nothing else differs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipserve.errors import WeightsUnavailableError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_LAYER_RENAMES = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_TOWERS = {"text_model": "transformer", "vision_model": "visual.transformer"}
_LAYER_KEY = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_FIXED_KEYS = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_DROPPED = re.compile(r"(^|\.)position_ids$")


@dataclass(frozen=True)
class TransformersCheckpoint:
    """A transformers CLIPModel on disk: its config and weight file."""

    config: dict[str, Any]
    weights_path: Path

    @classmethod
    def find(cls, path: Path) -> TransformersCheckpoint | None:
        """The checkpoint at `path` (a directory, or a weight file beside config.json), if it is one."""
        directory = path if path.is_dir() else path.parent
        config_path = directory / "config.json"
        if not config_path.is_file():
            return None
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("model_type") != "clip":
            return None
        if path.is_file():
            return cls(config, path)
        for name in WEIGHT_FILES:
            if (directory / name).is_file():
                return cls(config, directory / name)
        raise WeightsUnavailableError(
            f"{directory} has a CLIP config.json but none of {', '.join(WEIGHT_FILES)}"
        )

    def open_clip_config(self) -> dict[str, Any]:
        """The open_clip model config this checkpoint corresponds to."""
        vision = self.config.get("vision_config", {})
        text = self.config.get("text_config", {})
        acts = {vision.get("hidden_act", "quick_gelu"), text.get("hidden_act", "quick_gelu")}
        if len(acts) != 1 or not acts <= {"gelu", "quick_gelu"}:
            raise WeightsUnavailableError(f"unsupported activation(s) in transformers config: {sorted(acts)}")
        cfg: dict[str, Any] = {
            "embed_dim": self.config.get("projection_dim", 512),
            "vision_cfg": {
                "image_size": vision.get("image_size", 224),
                "layers": vision.get("num_hidden_layers", 12),
                "width": vision.get("hidden_size", 768),
                "patch_size": vision.get("patch_size", 32),
            },
            "text_cfg": {
                "context_length": text.get("max_position_embeddings", 77),
                "vocab_size": text.get("vocab_size", 49408),
                "width": text.get("hidden_size", 512),
                "heads": text.get("num_attention_heads", 8),
                "layers": text.get("num_hidden_layers", 12),
            },
        }
        vision_heads = vision.get("num_attention_heads", 12)
        cfg["vision_cfg"]["head_width"] = cfg["vision_cfg"]["width"] // vision_heads
        if acts == {"quick_gelu"}:
            cfg["quick_gelu"] = True
        return cfg

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        if self.weights_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: dict[str, torch.Tensor] = load_file(str(self.weights_path))
        else:
            raw = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        return convert_state_dict(raw)


def convert_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers CLIPModel state dict onto open_clip's CLIP keys."""
    hf = {_strip_prefix(k): v for k, v in hf.items() if not _DROPPED.search(k)}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for key, value in hf.items():
        if key in _FIXED_KEYS:
            out[_FIXED_KEYS[key]] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key == "vision_model.embeddings.position_embedding.weight":
            out["visual.positional_embedding"] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.T.contiguous()
        elif match := _LAYER_KEY.match(key):
            tower, layer, name, kind = match.groups()
            prefix = f"{_TOWERS[tower]}.resblocks.{layer}"
            if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((prefix, kind, ""), {})[name[10]] = value
            elif name in _LAYER_RENAMES:
                out[f"{prefix}.{_LAYER_RENAMES[name]}.{kind}"] = value
            else:
                raise WeightsUnavailableError(f"unexpected key in transformers checkpoint: {key}")
        else:
            raise WeightsUnavailableError(f"unexpected key in transformers checkpoint: {key}")
    for (prefix, kind, _), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise WeightsUnavailableError(f"incomplete q/k/v projections under {prefix}")
        out[f"{prefix}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _strip_prefix(key: str) -> str:
    # CLIPModel saved from a wrapper may carry a leading "clip." or "model." prefix.
    for prefix in ("clip.", "model."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key
