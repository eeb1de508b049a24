"""The ViT architectures by name: a setting, read by the parser, the backbone builder and the evaluators."""

ARCH_CONFIGS = {
    # [new] for small-scale runs on a CPU (docs/algorithm.md section 2; docs/small_scale_evidence.md for why this size)
    "vit_pico": dict(embed_dim=128, num_heads=2, depth=4),
    "vit_tiny": dict(embed_dim=192, num_heads=3, depth=12),
    "vit_small": dict(embed_dim=384, num_heads=6, depth=12),
    "vit_base": dict(embed_dim=768, num_heads=12, depth=12),
}
# The released CLI also accepts deit_* names, which mean the same networks.
ARCH_NAMES = (*ARCH_CONFIGS, "deit_tiny", "deit_small")


def canonical_arch(arch: str) -> str:
    """``deit_*`` -> ``vit_*`` as the released code maps them; ValueError for an unknown name."""
    name = arch.replace("deit", "vit")
    if name not in ARCH_CONFIGS:
        raise ValueError(f"--arch: unknown architecture {arch!r}; choose one of {sorted(ARCH_CONFIGS)}")
    return name
