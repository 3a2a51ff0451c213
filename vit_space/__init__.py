"""ViT search spaces, bench, statistics cache and evaluator. Importing the package caps glibc's
malloc arenas first (see vit_space.malloc): torch's threads would otherwise hold GBs of freed memory."""
from vit_space.malloc import limit_malloc_arenas

limit_malloc_arenas()
