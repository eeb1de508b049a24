"""The CrOC projection head and the backbone+head network (docs/algorithm.md section 2)."""

from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .vision_transformer import BackboneOutput


class CrOCHead(nn.Module):
    """Shared MLP, L2 normalisation, then ``last_layer`` (CLS, out_dim) or ``last_layer_c`` (clusters, out_dim_c).

    MLP: Linear(D, 2048)-GELU-Linear(2048, 2048)-GELU-Linear(2048, 256), BatchNorm after the hidden linears only
    with ``use_bn``. The output layers are weight-normalised linears without bias whose gains start at 1 and are
    frozen when ``norm_last_layer``. Parameter names match DINO's (``mlp.0``, ``mlp.2``, ``mlp.4``, ...).
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, out_dim_c: int = 8192, use_bn: bool = False,
                 norm_last_layer: bool = True, *, nlayers: int = 3, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        nlayers = max(nlayers, 1)
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < nlayers - 1:
                layers += [nn.BatchNorm1d(d_out)] if use_bn else []
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = self._weight_normed(bottleneck_dim, out_dim, norm_last_layer)
        self.last_layer_c = self._weight_normed(bottleneck_dim, out_dim_c, norm_last_layer)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @staticmethod
    def _weight_normed(in_dim: int, out_dim: int, freeze_gain: bool) -> nn.Module:
        layer = weight_norm(nn.Linear(in_dim, out_dim, bias=False))
        gain = layer.parametrizations.weight.original0  # (out_dim, 1)
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not freeze_gain)
        return layer

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(M, D) -> (M, 256): MLP then L2 normalisation."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, x: torch.Tensor, cluster: bool = False, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(M, D) -> logits (M, out_dim), or (M, out_dim_c) through ``last_layer_c`` when ``cluster``.

        ``valid`` (M,) bool marks the rows that count. It only matters with BatchNorm, whose batch statistics must
        not see the other rows: they are then left out (a host sync) and their logits are 0.
        """
        if valid is not None and any(isinstance(m, nn.BatchNorm1d) for m in self.mlp):
            out = self(x[valid], cluster)
            return out.new_zeros(x.shape[0], out.shape[1]).index_copy(0, valid.nonzero().flatten(), out)
        x = self.project(x)
        return self.last_layer_c(x) if cluster else self.last_layer(x)


class NetworkOutput(NamedTuple):
    """cls_logits (C*B, out_dim), one chunk per crop in input order; cluster_logits (2M, out_dim_c) or None;
    backbone: the BackboneOutput of the global crops (the first resolution group)."""

    cls_logits: torch.Tensor
    cluster_logits: Optional[torch.Tensor]
    backbone: BackboneOutput


class CrOCNetwork(nn.Module):
    """Backbone + head, DINO's MultiCropWrapper for CrOC (state-dict prefixes ``backbone.`` and ``head.``).

    Crops of equal resolution go through the backbone together. When ``cluster_pool`` is given, it maps the
    global crops' last-layer tokens (2B, 1+N, D) to the two views' cluster tokens (2, M, D), which are projected
    through ``last_layer_c`` in the same forward (so that DDP sees every parameter used); ``cluster_valid`` (M,)
    marks the slots that hold a cluster (see ``CrOCHead.forward``).
    """

    def __init__(self, backbone: nn.Module, head: CrOCHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor],
                cluster_pool: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                cluster_valid: Optional[torch.Tensor] = None) -> NetworkOutput:
        sizes = torch.tensor([c.shape[-1] for c in crops])
        group_ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0).tolist()
        cls, first, start = [], None, 0
        for end in group_ends:
            out = self.backbone(torch.cat(list(crops[start:end])))
            first = out if first is None else first
            cls.append(out.cls)
            start = end
        cls_logits = self.head(torch.cat(cls))
        cluster_logits = None
        if cluster_pool is not None:
            valid = None if cluster_valid is None else cluster_valid.repeat(2)
            cluster_logits = self.head(cluster_pool(first.tokens).flatten(0, 1), cluster=True, valid=valid)
        return NetworkOutput(cls_logits, cluster_logits, first)
