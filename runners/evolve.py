"""Auto-Prox: evolve a zero-cost proxy for ViTs (the paper's Algorithm 1). With no arguments,
the paper's setting on the AutoFormer bench with the synthetic batch."""
from runners.cli import add_data_options, check_writable_dir, main_guard, parser

from gp.run import evolve
from gp.search import SearchConfig
from vit_space.setup_run import data_setup


@main_guard
def main(argv=None):
    p = parser(__doc__)
    add_data_options(p)
    d = SearchConfig()
    p.add_argument("--search-seed", type=int, help="seed of the search alone (default: --seed); "
                   "varies the search while the batch, split and statistics cache stay the same")
    p.add_argument("--pop", type=int, default=d.pop)
    p.add_argument("--iters", type=int, default=d.iters)
    p.add_argument("--ratio", type=float, default=d.ratio, help="sample pool ratio r")
    p.add_argument("--topk", type=int, default=d.topk, help="k best of the pool")
    p.add_argument("--select", default=d.select, help="topk | tournament")
    p.add_argument("--tournsize", type=int, default=d.tournsize)
    p.add_argument("--mutate", default=d.mutate, help="node | uniform | shrink | insert")
    p.add_argument("--p-node", type=float, default=d.p_node, help="per-node mutation probability")
    p.add_argument("--no-elitism", action="store_true", help="accept the first valid child")
    p.add_argument("--margin", type=float, default=d.margin)
    p.add_argument("--max-tries", type=int, default=d.max_tries)
    p.add_argument("--max-nodes", type=int, default=d.max_nodes)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--aggregate", default="sum", help="sum | mean of per-block values")
    p.add_argument("--out", default="runs/evolve", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.json")
    args = p.parse_args(argv)
    config = SearchConfig(
        pop=args.pop, iters=args.iters, ratio=args.ratio, topk=args.topk, select=args.select,
        tournsize=args.tournsize, mutate=args.mutate, p_node=args.p_node,
        elitism=not args.no_elitism, margin=args.margin, max_tries=args.max_tries,
        max_nodes=args.max_nodes, seed=args.seed if args.search_seed is None else args.search_seed,
        checkpoint_every=max(1, args.checkpoint_every)).validate()
    if args.aggregate not in ("sum", "mean"):
        p.error(f"--aggregate {args.aggregate}: expected sum or mean")
    out = check_writable_dir(args.out, "--out")
    result = evolve(data_setup(args), config, out, args.resume, args.aggregate)
    if not result["finished"]:
        print(f"stopped at iteration {result['iteration']}; continue with --resume")
        return
    print(f"best proxy: {result['formula']}")
    for split in ("search", "test"):
        per = ", ".join(f"{c}: {v['kendall']:.4f}" if v else f"{c}: invalid"
                        for c, v in result[split]["datasets"].items())
        print(f"{split:6s} JCM {result[split]['jcm']:.4f}  (Kendall {per})")
    print(f"written: {out / 'best.json'}, {out / 'history.json'}, {out / 'jcm.png'}")


if __name__ == "__main__":
    main()
