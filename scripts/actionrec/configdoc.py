"""The configuration reference, config/README.md, written from config/schema.yaml
and the shipped configs, so that it cannot drift from either.

    python -m actionrec.configdoc --write    # rewrites config/README.md
    python -m actionrec.configdoc            # prints it

Each key's type, range, default and description come from the schema (the
package's copy, which settings.py reads too); the demo's and UCF101's values are
the configs as Snakemake layers them; the comments beside a key in a shipped
config are quoted as the reason for its value there.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from .settings import SCHEMA, schema

REPO = Path(__file__).resolve().parents[2]
README = Path("config/README.md")
COMMAND = "python -m actionrec.configdoc --write"

DEMO = "config/config.yaml"
UCF101 = "config/ucf101.yaml"

# The sections only the demo reads, which config/ucf101.yaml leaves to it.
DEMO_ONLY = {
    "demo": "used only by rule render_demo, which runs when `data.root` is null",
    "pretrain": "used only by rule pretrain, which runs when `train.weights` names its "
    "output, `results/pretrain/{backbone}/backbone.weights.h5`",
}

# Every shipped config under config/: the files a run names with --configfile
# (after config/config.yaml, which Snakemake always reads), and when to use it.
SHIPPED = {
    DEMO: (
        (),
        "The built-in synthetic demo: ten classes of rendered shapes (three pairs differ "
        "only in frame order), 32 px frames, each backbone pretrained on still synthetic "
        "images by rule pretrain. Sized for 2 CPU cores; no download, no GPU. The default.",
    ),
    UCF101: (
        (UCF101,),
        "Your UCF101 (or any folder of `<Class>/<clip>.avi`) at full size: ImageNet "
        "weights, 224 px, the frozen stage then fine-tuning, one GPU per model job. Set "
        "`data.root` and `data.splits_dir` first (in the file, or in an overlay of your own, "
        "below).",
    ),
    "config/i3d.yaml": (
        (UCF101, "config/i3d.yaml"),
        "An overlay on config/ucf101.yaml: a Kinetics-400-pretrained I3D file as the "
        "backbone (16 frames a clip), compared with EfficientNetB0 on the same split. "
        "Needs the converted model file it names.",
    ),
    "config/original.yaml": (
        (UCF101, "config/original.yaml"),
        "An overlay on config/ucf101.yaml: the original model's settings, what the "
        "recipe is measured against.",
    ),
}


# --- Layering, as Snakemake does it -------------------------------------------------


def read(path: str | Path, root: Path = REPO) -> dict:
    with open(root / path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def layered(files: tuple[str, ...], root: Path = REPO) -> dict:
    """The config a run with ``--configfile FILES`` sees: config/config.yaml,
    each file over it key by key, then the schema's defaults for what no file
    sets."""
    from snakemake.utils import update_config, validate

    config = read(DEMO, root)
    for path in files:
        update_config(config, read(path, root))
    validate(config, str(SCHEMA), set_default=True)
    return config


# --- The comments beside keys in a config file --------------------------------------

KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*):(.*)$")


def _split_comment(text: str) -> tuple[str, str]:
    """A line's value and its trailing comment (a # outside quotes)."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), ""


def key_comments(text: str) -> dict[str, str]:
    """Comment text by dotted key: the comment on a key's line, and the comment
    lines just above a key at its indent. Comment lines just under a section's
    own line, or indented deeper than the key that follows, belong to the
    section. The file's opening comment is its header, no key's."""
    comments: dict[str, list[str]] = {}
    stack: list[tuple[int, str]] = []  # the open sections: (indent, name)
    block: list[tuple[int, str]] = []  # comment lines since the last key
    header, opened = True, False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if not header:
                block.append((len(line) - len(line.lstrip()), stripped.lstrip("#").strip()))
            continue
        match = KEY_LINE.match(line)
        if not stripped:
            block = []
        if not match:
            continue
        header = False
        indent, key = len(match[1]), match[2]
        for at, said in block:
            if opened or at > indent:
                section = ".".join(name for open_at, name in stack if open_at < at)
                comments.setdefault(section, []).append(said)
            elif at == indent:
                inner = [name for open_at, name in stack if open_at < indent]
                comments.setdefault(".".join([*inner, key]), []).append(said)
        block = []
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([name for _, name in stack] + [key])
        value, trailing = _split_comment(match[3])
        if trailing:
            comments.setdefault(path, []).append(trailing)
        opened = not value
        if opened:
            stack.append((indent, key))
    return {path: " ".join(lines) for path, lines in comments.items() if path}


# --- Schema nodes as words ----------------------------------------------------------


def fmt(value) -> str:
    """A value as YAML writes it, on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def code(value) -> str:
    return "`" + fmt(value).replace("|", "\\|") + "`"


def _range(node: dict) -> str:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    opening = "(" if "exclusiveMinimum" in node else "["
    closing = ")" if "exclusiveMaximum" in node else "]"
    if low is not None and high is not None:
        return f"{opening}{fmt(low)}, {fmt(high)}{closing}"
    if low is not None:
        return ("> " if opening == "(" else "≥ ") + fmt(low)
    if high is not None:
        return ("< " if closing == ")" else "≤ ") + fmt(high)
    return ""


def kind(node: dict) -> str:
    """What a key takes: its type, allowed values and range."""
    if "oneOf" in node:
        return ", or ".join(kind(branch) for branch in node["oneOf"])
    if "const" in node:
        return code(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(code(v) for v in node["enum"])
    types = node.get("type", "")
    types = [types] if isinstance(types, str) else list(types)
    nullable = "null" in types
    types = [t for t in types if t != "null"]
    words = " or ".join(types)
    if "array" in types:
        items = node.get("items", {})
        if "enum" in items:
            words = "list drawn from " + ", ".join(code(v) for v in items["enum"])
        else:
            noun, _, rest = kind(items).partition(" ")
            words = f"list of {noun}s {rest}"
        words = words.rstrip()
        if node.get("minItems"):
            words += f", at least {node['minItems']}"
        if node.get("uniqueItems"):
            words += ", no repeats"
    elif "object" in types:
        words = "mapping of " + ", ".join(f"`{key}`" for key in node.get("properties", {}))
    else:
        bounds = _range(node)
        if bounds:
            words += f" in {bounds}" if bounds.startswith(("[", "(")) else f" {bounds}"
        if node.get("pattern"):
            words += f" matching `{node['pattern']}`"
    return words.strip() + (", or `null`" if nullable else "")


def prose(text: str) -> str:
    """Schema or comment text safe inside a Markdown table cell."""
    text = " ".join(text.split())
    for char in "\\*_|":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def is_section(node: dict) -> bool:
    """A nested section whose keys are documented one by one (split.fractions,
    whose default is a whole mapping, is one key)."""
    return node.get("type") == "object" and "properties" in node and node.get("default") == {}


def leaves(node: dict, prefix: str = ""):
    """(dotted key, schema node) of every key, nested sections walked."""
    for name, sub in node["properties"].items():
        if is_section(sub):
            yield from leaves(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", sub


def sections(node: dict, prefix: str = ""):
    """(dotted name, schema node) of every nested section."""
    for name, sub in node["properties"].items():
        if is_section(sub):
            yield f"{prefix}{name}", sub
            yield from sections(sub, f"{prefix}{name}.")


def lookup(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


# --- The document -------------------------------------------------------------------


def _command(files: tuple[str, ...]) -> str:
    return "snakemake --cores all" + (" --configfile " + " ".join(files) if files else "")


def intro(root: Path) -> list[str]:
    lines = [
        "# Configuration",
        "",
        f"_Generated by `{COMMAND}` from config/schema.yaml and the shipped configs: "
        "edit those, then run it (tests/test_config_files.py fails while this file is "
        "stale)._",
        "",
        "## How configuration files layer",
        "",
        "1. Snakemake always reads `config/config.yaml` first (the Snakefile's `configfile:`): "
        "the built-in synthetic demo.",
        "2. Each `--configfile` goes over it in the order given, key by key: a key a file sets "
        "replaces that key alone (nested sections are merged, lists are replaced whole), and a "
        "key it leaves out keeps the value from below, in the end the demo's.",
        "3. `config/schema.yaml` then checks the result before any job starts (a wrong type, an "
        "unknown key or a value out of range stops the run with the key named) and fills its "
        "default into every key that no file sets.",
        "",
        "So a file given alone (`--configfile my.yaml`) runs the demo with your changes. "
        "`config/ucf101.yaml` therefore sets every key that `config/config.yaml` sets, but for "
        "the sections that a run on your videos with ImageNet weights never reads: "
        + "; ".join(f"`{name}` ({why})" for name, why in DEMO_ONLY.items())
        + ". tests/test_config_files.py checks that no other demo value reaches a UCF101 run.",
        "",
        "Commands run from the repository root (with the README's set-up, `snakemake` is "
        "`.venv/bin/snakemake`). `--configfile` takes every word after it as a file: name "
        "targets before it.",
        "",
        "## Shipped configs",
        "",
        "| config | use it for | command |",
        "|---|---|---|",
    ]
    for path, (files, use) in SHIPPED.items():
        lines.append(f"| `{path}` | {use} | `{_command(files)}` |")
    lines += [
        "",
        "The overlays set only these keys over `config/ucf101.yaml`:",
        "",
    ]
    for path, (files, _) in SHIPPED.items():
        if len(files) < 2:
            continue
        overlay = read(path, root)
        comments = key_comments((root / path).read_text(encoding="utf-8"))
        keys = [key for key, _ in leaves(schema()) if _is_set(overlay, key)]
        sets = []
        for key in keys:
            reason = f" ({prose(comments[key])})" if key in comments else ""
            sets.append(f"`{key}: {fmt(lookup(overlay, key))}`{reason}")
        lines.append(f"- `{path}`: " + "; ".join(sets) + ".")
    lines += [
        "",
        "`bench/*.yaml` and `tests/tiny.yaml` are benchmark and test configs over the demo.",
        "",
        "### Your own settings",
        "",
        "Rather than editing a shipped file, put what you change in a file of your own and "
        "give it last, for example `my.yaml`:",
        "",
        "```yaml",
        "data:",
        "  root: /data/UCF-101",
        "  splits_dir: /data/ucfTrainTestlist",
        "```",
        "",
        "```",
        _command((UCF101, "my.yaml")),
        "```",
        "",
    ]
    return lines


def _is_set(config: dict, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return False
        config = config[part]
    return True


def notes_on(key: str, notes: dict[str, dict[str, str]]) -> list[str]:
    """What the shipped configs' comments say about a key, one note per text."""
    by_text: dict[str, list[str]] = {}
    for source, said in notes.items():
        if key in said:
            by_text.setdefault(said[key], []).append(source)
    return [f"{' and '.join(sources)}: {prose(text)}" for text, sources in by_text.items()]


def rows(keys, demo: dict, ucf101: dict, notes: dict) -> list[str]:
    """A table of keys: what each takes, its default, the demo's and UCF101's
    value, and its description with the shipped configs' comments on it."""
    lines = [
        "| key | takes | default | demo | UCF101 | description |",
        "|---|---|---|---|---|---|",
    ]
    for key, node in keys:
        description = "<br>".join([prose(node.get("description", "")), *notes_on(key, notes)])
        unread = " (not read)" if key.split(".")[0] in DEMO_ONLY else ""
        lines.append(
            f"| `{key}` | {kind(node)} | {code(node.get('default'))} | "
            f"{code(lookup(demo, key))} | {code(lookup(ucf101, key))}{unread} | {description} |"
        )
    return lines + [""]


def section(name: str, node: dict, demo: dict, ucf101: dict, notes: dict) -> list[str]:
    """One top-level section: what it and its nested sections are, then its keys."""
    lines = [f"### `{name}`", "", prose(node.get("description", ""))]
    if name in DEMO_ONLY:
        lines[-1] += f" A UCF101 run does not read it: it is {DEMO_ONLY[name]}."
    lines.append("")
    for note in notes_on(name, notes):
        lines += [note, ""]
    for sub, sub_node in sections(node, f"{name}."):
        said = [prose(sub_node.get("description", "")), *notes_on(sub, notes)]
        lines += [f"`{sub}`: " + " ".join(said), ""]
    return lines + rows(leaves(node, f"{name}."), demo, ucf101, notes)


def render(root: Path = REPO) -> str:
    """config/README.md as the schema and the shipped configs say it."""
    tree = schema()
    demo = layered((), root)
    ucf101 = layered((UCF101,), root)
    notes = {
        "Demo": key_comments((root / DEMO).read_text(encoding="utf-8")),
        "UCF101": key_comments((root / UCF101).read_text(encoding="utf-8")),
    }
    lines = intro(root)
    lines += [
        "## Every key",
        "",
        "Per section: what each key takes and its default (from the schema), its value in the "
        "demo (`config/config.yaml`) and in a UCF101 run (`config/config.yaml` + "
        "`config/ucf101.yaml`), and what it does. The comments beside a key in those two files, "
        "quoted after its description, say why it has its value there.",
        "",
    ]
    top = [(name, node) for name, node in tree["properties"].items() if not is_section(node)]
    lines += ["### Top level", "", *rows(top, demo, ucf101, notes)]
    for name, node in tree["properties"].items():
        if is_section(node):
            lines += section(name, node, demo, ucf101, notes)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {README}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        (REPO / README).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
