"""Argument parsing shared by the runners, and the one error style: a bad input prints one line
to stderr naming what was wrong and what was expected, and exits with status 2."""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `python runners/x.py` from a source checkout
    sys.path.insert(0, str(_ROOT))

from primitives import FormulaError  # noqa: E402
from vit_space.core.errors import BadInput  # noqa: E402
from vit_space.core.outputs import check_writable_dir, check_writable_file, run_dir, run_files  # noqa: E402,F401
from vit_space.setup_run import DATA_DEFAULTS  # noqa: E402


def _shows_default(action) -> bool:
    """An option whose default means something (None and False mean 'off unless given')."""
    return bool(action.option_strings) and action.default is not None and \
        action.default is not False and action.default != argparse.SUPPRESS


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that shows defaults, without '(default: None)' or '(default: False)'."""

    def _get_help_string(self, action):
        return super()._get_help_string(action) if _shows_default(action) else action.help


class _Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs):
        super().__init__(formatter_class=_HelpFormatter, **kwargs)

    def add_argument(self, *args, **kwargs):
        """Every option with a default gets a help line, so --help shows that default."""
        action = super().add_argument(*args, **kwargs)
        if not action.help and _shows_default(action):
            action.help = "(default: %(default)s)"
        return action

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(description: str) -> argparse.ArgumentParser:
    return _Parser(description=description)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """Options that choose the bench, the data and the statistics (shared by every runner);
    defaults come from vit_space.setup_run.DATA_DEFAULTS, the library's single source."""
    d = DATA_DEFAULTS
    p.add_argument("--space", default=d["space"], help="autoformer | pit")
    p.add_argument("--bench", default=d["bench"], help="bench file or directory (default: "
                   "$VIT_BENCH_101, else the copy packaged with vit_space)")
    p.add_argument("--datasets", default=d["datasets"], help="comma-separated: c100,flowers,chaoyang,imagenet")
    p.add_argument("--acc", default=d["acc"], help="kd | base accuracy columns")
    p.add_argument("--archs", type=int, default=d["archs"],
                   help="use the first N bench records (then split; default: all)")
    p.add_argument("--data-root", default=d["data_root"], help="real data: DIR/<dataset> in the "
                   "authors' layout (default: a seeded synthetic batch)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--img-size", type=int, default=d["img_size"])
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the batch, the split and the search")
    p.add_argument("--split-seed", type=int, default=d["split_seed"], help="seed of the 60/40 "
                   "search/test split alone (default: --seed); the batch and statistics cache stay")
    p.add_argument("--rows", type=int, default=d["rows"], help="weight rows kept per module (0 = all)")
    p.add_argument("--tokens", type=int, default=d["tokens"], help="tokens kept per sample (0 = all)")
    p.add_argument("--device", default=d["device"], help="auto | cpu | cuda | cuda:N")
    p.add_argument("--cache", default=d["cache"], help="statistics cache directory (default: "
                   "$AUTOPROX_CACHE or ~/.cache/autoprox)")
    p.add_argument("--jobs", type=int, default=d["jobs"], help="parallel extraction workers")
    p.add_argument("--backend", default=d["backend"], help="loky | dask | sequential")
    p.add_argument("--scheduler", default=d["scheduler"], help="dask.distributed scheduler address "
                   "(with --backend dask)")
    p.add_argument("--quiet", action="store_true", default=d["quiet"], help="no progress bars")


def prepare_out_dir(out, default: str, names, resume: bool = False, force: bool = False) -> Path:
    """vit_space.core.outputs.run_dir (checks only, creates nothing); says which folder it chose when
    no --out was given. Call it after the data options are validated."""
    path = run_dir(out, default, names, resume, force)
    if out is None and not resume:
        print(f"output: {path}")
    elif out is None and run_files(path, names):  # else --resume fails: no checkpoint there
        print(f"resuming: {path}")
    return path


def main_guard(fn):
    """Run a runner's main; turn bad input into one line on stderr and exit status 2."""
    @functools.wraps(fn)
    def wrapper(argv=None):
        try:
            return fn(argv)
        except (BadInput, FormulaError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
