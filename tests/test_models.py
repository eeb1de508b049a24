import math

import pytest
import torch
import torch.nn.functional as F

from models import CrOCHead, CrOCNetwork, build_backbone, vit_base, vit_pico, vit_small, vit_tiny

DINO_TOP_KEYS = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
                 "norm.bias"}
DINO_BLOCK_KEYS = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                   "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
                   "mlp.fc2.bias"}


def _small(factory, patch_size, **kw):
    """Full-width model with 2 blocks: same per-block shapes, fast on CPU."""
    return factory(patch_size=patch_size, depth=2, **kw).eval()


@pytest.mark.parametrize("factory,dim,heads", [(vit_tiny, 192, 3), (vit_small, 384, 6), (vit_base, 768, 12)])
@pytest.mark.parametrize("patch_size", [16, 8])
@pytest.mark.parametrize("size", [224, 96])
def test_shapes(factory, dim, heads, patch_size, size):
    model = _small(factory, patch_size)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    n = (size // patch_size) ** 2
    assert out.cls.shape == (2, dim)
    assert out.tokens.shape == (2, 1 + n, dim)
    assert out.keys.shape == (2, heads, 1 + n, dim // heads)
    assert model.pos_embed.shape == (1, 1 + (224 // patch_size) ** 2, dim)


def test_pico_is_four_blocks_of_width_128():
    model = vit_pico(patch_size=8).eval()
    assert len(model.blocks) == 4 and model.embed_dim == 128 and model.num_heads == 2
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 48))
    assert out.tokens.shape == (2, 1 + 36, 128) and out.keys.shape == (2, 2, 1 + 36, 64)
    assert build_backbone("vit_pico", patch_size=8).state_dict().keys() == model.state_dict().keys()


def test_state_dict_names_are_dino():
    sd = vit_tiny(depth=12).state_dict()
    expected = DINO_TOP_KEYS | {f"blocks.{i}.{k}" for i in range(12) for k in DINO_BLOCK_KEYS}
    assert set(sd) == expected


@pytest.mark.parametrize("which,index", [("q", 0), ("k", 1), ("v", 2)])
def test_features_equal_qkv_of_norm1_by_hand(which, index):
    torch.manual_seed(0)
    model = _small(vit_tiny, 16, which_features=which)
    x = torch.randn(2, 3, 64, 80)  # non-square
    captured = {}
    model.blocks[-1].norm1.register_forward_hook(lambda m, i, o: captured.setdefault("in", o))
    with torch.no_grad():
        out = model(x)
        attn = model.blocks[-1].attn
        qkv = captured["in"] @ attn.qkv.weight.T + attn.qkv.bias  # (B, T, 3D)
    B, T, _ = qkv.shape
    D, H = model.embed_dim, model.num_heads
    expected = qkv[..., index * D:(index + 1) * D].reshape(B, T, H, D // H).permute(0, 2, 1, 3)
    torch.testing.assert_close(out.keys, expected, rtol=1e-5, atol=1e-5)
    assert out.cls.shape == (2, D) and torch.equal(out.cls, out.tokens[:, 0])


def test_which_features_last_splits_tokens_per_head():
    model = _small(vit_tiny, 16, which_features="last")
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(out.keys.transpose(1, 2).flatten(2), out.tokens)


def test_final_outputs_match_timm_forward_and_intermediate_layers():
    model = _small(vit_tiny, 16)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = model(x)
        layers = model.get_intermediate_layers(x, n=2)
        attn = model.get_last_selfattention(x)
    assert len(layers) == 2
    torch.testing.assert_close(layers[-1], out.tokens)
    assert attn.shape == (2, 3, 10, 10)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 10))


def dino_interpolate(pos_embed, h, w):
    """DINO's interpolate_pos_encoding restated (rows scaled by (h + 0.1) / g)."""
    g = int(math.sqrt(pos_embed.shape[1] - 1))
    patch = pos_embed[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic")
    return torch.cat([pos_embed[:, :1], patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)


@pytest.mark.parametrize("h,w", [(28, 28), (6, 6), (4, 7)])
def test_position_embedding_interpolation_is_dino(h, w):
    model = _small(vit_tiny, 16)
    torch.testing.assert_close(model.interpolate_pos_encoding(h, w), dino_interpolate(model.pos_embed, h, w))
    assert model.interpolate_pos_encoding(14, 14) is model.pos_embed


def test_dino_initialisation():
    torch.manual_seed(0)
    model = vit_small(depth=2)
    assert 0.01 < model.cls_token.std() < 0.03  # timm would give 1e-6
    assert 0.01 < model.pos_embed.std() < 0.03
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)


def test_arch_names_and_errors():
    assert build_backbone("deit_tiny", depth=1).embed_dim == 192
    with pytest.raises(ValueError, match="--arch"):
        build_backbone("resnet50")
    with pytest.raises(ValueError, match="patch_size"):
        vit_tiny(patch_size=14)


def test_head_layout_and_frozen_gains():
    head = CrOCHead(192, out_dim=64, out_dim_c=32)
    keys = set(head.state_dict())
    assert {"mlp.0.weight", "mlp.2.weight", "mlp.4.weight", "last_layer.parametrizations.weight.original0",
            "last_layer_c.parametrizations.weight.original1"} <= keys
    for layer in (head.last_layer, head.last_layer_c):
        gain = layer.parametrizations.weight.original0
        assert torch.all(gain == 1) and not gain.requires_grad
    x = torch.randn(5, 192)
    assert head(x).shape == (5, 64) and head(x, cluster=True).shape == (5, 32)
    # Rows of the effective weight have norm = gain = 1.
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(64))
    bn = CrOCHead(192, 64, 32, use_bn=True, norm_last_layer=False)
    assert "mlp.1.running_mean" in bn.state_dict() and "mlp.6.weight" in bn.state_dict()
    assert bn.last_layer.parametrizations.weight.original0.requires_grad


def test_network_groups_resolutions_and_pools_clusters():
    net = CrOCNetwork(_small(vit_tiny, 16), CrOCHead(192, 16, 8)).eval()
    crops = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    out = net(crops, cluster_pool=lambda tokens: torch.stack([tokens[:, 0], tokens[:, 1]]))
    assert out.cls_logits.shape == (6, 16)
    assert out.backbone.tokens.shape == (4, 5, 192)
    assert out.cluster_logits.shape == (8, 8)


def test_head_leaves_invalid_cluster_rows_out_of_batchnorm_statistics():
    torch.manual_seed(0)
    head = CrOCHead(12, 16, 8, use_bn=True).train()
    x = torch.randn(6, 12)
    valid = torch.tensor([True, False, True, True, False, True])
    out = head(x, cluster=True, valid=valid)
    torch.testing.assert_close(out[valid], head(x[valid], cluster=True))  # statistics of the valid rows only
    assert out[~valid].eq(0).all()
    plain = CrOCHead(12, 16, 8).eval()
    torch.testing.assert_close(plain(x, cluster=True, valid=valid), plain(x, cluster=True))  # no BN: no effect
