"""What a result was made from, by content: file digests, the code of the
package modules a job runs, library versions; and state files that a kill
cannot leave half written.

Standard library only: the Snakefile calls it when it builds the DAG, where
TensorFlow has no place.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
import re
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
# The libraries whose numbers end up in a model, a feature or a trial.
LIBRARIES = ("tensorflow", "keras", "numpy", "h5py", "scikit-learn", "scikit-optimize")


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (computed once per process and version
    of the file)."""
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def video_listing(root: str | os.PathLike, extensions, max_depth: int = 8) -> str:
    """A digest of the videos under ``root`` (files ending in one of
    ``extensions``, any case, hidden ones left out): each one's path, size and
    modification time. A rule that reads a folder of videos has it among its
    params, so that adding, removing or replacing a video reruns it. Links are
    followed, to ``max_depth`` levels (a link loop ends there)."""
    root = Path(root)
    if not root.is_dir():
        return "absent"
    exts = tuple(e.lower() for e in extensions)
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root, followlinks=True):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(exts):
                continue
            path = Path(folder) / name
            try:
                stat = path.stat()
                entry = f"{stat.st_size} {stat.st_mtime_ns}"
            except OSError:  # a broken link: its appearance or repair counts too
                entry = "unreadable"
            digest.update(os.fsencode(path.relative_to(root)) + b"\0" + entry.encode() + b"\n")
    return digest.hexdigest()[:16]


def _imported_modules(path: Path, package: Path) -> set[str]:
    """The modules of ``package`` that the file at ``path`` imports, at any
    depth of the file (imports inside functions count)."""
    stat = path.stat()
    return _parsed_imports(path, package, stat.st_size, stat.st_mtime_ns)


# A line that starts an import statement, with the parenthesised names that follow.
_IMPORT_LINE = re.compile(
    r"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+import[ \t]+(?:\([^)]*\)|.*)|import[ \t]+.*)$", re.M
)


def _import_statements(text: str, path: Path) -> list[ast.stmt]:
    """The import statements of a module's text. Only the lines that start one
    are parsed (a whole module is about 20 times the work, at every start of
    Snakemake); where that may miss one (an ``import`` elsewhere on a line, a
    statement that does not parse alone) the whole module is. A line of a
    docstring that reads as an import counts too: a module more, never one fewer."""
    found = list(_IMPORT_LINE.finditer(text))
    if sum(len(re.findall(r"\bimport\b", m.group(0))) for m in found) == len(
        re.findall(r"\bimport\b", text)
    ):
        try:
            return [node for m in found for node in ast.parse(m.group(0).strip()).body]
        except SyntaxError:
            pass
    return list(ast.walk(ast.parse(text, str(path))))


@functools.cache
def _parsed_imports(path: Path, package: Path, size: int, mtime_ns: int) -> set[str]:
    statements = _import_statements(path.read_text(encoding="utf-8"), path)
    return package_modules(statements, package, inside=path.parent == package)


def package_modules(nodes, package: Path, inside: bool) -> set[str]:
    """The modules of ``package`` that the import statements among ``nodes``
    (syntax-tree nodes of one file, ``inside`` the package or not) import."""
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("actionrec.")}
        elif isinstance(node, ast.ImportFrom):
            relative = node.level == 1 and inside
            if node.module == "actionrec" or (relative and node.module is None):
                found |= {a.name for a in node.names}
            elif node.module and node.module.startswith("actionrec."):
                found.add(node.module.split(".")[1])
            elif relative:
                found.add(node.module.split(".")[0])
    return {name for name in found if (package / f"{name}.py").is_file()}


def modules_of(script: str | os.PathLike) -> list[Path]:
    """The script and every module of the package beside it (or around it)
    that it imports, directly or through other modules, sorted."""
    script = Path(script).resolve()
    package = script.parent if script.parent.name == PACKAGE.name else script.parent / PACKAGE.name
    todo, seen = [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(package / f"{name}.py" for name in _imported_modules(path, package))
    return sorted(seen | {package / "__init__.py"})


def code_digest(script: str | os.PathLike) -> str:
    """A digest of the code a script runs: its own text and that of every
    package module it imports. An edit to any of them changes it."""
    digest = hashlib.sha256()
    for path in modules_of(script):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that compute the numbers."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def write_json_atomic(path: str | os.PathLike, value) -> None:
    """Write JSON under a temporary name, then rename: a kill leaves the old
    file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(value, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json_state(path: str | os.PathLike):
    """A state file's value, or None when it is missing or unreadable (cut
    short, or not JSON): state that cannot be read is discarded, with a
    warning, never a reason to fail."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s cannot be read (%s): it is discarded", path, err)
        return None
