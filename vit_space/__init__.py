"""ViT search spaces, bench, statistics cache and evaluator. Importing the package sets up glibc's
malloc first (see vit_space.core.malloc): torch's threads would otherwise hold GBs of freed memory, and
every large temporary would cost fresh page faults."""
from vit_space.core.malloc import configure_malloc

configure_malloc()
