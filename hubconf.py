"""torch.hub entry points for the released CrOC ViT-S/16 and for any CrOC checkpoint (the code lives in models/hub.py).

    import torch
    model = torch.hub.load("<owner>/<repo>", "croc_vits16")                  # teacher backbone, COCO weights
    model = torch.hub.load("<owner>/<repo>", "croc_vits16", weights="in1k")  # "coco", "coco+", "in1k" or a file
    net = torch.hub.load("<owner>/<repo>", "croc_vits16_full")               # backbone + projection head
    model = torch.hub.load("/path/to/clone", "croc_vits16", source="local", weights="checkpoint.pth")
    model = torch.hub.load("/path/to/clone", "croc_vit", source="local", weights="run/checkpoint.pth")  # any --arch
"""

from models import croc_vit, croc_vits16, croc_vits16_full

dependencies = ["torch", "timm"]
__all__ = ["croc_vit", "croc_vits16", "croc_vits16_full"]
