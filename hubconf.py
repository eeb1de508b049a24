"""torch.hub entry points for the released CrOC ViT-S/16 and for any CrOC checkpoint (the code lives in models/hub.py).

    import torch
    model = torch.hub.load(".", "croc_vits16", source="local")                  # teacher backbone, COCO weights
    model = torch.hub.load(".", "croc_vits16", source="local", weights="in1k")  # "coco", "coco+", "in1k" or a file
    net = torch.hub.load(".", "croc_vits16_full", source="local")               # backbone + projection head
    model = torch.hub.load(".", "croc_vit", source="local", weights="run/checkpoint.pth")  # any --arch

"." is the root of a clone of this repository (any path to it works); docs/checkpoints.md has the details.
"""

from models import croc_vit, croc_vits16, croc_vits16_full

dependencies = ["torch", "timm"]
__all__ = ["croc_vit", "croc_vits16", "croc_vits16_full"]
