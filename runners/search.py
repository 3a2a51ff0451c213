"""Training-free ViT architecture search: the archs of a space a proxy scores best, within a
parameter (and optionally FLOP) budget of the full-size model. Scores on the first --datasets entry;
each candidate costs only what the proxy needs (#params and FLOPs are counted, not built)."""
from runners.cli import add_data_options, check_writable_file, main_guard, parser

from vit_space.core.atomic import write_json_atomic
from vit_space.data.bench import column_for
from vit_space.data.datasets import NUM_CLASSES
from vit_space.scoring.proxies import resolve_proxy
from vit_space.search.candidates import ArchScorer
from vit_space.search.constraints import Constraints
from vit_space.search.report import format_search_table, format_within_table, within_bench
from vit_space.search.strategies import TIE_KEYS, ArchSearchConfig, search_archs
from vit_space.setup_run import data_setup


@main_guard
def main(argv=None):
    p = parser(__doc__)
    add_data_options(p)
    d = ArchSearchConfig()
    p.add_argument("--proxy", required=True, help="a baseline name, a discovered proxy name or a formula")
    p.add_argument("--max-params", type=float, required=True, help="parameter budget, e.g. 6e6")
    p.add_argument("--max-flops", type=float, help="FLOP budget of one 224 px image, e.g. 3e9")
    p.add_argument("--strategy", default=d.strategy, help="random | evolve")
    p.add_argument("--samples", type=int, default=d.samples, help="archs scored by --strategy random")
    p.add_argument("--pop", type=int, default=d.pop, help="population of --strategy evolve")
    p.add_argument("--gens", type=int, default=d.gens, help="generations of --strategy evolve")
    p.add_argument("--search-seed", type=int, help="seed of the search alone (default: --seed); "
                   "varies the search while the batch, split and statistics cache stay the same")
    p.add_argument("--top", type=int, default=d.top, help="archs reported")
    p.add_argument("--tie-key", default=d.tie_key, help=f"second key that breaks score ties: "
                   f"{' | '.join(TIE_KEYS)} (params, flops: the larger model first)")
    p.add_argument("--keep-stats", action="store_true", help="store candidates' statistics in the "
                   "statistics cache (default: kept in memory for the run only)")
    p.add_argument("--aggregate", default="sum", help="sum | mean of per-block values (trees)")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--within-bench", action="store_true",
                   help="also rank the bench's --split archs and report the top-1's true accuracy")
    p.add_argument("--split", default="test", help="bench split of --within-bench: val | test | all")
    args = p.parse_args(argv)
    if args.aggregate not in ("sum", "mean"):
        p.error(f"--aggregate {args.aggregate}: expected sum or mean")
    proxy = resolve_proxy(args.proxy)
    config = ArchSearchConfig(strategy=args.strategy, samples=args.samples, pop=args.pop,
                              gens=args.gens, top=args.top, tie_key=args.tie_key,
                              seed=args.seed if args.search_seed is None else args.search_seed).validate()
    json_path = check_writable_file(args.json, "--json") if args.json else None
    setup = data_setup(args)
    if args.within_bench:  # validate before any work: the split and its accuracies
        indices = setup.bench.split(args.split, setup.split_seed)
        for dataset in setup.datasets:
            setup.bench.accuracies(indices, column_for(dataset, setup.acc, setup.bench.space))
    constraints = Constraints(args.max_params, args.max_flops, num_classes=NUM_CLASSES[setup.datasets[0]])
    scorer = ArchScorer.from_setup(proxy, setup, args.aggregate, keep_stats=args.keep_stats)
    result = search_archs(scorer, constraints, config)
    print(format_search_table(result))
    if args.within_bench:
        result["within_bench"] = within_bench(setup, proxy, args.split, args.aggregate, args.tie_key)
        print()
        print(format_within_table(result["within_bench"]))
    if json_path:
        write_json_atomic(json_path, result)
        print(f"written: {json_path}")


if __name__ == "__main__":
    main()
