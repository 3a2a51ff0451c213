"""Statistics -> scores -> JCM: a tree's per-arch scores over the stacked statistics, the
hand-crafted baselines, named proxies, ranking the bench."""
