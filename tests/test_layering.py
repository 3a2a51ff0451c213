"""vit_space/ is layered by the data flow: a module imports only from its own stage or earlier ones.

bench record (data) -> model (models) -> statistics (stats) -> scores and JCM (scoring) -> search
-> training, with core under everything. setup_run sits at the package root where the parts meet:
it builds the bench, cache and config (data + stats) that scoring and the later stages read.
Every import is checked, those inside functions too, so a lazy import cannot hide an upward one.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vit_space"
STAGES = ["core", "data", "models", "stats", "setup_run", "scoring", "search", "train"]


def stage_of(dotted: str):
    """The stage of a module path inside vit_space (None for the package itself)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "vit_space" else None


def imported_modules(path: Path) -> list:
    """(line, module) for every `import vit_space...` and `from vit_space... import x` in PATH."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            if node.module == "vit_space":  # from vit_space import data -> vit_space.data
                found += [(node.lineno, f"vit_space.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "vit_space"]


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def own_stage(path: Path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def test_every_module_has_a_stage():
    for path in modules():
        stage = own_stage(path)
        assert stage is None or stage in STAGES, f"{path}: not in a known stage ({', '.join(STAGES)})"


def upward_imports(path: Path, stage=None) -> list:
    """The imports of PATH from a later stage than its own (or STAGE), as readable lines."""
    stage = stage or own_stage(path)
    rank = len(STAGES) if stage is None else STAGES.index(stage)
    bad = []
    for line, name in imported_modules(path):
        target = stage_of(name)
        if target not in STAGES or STAGES.index(target) > rank:
            bad.append(f"{path.name}:{line}: {stage} imports {name} ({target})")
    return bad


def test_no_module_imports_from_a_later_stage():
    bad = [line for path in modules() for line in upward_imports(path)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_check_sees_upward_and_lazy_imports(tmp_path):
    """The check can fail: an upward import inside a function is found, a downward one is not."""
    module = tmp_path / "probe.py"
    module.write_text("from vit_space.core.errors import BadInput\n"
                      "def f():\n    from vit_space.search.genes import plain\n")
    assert sorted(imported_modules(module)) == [(1, "vit_space.core.errors"), (3, "vit_space.search.genes")]
    assert upward_imports(module, "models") == ["probe.py:3: models imports vit_space.search.genes (search)"]
    assert upward_imports(module, "search") == []
