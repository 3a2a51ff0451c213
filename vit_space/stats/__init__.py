"""Model -> ViT statistics: one forward/backward per (arch, data set), its sketched per-block
statistics, their cache and stacked files, the typed terminals trees read, parallel extraction."""
