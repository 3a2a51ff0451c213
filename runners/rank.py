"""Rank ViT-Bench-101 archs with zero-cost proxies: Kendall, Spearman, Pearson per data set, JCM."""
from runners.cli import add_data_options, check_writable_dir, check_writable_file, main_guard, parser

from vit_space.core.atomic import write_json_atomic
from vit_space.scoring.proxies import resolve_proxies
from vit_space.scoring.ranking import check_scores_path, format_table, rank
from vit_space.setup_run import data_setup


@main_guard
def main(argv=None):
    p = parser(__doc__)
    add_data_options(p)
    p.add_argument("--proxy", default="all", help="a baseline name, a discovered proxy name, a "
                   "formula, several separated by ';', or 'all'")
    p.add_argument("--split", default="test", help="val (the 60%% search split) | test | all")
    p.add_argument("--aggregate", default="sum", help="sum | mean of per-block values (trees)")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--plot", help="directory for score-vs-accuracy scatter plots")
    p.add_argument("--scores", help="write every arch's score and accuracy per data set and proxy "
                   "here: FILE.csv or FILE.json")
    args = p.parse_args(argv)
    proxies = resolve_proxies(args.proxy)
    json_path = check_writable_file(args.json, "--json") if args.json else None
    plot_dir = check_writable_dir(args.plot, "--plot") if args.plot else None
    scores_path = check_writable_file(check_scores_path(args.scores), "--scores") if args.scores else None
    setup = data_setup(args)
    setup.bench.split(args.split)  # validate before any work
    report = rank(setup, proxies, args.split, args.aggregate, plot_dir=plot_dir, scores_path=scores_path)
    print(format_table(report))
    if json_path:
        write_json_atomic(json_path, report)


if __name__ == "__main__":
    main()
