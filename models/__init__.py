"""CrOC networks: DINO-configured timm ViTs with per-head keys, and the CrOC head."""

from .head import CrOCHead, CrOCNetwork, NetworkOutput
from .vision_transformer import ARCH_CONFIGS, BackboneOutput, CrOCViT, build_backbone, vit_base, vit_small, vit_tiny

__all__ = ["ARCH_CONFIGS", "BackboneOutput", "CrOCHead", "CrOCNetwork", "CrOCViT", "NetworkOutput", "build_backbone",
           "vit_base", "vit_small", "vit_tiny"]
