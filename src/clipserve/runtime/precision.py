"""Numeric precision of the model: fp32 (the reference), bf16, or int8 (dynamic quantization of Linear layers).

`auto` picks bf16 only where the hardware has bf16 matrix units (CUDA, or a CPU with AMX-BF16 or AVX512-BF16);
elsewhere bf16 is emulated and slower than fp32, so auto stays at fp32. int8 is CPU-only (PyTorch's dynamic
quantization: weights int8 per tensor, activations quantized per batch, accumulation in int32).
"""

from __future__ import annotations

import logging
import warnings
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

import torch

logger = logging.getLogger(__name__)

PrecisionChoice = Literal["auto", "fp32", "bf16", "int8"]
Precision = Literal["fp32", "bf16", "int8"]
ModelT = TypeVar("ModelT", bound=torch.nn.Module)
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def resolve_precision(choice: PrecisionChoice, device: torch.device) -> Precision:
    if choice == "int8" and device.type != "cpu":
        raise RuntimeError("--precision int8 runs on the CPU only; use bf16 or fp32 on CUDA")
    if choice != "auto":
        return choice
    if device.type == "cuda" or cpu_flags() & BF16_CPU_FLAGS:
        return "bf16"
    return "fp32"


def apply_precision(model: ModelT, precision: Precision) -> ModelT:
    """The model converted to `precision` (fp32 returns it unchanged); same class, layers swapped in place."""
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao's eager API still works in 2.14
            warnings.simplefilter("ignore", UserWarning)
            from torch.ao.quantization import quantize_dynamic

            quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)  # type: ignore[no-untyped-call]
        return model
    return model


def input_dtype(precision: Precision) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16" else torch.float32
