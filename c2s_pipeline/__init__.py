"""c2s: CLIP-to-Seg distillation for inductive zero-shot semantic segmentation (library)."""

__version__ = "0.1.0"
