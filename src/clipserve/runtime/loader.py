"""The model as Settings describe it: one place that turns settings into a loaded ClipRuntime.

The server, `clipserve eval`, and embed-dataset's driver and model actors all load through here, so they run
the same weights, precision and truncation.
"""

from __future__ import annotations

from clipserve.config import Settings
from clipserve.runtime.model import ClipRuntime, RuntimeSpec


def runtime_spec(settings: Settings, torch_threads: int | None = None) -> RuntimeSpec:
    """The RuntimeSpec of `settings`; `torch_threads` overrides settings.torch_threads (e.g. 1 per Ray actor)."""
    return RuntimeSpec(
        weights=settings.weights,
        architecture=settings.architecture,
        device=settings.device,
        torch_threads=torch_threads or settings.torch_threads,
        seed=settings.random_seed,
        cache_dir=settings.resolved_model_cache_dir,
        truncate_text=settings.truncate_text,
        precision=settings.precision,
        tokenizer_cache_bytes=settings.tokenizer_cache_bytes,
    )


def runtime_from_settings(settings: Settings, torch_threads: int | None = None) -> ClipRuntime:
    """Load the model per `settings`; raises WeightsUnavailableError (or RuntimeError for the device)."""
    return ClipRuntime.load(runtime_spec(settings, torch_threads))
