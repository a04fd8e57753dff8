"""clipserve: an OpenAI-compatible inference service for CLIP ViT-B-32 (laion2b_s34b_b79k)."""

__version__ = "0.1.0"
