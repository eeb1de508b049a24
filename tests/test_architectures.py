"""Tests of croc_utils/architectures.py: the architecture table the parser, the backbone builder and the evaluators
share, and the released deit_* aliases."""

import pytest

from croc_utils.architectures import ARCH_CONFIGS, ARCH_NAMES, canonical_arch
from models import build_backbone


def test_names_and_aliases():
    assert set(ARCH_NAMES) == set(ARCH_CONFIGS) | {"deit_tiny", "deit_small"}
    assert [canonical_arch(name) for name in ("deit_tiny", "deit_small", "vit_pico", "vit_base")] == [
        "vit_tiny", "vit_small", "vit_pico", "vit_base"]
    with pytest.raises(ValueError, match=r"--arch: unknown architecture 'vit_huge'; choose one of \['vit_base'"):
        canonical_arch("vit_huge")


@pytest.mark.parametrize("name", sorted(ARCH_CONFIGS))
def test_the_table_is_what_the_builder_builds(name):
    config = ARCH_CONFIGS[name]
    backbone = build_backbone(name, depth=1) if config["depth"] > 4 else build_backbone(name)
    assert (backbone.embed_dim, backbone.num_heads) == (config["embed_dim"], config["num_heads"])
    if config["depth"] <= 4:
        assert len(backbone.blocks) == config["depth"]
