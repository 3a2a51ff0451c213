"""The bench and its data: the two search spaces, ViT-Bench-101's records and splits, the proxy
batch (synthetic or read through torchvision)."""
