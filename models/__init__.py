"""CrOC networks: DINO-configured timm ViTs with per-head keys, the CrOC head, and the hub entry points."""

from croc_utils.architectures import ARCH_CONFIGS, ARCH_NAMES, canonical_arch

from .head import CrOCHead, CrOCNetwork, NetworkOutput
from .hub import croc_vit, croc_vits16, croc_vits16_full
from .vision_transformer import (
    BackboneOutput,
    CrOCViT,
    build_backbone,
    vit_base,
    vit_pico,
    vit_small,
    vit_tiny,
)

__all__ = ["ARCH_CONFIGS", "ARCH_NAMES", "BackboneOutput", "CrOCHead", "CrOCNetwork", "CrOCViT", "NetworkOutput",
           "build_backbone", "canonical_arch", "croc_vit", "croc_vits16", "croc_vits16_full", "vit_base", "vit_pico",
           "vit_small", "vit_tiny"]
