"""Evaluation of pretrained backbones: linear-probe and K-means segmentation, DAVIS propagation, cluster pictures.

docs/evaluation.md. Every evaluator loads its backbone and extracts features through ``eval.features``.
"""
