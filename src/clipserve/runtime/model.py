"""The encoder: open_clip's CLIP with its eval transform and tokenizer, on one device, in inference mode.

Four verbs: load, preprocess, encode_images, encode_texts (plus tokenize). Outputs are L2-normalised
float32 numpy arrays, computed exactly as open_clip's encode_* followed by F.normalize.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.hooks import RemovableHandle

from clipserve.runtime.precision import (
    Precision,
    PrecisionChoice,
    apply_precision,
    input_dtype,
    resolve_precision,
)
from clipserve.runtime.text_tower import encode_text_truncated, length_groups, supports_truncation
from clipserve.runtime.tokenizer import ClipTokenizer
from clipserve.runtime.weights import LoadedModel, WeightsInfo, load_model

logger = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class RuntimeSpec:
    weights: str
    architecture: str = "ViT-B-32"
    device: DeviceChoice = "auto"
    torch_threads: int | None = None
    seed: int = 0
    cache_dir: Path = Path("models")
    truncate_text: bool = True  # run the text tower only to each batch's longest prompt (same result)
    precision: PrecisionChoice = "fp32"
    tokenizer_cache_bytes: int = 16 * 1024 * 1024  # the BPE word cache (open_clip's own grows forever)


@dataclass(frozen=True)
class TokenizedTexts:
    ids: torch.Tensor  # [n, context_length] int64
    token_counts: list[int]  # tokens each text occupies, start/end markers included, after truncation


def select_device(choice: DeviceChoice) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class ClipRuntime:
    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        *,
        truncate_text: bool = True,
        precision: PrecisionChoice = "fp32",
        tokenizer_cache_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.device = device
        self.weights: WeightsInfo = loaded.info
        self.precision: Precision = resolve_precision(precision, device)
        self._input_dtype = input_dtype(self.precision)
        model = loaded.model.to(device).eval().requires_grad_(False)
        self.logit_scale: float = float(model.logit_scale.exp().item())  # in fp32, before any conversion
        self._model = apply_precision(model, self.precision)
        self._preprocess = loaded.preprocess
        self._tokenizer = ClipTokenizer(
            open_clip.get_tokenizer(self._tokenizer_name(loaded.info.architecture)),
            cache_bytes=tokenizer_cache_bytes,
        )
        self.context_length: int = int(self._model.context_length)
        self.embed_dim: int = int(self._model.text_projection.shape[1])
        # int8's text tower has no exact full-length path in open_clip (get_cast_dtype fails on quantized
        # layers); truncation is exact, so it always runs there.
        self.truncates_text = supports_truncation(self._model) and (truncate_text or self.precision == "int8")

    @classmethod
    def load(cls, spec: RuntimeSpec) -> ClipRuntime:
        """Load weights (raises WeightsUnavailableError) and place the model on its device."""
        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        device = select_device(spec.device)
        if device.type == "cuda":
            # fp32 means fp32: TF32 convolutions would break parity with the reference.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        loaded = load_model(
            spec.weights, architecture=spec.architecture, cache_dir=spec.cache_dir, seed=spec.seed
        )
        runtime = cls(
            loaded,
            device,
            truncate_text=spec.truncate_text,
            precision=spec.precision,
            tokenizer_cache_bytes=spec.tokenizer_cache_bytes,
        )
        logger.info(
            "model loaded: %s (%s, fingerprint %s) on %s in %s, %d torch threads",
            loaded.info.source,
            loaded.info.architecture,
            loaded.info.fingerprint,
            device,
            runtime.precision,
            torch.get_num_threads(),
        )
        return runtime

    @staticmethod
    def _tokenizer_name(architecture: str) -> str:
        # Hub and local-dir configs name their tokenizer themselves; built-ins use the architecture name.
        return architecture if architecture in open_clip.list_models() else "ViT-B-32"

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """open_clip's eval transform itself (picklable), for decoding in other processes (embed-dataset)."""
        transform: Callable[[Image.Image], torch.Tensor] = self._preprocess
        return transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """open_clip's eval transform: [3, 224, 224] float32."""
        return self._preprocess(image)

    def tokenize(self, texts: list[str]) -> TokenizedTexts:
        """open_clip's token ids, BPE run only on the words that reach the context (runtime/tokenizer.py)."""
        ids = self._tokenizer(texts, context_length=self.context_length)
        # The end-of-text token has the largest id, so its position is the argmax (as open_clip pools).
        counts = (ids.argmax(dim=-1) + 1).tolist()
        return TokenizedTexts(ids, counts)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """[n, 3, H, W] preprocessed pixels -> [n, embed_dim] unit vectors."""
        features = self._model.encode_image(pixels.to(self.device, self._input_dtype, non_blocking=True))
        return _to_numpy(F.normalize(features.float(), dim=-1))

    @torch.inference_mode()
    def encode_texts(self, ids: torch.Tensor) -> np.ndarray:
        """[n, context_length] token ids -> [n, embed_dim] unit vectors."""
        if not self.truncates_text:
            features = self._model.encode_text(ids.to(self.device, non_blocking=True))
            return _to_numpy(F.normalize(features.float(), dim=-1))
        out = torch.empty((ids.shape[0], self.embed_dim), dtype=torch.float32)
        for rows in length_groups(ids):
            features = encode_text_truncated(self._model, ids[rows].to(self.device, non_blocking=True))
            out[rows] = F.normalize(features.float(), dim=-1).cpu()
        return _to_numpy(out)

    def add_yield_points(self, yield_point: Callable[[], None]) -> list[RemovableHandle]:
        """Call `yield_point()` before every transformer block's attention and MLP, in both towers (open_clip's
        ResidualAttentionBlock and any block with `attn` and `mlp` children), so a background call can pause
        between steps (runtime/foreground_gate.py). Returns the hooks' handles (remove them to take the points
        away); none for a model without such blocks, whose calls then run whole."""
        handles = []
        for module in self._model.modules():
            children = dict(module.named_children())
            if "attn" in children and "mlp" in children:
                for step in (children["attn"], children["mlp"]):
                    handles.append(step.register_forward_pre_hook(lambda _module, _args: yield_point()))
        return handles

    def warmup(self) -> None:
        """One forward pass per tower, so the first request does not pay for lazy initialisation."""
        blank = Image.new("RGB", (256, 256), (127, 127, 127))
        self.encode_images(self.preprocess(blank).unsqueeze(0))
        self.encode_texts(self.tokenize(["a photo of a cat."]).ids)


def _to_numpy(features: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)
