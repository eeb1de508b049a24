"""Evaluation of pretrained backbones: linear-probe and K-means segmentation, DAVIS propagation, cluster pictures.

docs/evaluation.md. Every evaluator loads its backbone through ``models.pretrained`` and extracts features through
``eval.features``; K-means (``eval.kmeans``) and the dense probe (``eval.probe``, ``eval.probe_data``) are libraries
under thin command lines.
"""
