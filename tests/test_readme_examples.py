"""The Python examples of the README and docs/ run as written (they are the documented API)."""
import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks():
    return [block for page in PAGES
            for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]


def test_readme_has_the_two_examples():
    blocks = _blocks()
    assert any("genHalfAndHalf" in b for b in blocks)
    assert any("toolbox_hook" in b for b in blocks)


def test_primitive_set_reuse_example(capsys):
    code = next(b for b in _blocks() if "genHalfAndHalf" in b)
    exec(compile(code, "README-primitives", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "tensor(" in lines[1]
    assert lines[2] == "mean(step(w))"  # the exact rewrite the example shows


def test_custom_operator_example(tmp_path, monkeypatch, session_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOPROX_CACHE", str(session_cache.root))
    code = next(b for b in _blocks() if "toolbox_hook" in b)
    calls = []
    import gp.mutation as mutation
    real = mutation.mutate_nodes

    def counting(*args, **kwargs):
        calls.append(kwargs.get("p_node"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mutation, "mutate_nodes", counting)
    namespace = {}
    exec(compile(code, "README-operator", "exec"), namespace)
    assert calls and set(calls) == {0.2}, "the re-registered operator was not the one used"
    assert (tmp_path / "runs" / "gentle" / "best.json").exists()
    assert namespace["result"]["finished"]
