"""What this machine's CPU offers, read independently of clipserve (lscpu, else /proc/cpuinfo parsed here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# docs/operations.md: auto picks bf16 on "CPUs with AMX-BF16 or AVX512-BF16" (bf16 matrix units), else fp32.
BF16_MATRIX_UNIT_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flag_names() -> set[str]:
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.lower().startswith("flags:"):
                return set(line.split(":", 1)[1].split())
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags |= set(value.split())
    return flags


def cpu_has_bf16_matrix_units() -> bool:
    return any(flag in cpu_flag_names() for flag in BF16_MATRIX_UNIT_FLAGS)
