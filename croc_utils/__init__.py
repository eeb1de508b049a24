"""CrOC training utilities: parser, transforms, datasets, clustering, loss, distributed, checkpoint, logging."""
