"""Every rule's conda environment provides what the rule's script imports,
through the package, at any depth: a rule that runs under --use-conda must
not meet a missing module (these machines cannot build the environments, so
the check is made from the code)."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGE = REPO / "scripts/actionrec"
# Conda packages that provide an imported module, when the names differ.
PROVIDERS = {
    "ffmpeg": {"ffmpeg-python"},
    "sklearn": {"scikit-learn"},
    "skopt": {"scikit-optimize"},
    "yaml": {"pyyaml"},
    "PIL": {"pillow", "matplotlib"},
    # Only the fallback for the ffmpeg binary, which conda's ffmpeg provides.
    "imageio_ffmpeg": {"imageio-ffmpeg", "ffmpeg"},
    "ai_edge_litert": {"ai-edge-litert"},
}


def imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level modules ``path`` imports anywhere (functions included), and
    the package's own modules among them."""
    outside, inside = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from .module import ... / from . import module
                inside.update([node.module] if node.module else [a.name for a in node.names])
                continue
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "actionrec":
                inside.update(parts[1:2] or ["__init__"])
                if len(parts) == 1 and isinstance(node, ast.ImportFrom):
                    inside.update(a.name for a in node.names)
            else:
                outside.add(parts[0])
    return outside, {m.split(".")[0] for m in inside}


def modules_needed(script: Path) -> set[str]:
    """Third-party modules the script reaches, following the package's imports."""
    needed, todo, seen = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        outside, inside = imports(path)
        needed |= outside
        todo += [PACKAGE / f"{m}.py" for m in inside if (PACKAGE / f"{m}.py").exists()]
    return {m for m in needed if m not in sys.stdlib_module_names and m != "__future__"}


def rules() -> list[tuple[str, str, str]]:
    """(rule, env file, script) for every rule."""
    text = "".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    out = []
    for block in re.split(r"^(?=(?:rule|checkpoint) )", text, flags=re.M)[1:]:
        name = re.match(r"(?:rule|checkpoint) (\w+):", block).group(1)
        env = re.search(r'conda:\n\s+"\.\./(envs/[\w.]+)"', block).group(1)
        script = re.search(r'script:\n\s+"\.\./(scripts/[\w.]+)"', block).group(1)
        out.append((name, env, script))
    return out


@pytest.mark.parametrize(("rule", "env", "script"), rules(), ids=[r[0] for r in rules()])
def test_the_rule_environment_provides_what_its_script_imports(rule, env, script):
    spec = yaml.safe_load((REPO / env).read_text())
    deps = spec["dependencies"]
    pip = [line for dep in deps if isinstance(dep, dict) for line in dep.get("pip", [])]
    packages = {dep.split("=")[0] for dep in [*deps, *pip] if isinstance(dep, str)}
    missing = {
        module
        for module in modules_needed(REPO / script)
        if not PROVIDERS.get(module, {module}) & packages
    }
    assert not missing, f"rule {rule} imports {sorted(missing)}, which {env} does not provide"


def test_the_import_reader_sees_function_level_imports(tmp_path):
    code = "import numpy\n\ndef f():\n    import h5py\n    from .model import build\n"
    (tmp_path / "m.py").write_text(code)
    assert imports(tmp_path / "m.py") == ({"numpy", "h5py"}, {"model"})
