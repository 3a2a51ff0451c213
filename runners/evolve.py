"""Auto-Prox: evolve a zero-cost proxy for ViTs (the paper's Algorithm 1). With no arguments,
the paper's setting (--budget paper) on the AutoFormer bench with the synthetic batch. Search
flags left out take their value from --budget."""
from runners.cli import add_data_options, main_guard, parser, prepare_out_dir

from gp.budgets import BUDGETS, budget_config, describe_presets
from gp.report import format_result
from gp.run import SEARCH_PARTS, evolve
from vit_space.setup_run import data_setups

RUN_FILES = ("checkpoint.json", "history.json", "best.json", "jcm.png", "pareto.json", "bags")  # what a run writes


@main_guard
def main(argv=None):
    p = parser(__doc__)
    add_data_options(p)
    p.add_argument("--budget", default="paper", help=f"preset of the search flags: "
                   f"{' | '.join(BUDGETS)} (see gp/budgets.py)")
    p.add_argument("--strategy", help="evolve | random (random trees from the same generator "
                   "until --evals evaluations; the same final choice; default from --budget: "
                   f"{describe_presets('strategy')})")
    p.add_argument("--search-seed", type=int, help="seed of the search alone (default: --seed); "
                   "varies the search while the batch, split and statistics cache stay the same")
    for flag, kind, text in (
            ("--pop", int, "population P"), ("--iters", int, "iterations T"),
            ("--evals", int, "stop after this many evaluated distinct trees (0: no limit)"),
            ("--patience", int, "stop once this many iterations in a row evaluated no new tree "
             "(0: never)"),
            ("--ratio", float, "sample pool ratio r"), ("--topk", int, "k best of the pool"),
            ("--select", str, "topk | tournament | double (DEAP's double tournament) | nsga2"),
            ("--tournsize", int, "tournament size"),
            ("--mutate", str, "node | uniform | shrink | insert"),
            ("--p-node", float, "per-node mutation probability"),
            ("--cxpb", float, "probability of typed subtree crossover (else mutation)"),
            ("--tie-tol", float, "with --parsimony: JCM grid within which the smaller tree wins"),
            ("--margin", float, "elitism-preserve margin m"),
            ("--max-tries", int, "mutations per iteration at most"),
            ("--max-nodes", int, "largest tree"), ("--hof", int, "hall of fame size"),
            ("--folds", int, "folds of the cross-validated JCM (search split only)"),
            ("--choose", str, "best (Algorithm 1: best JCM) | cv (best fold mean - 1 s.e.) | ensemble "
             "(rank-average of the --ensemble best distinct proxies) | bagged (rank-average of the "
             "answers of --bags searches on bootstrap resamples of the search archs)"),
            ("--ensemble", int, "members of the --choose ensemble answer"),
            ("--bags", int, "--choose bagged: searches, each of --iters iterations on its own resample"),
            ("--checkpoint-every", int, "iterations between checkpoints")):
        field = flag[2:].replace("-", "_")
        p.add_argument(flag, type=kind, help=f"{text} (default from --budget: {describe_presets(field)})")
    p.add_argument("--with", dest="with_member", choices=["params"],
                   help="--choose ensemble or bagged: #params (of the blocks) joins the members")
    p.add_argument("--no-elitism", action="store_true", help="accept the first valid child")
    p.add_argument("--parsimony", action="store_true", default=None,
                   help=f"size tie-break within --tie-tol (default from --budget: {describe_presets('parsimony')})")
    p.add_argument("--allow-phenotype-duplicates", action="store_true",
                   help="keep children that rank the search archs exactly as a member does")
    p.add_argument("--aggregate", default="sum", help="sum | mean of per-block values")
    p.add_argument("--split", default="split", choices=SEARCH_PARTS,
                   help="split: search on the seeded 60%% (--split-seed), test on the other 40%%; all: "
                   "search on every record, no test part (the final fit of a procedure judged on splits)")
    p.add_argument("--out", help="output directory (default: a fresh runs/evolve, runs/evolve-2, ...)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.json "
                   "(without --out: the newest runs/evolve[-N])")
    p.add_argument("--force", action="store_true", help="overwrite the run an --out holds")
    args = p.parse_args(argv)
    given = {name: getattr(args, name) for name in (  # SearchConfig fields named like their flags
        "pop", "iters", "evals", "patience", "ratio", "topk", "select", "tournsize", "mutate", "p_node",
        "cxpb", "tie_tol", "margin", "max_tries", "max_nodes", "hof", "folds", "choose", "checkpoint_every",
        "strategy", "parsimony", "ensemble", "bags") if getattr(args, name) is not None}
    if args.with_member:
        given["with_params"] = True
    if args.no_elitism:
        given["elitism"] = False
    if args.allow_phenotype_duplicates:
        given["unique_phenotypes"] = False
    given["seed"] = args.seed if args.search_seed is None else args.search_seed
    config = budget_config(args.budget, **given)
    config.checkpoint_every = max(1, config.checkpoint_every)
    config.validate()
    if args.aggregate not in ("sum", "mean"):
        p.error(f"--aggregate {args.aggregate}: expected sum or mean")
    setups = data_setups(args)
    out = prepare_out_dir(args.out, "runs/evolve", RUN_FILES, args.resume, args.force)
    result = evolve(setups, config, out, args.resume, args.aggregate, search_part=args.split)
    print(format_result(result, out))


if __name__ == "__main__":
    main()
