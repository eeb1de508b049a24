"""Floors and a ceiling for the dense probe: what a linear probe reads without learning, and with labels.

docs/evaluation.md section 4. Every reference below goes through the same linear probe as a pretrained backbone
(``eval.probe.evaluate_features``), on the same pool and val images, so its score is directly comparable:

* ``majority``: a constant feature, so the probe can only learn the class prior and predicts the majority class;
* ``mean_colour``: the mean RGB of each patch;
* ``raw_pixels``: the p x p x 3 pixels of each patch;
* ``fft``: |FFT| of each patch's grey levels (mean removed), a fixed, phase-invariant, non-linear texture feature;
* ``supervised``: the same ViT trained from scratch WITH the patch labels (soft class fractions, the probe's own
  targets) for the same number of images as a pretraining run, then frozen and probed like the others. This is what
  the architecture can reach on the task at that budget: the ceiling an SSL run is measured against.
"""

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from croc_utils.synthetic import SyntheticScenes
from croc_utils.transforms import GLOBAL_CROPS_SCALE, sample_crop_box
from eval.probe import patch_class_fractions, soft_cross_entropy
from eval.seg_transforms import to_tensors
from models import build_backbone

FLOORS = ("majority", "mean_colour", "raw_pixels", "fft")


def _patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, S, S') -> (N, h, w, C, p, p) non-overlapping patches."""
    n, c, s, s2 = images.shape
    return images.reshape(n, c, s // patch, patch, s2 // patch, patch).permute(0, 2, 4, 1, 3, 5)


def floor_features(name: str, images: torch.Tensor, patch: int) -> torch.Tensor:
    """Feature maps (N, D, S/p, S'/p) of a fixed reference ``name`` (one of FLOORS) for images (N, 3, S, S')."""
    x = images.float()
    n, _, s, s2 = x.shape
    h, w = s // patch, s2 // patch
    if name == "majority":
        return x.new_zeros(n, 1, h, w)
    if name == "mean_colour":
        return F.avg_pool2d(x, patch)
    if name == "raw_pixels":
        return _patches(x, patch).reshape(n, h, w, -1).permute(0, 3, 1, 2)
    if name == "fft":
        grey = _patches(x.mean(1, keepdim=True), patch)[:, :, :, 0]  # (N, h, w, p, p)
        spectrum = torch.fft.fft2(grey - grey.mean((-2, -1), keepdim=True)).abs()
        return spectrum.reshape(n, h, w, -1).permute(0, 3, 1, 2)
    raise ValueError(f"unknown floor {name!r} (one of {', '.join(FLOORS)})")


# ===== the supervised ceiling =====

@dataclass(frozen=True)
class SupervisedConfig:
    """Training of the ceiling: AdamW, linear warm-up then cosine, on random resized crops of labelled scenes."""

    steps: int
    batch_size: int
    crop_size: int
    lr: float = 1e-3
    weight_decay: float = 0.04
    warmup_steps: int = 0
    crop_scale: tuple[float, float] = GLOBAL_CROPS_SCALE
    seed: int = 0


def _crop_batch(images: torch.Tensor, masks: torch.Tensor, cfg: SupervisedConfig,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crops (bilinear image, nearest mask) and flips of a batch: (B, 3, c, c), (B, c, c)."""
    size = cfg.crop_size
    out_images, out_masks = [], []
    for image, mask in zip(images, masks):
        box = sample_crop_box(image.shape[-2], image.shape[-1], cfg.crop_scale, generator=generator)
        img = image[:, box.top:box.top + box.height, box.left:box.left + box.width]
        msk = mask[box.top:box.top + box.height, box.left:box.left + box.width]
        img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        msk = F.interpolate(msk[None, None].float(), size=(size, size), mode="nearest")[0, 0].to(mask.dtype)
        if bool(torch.rand(1, generator=generator) < 0.5):
            img, msk = img.flip(-1), msk.flip(-1)
        out_images.append(img)
        out_masks.append(msk)
    return torch.stack(out_images), torch.stack(out_masks)


def train_supervised(arch: str, patch_size: int, scenes: SyntheticScenes, cfg: SupervisedConfig, *,
                     device: str | torch.device = "cpu", log_every: int = 0) -> tuple[nn.Module, dict]:
    """A ViT trained from scratch on the scenes' patch labels, with a linear head on its last-layer patch tokens.

    The loss is the dense probe's: soft-label cross-entropy of each patch against the class fractions of its pixels,
    weighted by its labelled pixels. Returns the backbone (eval mode) and {"seconds", "final_loss", "images_seen"}.
    """
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    pairs = [to_tensors(*scenes[i]) for i in range(len(scenes))]  # normalised (3, S, S), mask (S, S)
    images = torch.stack([image for image, _ in pairs])
    masks = torch.stack([mask.to(torch.uint8) for _, mask in pairs])
    n_classes = len(scenes.classes)
    model = build_backbone(arch, patch_size=patch_size).to(device)
    head = nn.Linear(model.embed_dim, n_classes).to(device)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    grid = cfg.crop_size // patch_size
    t0, loss = time.time(), torch.tensor(float("nan"))  # the last step's loss, reported
    model.train()
    for step in range(cfg.steps):
        warm = (step + 1) / cfg.warmup_steps if step < cfg.warmup_steps else 1.0
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        idx = torch.randint(len(images), (cfg.batch_size,), generator=generator)
        x, y = _crop_batch(images[idx], masks[idx], cfg, generator)
        targets, counts = patch_class_fractions(y, (grid, grid), n_classes)  # (B*g*g, C), (B*g*g,)
        tokens = model.get_intermediate_layers(x.to(device), 1)[0][:, 1:]  # (B, g*g, D)
        loss = soft_cross_entropy(head(tokens.reshape(-1, tokens.shape[-1])), targets.to(device), counts.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        if log_every and step % log_every == 0:
            print(f"[supervised] step {step}/{cfg.steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)",
                  flush=True)
    return model.eval(), {"seconds": time.time() - t0, "final_loss": loss.item(),
                          "images_seen": cfg.steps * cfg.batch_size}
