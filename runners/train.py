"""Train a ViT of a search space (or the CIFAR ResNet-56 teacher) on a real data set with a named
recipe, optionally distilled from a teacher; resumable."""
from runners.cli import main_guard, parser

from vit_space.core.errors import BadInput
from vit_space.train.distill import DISTILL_MODES
from vit_space.train.recipes import RECIPES
from vit_space.train.training import MODELS, load_arch_file, train

# recipe settings a flag may override: (flag, Recipe field, type); unset = the recipe's value
OVERRIDES = [("--epochs", "epochs", int), ("--batch-size", "batch_size", int), ("--lr", "lr", float),
             ("--min-lr", "min_lr", float), ("--warmup-epochs", "warmup_epochs", int),
             ("--warmup-lr", "warmup_lr", float), ("--weight-decay", "weight_decay", float),
             ("--drop-path", "drop_path", float), ("--label-smoothing", "label_smoothing", float),
             ("--mixup", "mixup", float), ("--cutmix", "cutmix", float), ("--aa", "aa", str),
             ("--reprob", "reprob", float), ("--ema-decay", "ema_decay", float)]


def _blocks(text):
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise BadInput(f"--distill-blocks {text}: expected comma-separated block indices, e.g. 0,6,11") from None


@main_guard
def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--model", default="vit", help=f"{' | '.join(MODELS)} (resnet56: the CIFAR teacher)")
    p.add_argument("--space", default="autoformer", help="autoformer | pit")
    p.add_argument("--arch", help='JSON file: {"arch": {...}}, the bare arch dict, or the --json of '
                   "runners/search.py (its top-1, or --rank K); needed for --model vit")
    p.add_argument("--rank", type=int, default=1, help="which arch of a search result (1 = the best)")
    p.add_argument("--dataset", required=True, help="c100 | flowers | chaoyang | imagenet")
    p.add_argument("--data-root", required=True, help="the data set's own root (see docs/bench.md)")
    p.add_argument("--out", required=True, help="directory for checkpoint.pt and log.json")
    p.add_argument("--recipe", default="bench", help=" | ".join(RECIPES))
    for flag, field, kind in OVERRIDES:
        p.add_argument(flag, type=kind, dest=field, help="default: the recipe's"
                       + ("; 'none' turns RandAugment off" if field == "aa" else ""))
    p.add_argument("--img-size", type=int, help="default 224 (ViT) or 32 (resnet56)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--distill", help=f"{' | '.join(DISTILL_MODES)} (with --teacher)")
    p.add_argument("--teacher", help="teacher: a checkpoint of this trainer, or a ViT state dict file")
    p.add_argument("--teacher-arch", help="teacher arch JSON (needed for a bare ViT state dict)")
    p.add_argument("--distill-alpha", type=float, default=0.5, help="--distill logit: weight of the KL term")
    p.add_argument("--distill-tau", type=float, default=1.0, help="--distill logit: temperature")
    p.add_argument("--distill-blocks", type=_blocks, help="--distill inter: student blocks matched "
                   "to teacher stages 1-3 (default: see docs/search-and-training.md)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    overrides = {field: getattr(args, field) for _, field, _ in OVERRIDES}
    if overrides["aa"] is not None and overrides["aa"].lower() == "none":
        overrides["aa"] = ""
    if args.model == "vit" and args.arch is None:
        raise BadInput("--arch: required for --model vit (an arch JSON or a search result)")
    arch = load_arch_file(args.space, args.arch, rank=args.rank) if args.arch else None
    teacher_arch = None
    if args.teacher_arch:
        teacher_arch = load_arch_file(args.space, args.teacher_arch, "--teacher-arch")
    result = train(args.space, arch, args.dataset, args.data_root, args.out, recipe=args.recipe,
                   overrides=overrides, img_size=args.img_size, seed=args.seed, device=args.device,
                   resume=args.resume, model=args.model, distill=args.distill, teacher=args.teacher,
                   teacher_arch=teacher_arch, distill_alpha=args.distill_alpha,
                   distill_tau=args.distill_tau, distill_blocks=args.distill_blocks,
                   workers=args.workers, progress=not args.quiet)
    print(f"best top-1 {result['best_top1']:.2f}% (final {result['final_top1']:.2f}%, "
          f"{len(result['epochs'])} epochs, log {result['log']})")


if __name__ == "__main__":
    main()
