"""Fill the statistics cache for a space, its bench and data sets; print what was stored."""
import time

from runners.cli import add_data_options, main_guard, parser

from vit_space.setup_run import data_setup
from vit_space.stats.parallel import fill_cache


@main_guard
def main(argv=None):
    p = parser(__doc__)
    add_data_options(p)
    args = p.parse_args(argv)
    s = data_setup(args)
    items = [(s.bench.space, r["arch"], d) for d in s.datasets for r in s.bench.records]
    start = time.perf_counter()
    extracted = fill_cache(s.cache, items, s.cfg, s.n_jobs, s.backend, s.scheduler, s.progress)
    seconds = time.perf_counter() - start
    size = sum(s.cache.path(*item, s.cfg).stat().st_size for item in items)
    print(f"entries: {len(items)} ({extracted} extracted, {len(items) - extracted} from cache)")
    print(f"bytes: {size} ({size / 2**30:.2f} GiB) in {s.cache.root}")
    print(f"seconds: {seconds:.1f}")


if __name__ == "__main__":
    main()
