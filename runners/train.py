"""Train one ViT of a search space on a real data set (optionally distilled from a teacher)."""
from runners.cli import main_guard, parser

from vit_space.training import load_arch_file, train


@main_guard
def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--space", default="autoformer", help="autoformer | pit")
    p.add_argument("--arch", required=True, help='JSON file: {"arch": {...}} or the bare arch dict')
    p.add_argument("--dataset", required=True, help="c100 | flowers | chaoyang | imagenet")
    p.add_argument("--data-root", required=True, help="the data set's own root, in the authors' layout")
    p.add_argument("--out", required=True, help="directory for checkpoint.pt and log.json")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=int, default=5)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--teacher", help="teacher: a checkpoint of this trainer or a state dict file")
    p.add_argument("--teacher-arch", help="teacher arch JSON (needed for a bare state dict)")
    p.add_argument("--distill-alpha", type=float, default=0.5)
    p.add_argument("--distill-tau", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    arch = load_arch_file(args.space, args.arch)
    teacher_arch = None
    if args.teacher_arch:
        teacher_arch = load_arch_file(args.space, args.teacher_arch, "--teacher-arch")
    result = train(args.space, arch, args.dataset, args.data_root, args.out, args.epochs,
                   args.batch_size, args.lr, args.weight_decay, args.warmup_epochs,
                   args.label_smoothing, args.img_size, args.seed, args.device, args.resume,
                   teacher=args.teacher, distill_alpha=args.distill_alpha,
                   distill_tau=args.distill_tau, workers=args.workers, progress=not args.quiet,
                   teacher_arch=teacher_arch)
    print(f"best top-1 {result['best_top1']:.2f}% (final {result['final_top1']:.2f}%, "
          f"{len(result['epochs'])} epochs, log {result['log']})")


if __name__ == "__main__":
    main()
