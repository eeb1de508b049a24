"""DINO-configured Vision Transformers built on timm, with the last block's per-head keys.

docs/algorithm.md section 2. The backbone is timm's stock ``VisionTransformer``; the only overrides are
DINO's position-embedding interpolation (needed to reproduce released numbers at 448 px) and DINO's
initialisation of ``cls_token``. The per-head keys (or queries / values) of the last block are read with a
forward hook on ``blocks[-1].attn.qkv`` instead of re-implementing the block.
"""

import math
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from croc_utils.architectures import ARCH_CONFIGS, canonical_arch

QKV_INDEX = {"q": 0, "k": 1, "v": 2}
WHICH_FEATURES = ("k", "q", "v", "last")


class BackboneOutput(NamedTuple):
    """Named result of one backbone forward.

    cls: (B, D) CLS token after the final norm.
    tokens: (B, 1+N, D) all tokens after the final norm (CLS first).
    keys: (B, H, 1+N, d) the last block's per-head keys (queries / values with ``which_features`` q / v;
        with ``last`` the normed last-layer tokens split per head).
    """

    cls: torch.Tensor
    tokens: torch.Tensor
    keys: torch.Tensor


class CrOCViT(VisionTransformer):
    """timm ViT in DINO's configuration (qkv bias, LayerNorm eps 1e-6, CLS token, no classifier).

    State-dict keys are DINO's: ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.*``, ``norm.*``.
    Any input whose sides are multiples of ``patch_size`` is accepted.
    """

    def __init__(self, patch_size: int = 16, embed_dim: int = 384, num_heads: int = 6, depth: int = 12,
                 drop_path_rate: float = 0.0, which_features: str = "k", img_size: int = 224):
        if which_features not in WHICH_FEATURES:
            raise ValueError(f"which_features must be one of {WHICH_FEATURES}, got {which_features!r}")
        super().__init__(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=4.0, qkv_bias=True, num_classes=0, global_pool="token", class_token=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), drop_path_rate=drop_path_rate, dynamic_img_size=True,
        )
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.which_features = which_features
        # DINO draws cls_token from a truncated normal (std .02); timm uses std 1e-6.
        trunc_normal_(self.cls_token, std=0.02)
        self._qkv = None
        self.blocks[-1].attn.qkv.register_forward_hook(self._keep_qkv)

    def _keep_qkv(self, module, inputs, output):
        self._qkv = output

    def _split_qkv(self) -> torch.Tensor:
        """(B, 1+N, 3D) hooked qkv output -> (3, B, H, 1+N, d), as timm's Attention splits it."""
        qkv, self._qkv = self._qkv, None
        B, T, _ = qkv.shape
        return qkv.reshape(B, T, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Add DINO's position embedding to patch tokens (B, h, w, D) -> (B, 1+h*w, D).

        For a grid other than the trained one, the patch embedding is resized bicubically with the scale factor
        ((h + 0.1) / g, (w + 0.1) / g), no antialias, exactly as DINO's ``interpolate_pos_encoding``.
        """
        B, h, w, D = x.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1), x.reshape(B, h * w, D)], dim=1)
        return self.pos_drop(x + self.interpolate_pos_encoding(h, w))

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Position embedding (1, 1+h*w, D) for an h x w patch grid (DINO's rule)."""
        g = int(math.sqrt(self.pos_embed.shape[1] - 1))
        if h == g and w == g:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        D = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, g, g, D).permute(0, 3, 1, 2)  # (1, D, g, g)
        patch_pos = F.interpolate(patch_pos.float(), scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic")
        if patch_pos.shape[-2:] != (h, w):
            raise RuntimeError(f"position-embedding interpolation gave {tuple(patch_pos.shape[-2:])}, not {(h, w)}")
        patch_pos = patch_pos.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, h * w, D)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """x (B, 3, S, S') -> BackboneOutput(cls (B, D), tokens (B, 1+N, D), keys (B, H, 1+N, d))."""
        tokens = self.forward_features(x)
        qkv = self._split_qkv()
        if self.which_features == "last":
            B, T, D = tokens.shape
            keys = tokens.reshape(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)
        else:
            keys = qkv[QKV_INDEX[self.which_features]]
        return BackboneOutput(cls=tokens[:, 0], tokens=tokens, keys=keys)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S') -> embedded tokens with position (B, 1+N, D), as DINO's ``prepare_tokens``."""
        return self.norm_pre(self._pos_embed(self.patch_embed(x)))

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """Outputs of the last ``n`` blocks, each after the final norm (B, 1+N, D), as DINO returns them."""
        x = self.prepare_tokens(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - n:
                outputs.append(self.norm(x))
        self._qkv = None
        return outputs

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights of the last block (B, H, 1+N, 1+N), softmax(q k^T / sqrt(d))."""
        self.forward_features(x)
        q, k, _ = self._split_qkv()
        return torch.softmax(q @ k.transpose(-2, -1) * self.blocks[-1].attn.scale, dim=-1)


def _vit(arch: str, patch_size: int = 16, drop_path_rate: float = 0.0, which_features: str = "k",
         **kwargs) -> CrOCViT:
    if patch_size not in (8, 16):
        raise ValueError(f"patch_size must be 8 or 16, got {patch_size}")
    return CrOCViT(patch_size=patch_size, drop_path_rate=drop_path_rate, which_features=which_features,
                   **{**ARCH_CONFIGS[arch], **kwargs})  # kwargs may override the config (e.g. depth in tests)


def vit_pico(patch_size: int = 16, drop_path_rate: float = 0.0, which_features: str = "k", **kwargs) -> CrOCViT:
    """ViT-Pico (ours, not in the release): D=128, H=2, depth 4, for CPU-sized experiments."""
    return _vit("vit_pico", patch_size, drop_path_rate, which_features, **kwargs)


def vit_tiny(patch_size: int = 16, drop_path_rate: float = 0.0, which_features: str = "k", **kwargs) -> CrOCViT:
    """ViT-Ti: D=192, H=3, depth 12."""
    return _vit("vit_tiny", patch_size, drop_path_rate, which_features, **kwargs)


def vit_small(patch_size: int = 16, drop_path_rate: float = 0.0, which_features: str = "k", **kwargs) -> CrOCViT:
    """ViT-S: D=384, H=6, depth 12."""
    return _vit("vit_small", patch_size, drop_path_rate, which_features, **kwargs)


def vit_base(patch_size: int = 16, drop_path_rate: float = 0.0, which_features: str = "k", **kwargs) -> CrOCViT:
    """ViT-B: D=768, H=12, depth 12."""
    return _vit("vit_base", patch_size, drop_path_rate, which_features, **kwargs)


def build_backbone(arch: str, **kwargs) -> CrOCViT:
    """Backbone by name (``deit_*`` accepted, see ``canonical_arch``)."""
    return _vit(canonical_arch(arch), **kwargs)
