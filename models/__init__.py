"""CrOC networks: DINO-configured timm ViTs with per-head keys, and the CrOC head."""

from .head import CrOCHead, CrOCNetwork, NetworkOutput
from .vision_transformer import (
    ARCH_CONFIGS,
    ARCH_NAMES,
    BackboneOutput,
    CrOCViT,
    build_backbone,
    canonical_arch,
    vit_base,
    vit_small,
    vit_tiny,
)

__all__ = ["ARCH_CONFIGS", "ARCH_NAMES", "BackboneOutput", "CrOCHead", "CrOCNetwork", "CrOCViT", "NetworkOutput",
           "build_backbone", "canonical_arch", "vit_base", "vit_small", "vit_tiny"]
