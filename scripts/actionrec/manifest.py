"""Scan a UCF-101-layout folder (``<root>/<Class>/<clip>.<ext>``) into a manifest."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from .settings import defaults

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["clip_id", "path", "class", "label", "group", "clip"]
# v_<Class>_gNN_cNN: the group is one long source video, the clip a piece of it.
_UCF_NAME = re.compile(r"_g(\d+)_c(\d+)$")
# Characters no name in the tables may hold: control characters (tab and
# newline separate TSV cells and rows); a class name neither ";", which
# separates the classes of a top-k list.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What the file system's bytes that are not UTF-8 become in a Python name.
_UNDECODED = re.compile(r"[\udc80-\udcff]")


class DatasetError(ValueError):
    """The dataset folder or its split lists cannot be used as they are."""


def read_class_index(path: str | os.PathLike) -> list[str]:
    """Class names in label order from UCF101's ``classInd.txt`` ("1 Name" a line).

    The official file has CRLF line endings; indices must run 1..n.
    """
    names: dict[int, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{path}:{lineno}: expected '<index> <ClassName>', got {line!r}")
        names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise DatasetError(f"{path}: class indices must run from 1 to {len(names)}")
    return [names[i] for i in sorted(names)]


def check_name(path: Path, what: str, forbidden: str = "") -> None:
    """Raise DatasetError, naming ``path`` (a ``what``), when its name cannot
    stand in the workflow's tables: it holds a control character, one of
    ``forbidden``, or bytes that are not UTF-8."""
    name = path.name
    bad = (
        _CONTROL.search(name)
        or (re.search(f"[{re.escape(forbidden)}]", name) if forbidden else None)
        or _UNDECODED.search(name)
    )
    if bad:
        raise DatasetError(
            f"{str(path)!r}: a {what} name may not hold {bad.group()!r} (control characters "
            "and bytes that are not UTF-8 break the workflow's tables, ';' their lists of "
            "classes); rename it"
        )


def check_class_name(path: Path) -> None:
    """Raise DatasetError, naming the class folder ``path``, when its name is
    blank or starts or ends with whitespace. classes.txt holds one name a line
    and its reader skips blank lines: a blank name would vanish from it and
    shift every later label by one. Whitespace at either end is as easily
    lost by an editor or a tool that trims each line."""
    name = path.name
    if name != name.strip():
        raise DatasetError(
            f"{str(path)!r}: a class folder name may not be blank nor start or end with "
            "whitespace (class names are kept one a line in classes.txt, whose blank lines "
            "are skipped: the labels would shift); rename it"
        )


def parse_clip_name(stem: str) -> tuple[str | None, str | None]:
    """The ``gNN`` and ``cNN`` of a UCF101 clip name, or (None, None)."""
    m = _UCF_NAME.search(stem)
    if not m:
        return None, None
    return f"g{int(m.group(1)):02d}", f"c{int(m.group(2)):02d}"


def scan_videos(
    root: str | os.PathLike, extensions: tuple[str, ...] | None = None
) -> dict[str, list[Path]]:
    """Video files under each class folder of ``root``, sorted by name
    (``extensions``: data.extensions, its default when None). Hidden files
    (such as half-written ``.name.part``) are ignored."""
    if extensions is None:
        extensions = tuple(defaults("data")["extensions"])
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"data folder {str(root)!r} does not exist or is not a folder; set data.root "
            "to a folder laid out as <root>/<Class>/<clip>.avi (null for the demo)"
        )
    check_name(root, "data folder")
    exts = {e.lower() for e in extensions}
    found: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if class_dir.name.startswith("."):
            continue
        candidates = [
            f
            for f in class_dir.iterdir()
            if f.suffix.lower() in exts and not f.name.startswith(".")
        ]
        if candidates:
            check_name(class_dir, "class folder", forbidden=";")
            check_class_name(class_dir)
        for f in candidates:
            check_name(f, "video file")
        for f in candidates:
            if f.is_symlink() and not f.exists():
                log.warning("%s is a broken symbolic link: left out", f)
        # Symbolic links to files (and to class folders) are followed.
        found[class_dir.name] = sorted(f for f in candidates if f.is_file())
    return found


def build_manifest(
    root: str | os.PathLike,
    class_index: str | os.PathLike | None = None,
    extensions: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """One row per clip: clip_id, path, class, label, group, clip.

    Labels follow ``class_index`` (UCF101's classInd.txt) when given, else the
    sorted class folder names. ``group`` is ``<Class>_gNN``, unique across
    classes (UCF101 numbers groups within each class); a file name without
    ``gNN`` becomes a group of its own, with a warning.
    """
    extensions = tuple(extensions or defaults("data")["extensions"])
    found = scan_videos(root, extensions)
    for cls, files in found.items():
        if not files:
            log.warning(
                "class folder %s/%s holds no videos (%s)",
                root,
                cls,
                ", ".join(extensions),
            )
    if class_index is not None:
        classes = read_class_index(class_index)
        extra = sorted(c for c, f in found.items() if f and c not in classes)
        if extra:
            raise DatasetError(
                f"class folders {extra} under {root} are not in {class_index}; "
                "rename the folders or add the classes to that file"
            )
        missing = [c for c in classes if not found.get(c)]
        if missing:
            log.warning(
                "%d of the %d classes in %s have no videos under %s: %s",
                len(missing),
                len(classes),
                class_index,
                root,
                ", ".join(missing[:10]),
            )
    else:
        classes = sorted(c for c, f in found.items() if f)
    if not any(found.get(c) for c in classes):
        raise DatasetError(
            f"no videos ({', '.join(extensions)}) found in the class folders of {root}"
        )
    present = [c for c in classes if found.get(c)]
    if len(present) < 2:
        raise DatasetError(
            f"data.root {str(root)!r} holds videos of one class only ({present[0]!r}): a "
            "classifier needs at least two classes; add a folder <root>/<Class>/ of videos "
            "for each further class"
        )
    rows = []
    seen: dict[str, Path] = {}
    ungrouped = 0
    for label, cls in enumerate(classes):
        for f in found.get(cls, []):
            clip_id = f.stem
            if clip_id in seen:
                raise DatasetError(
                    f"clip name {clip_id!r} appears twice: {seen[clip_id]} and {f}; "
                    "clip names must be unique across classes"
                )
            seen[clip_id] = f
            group, clip = parse_clip_name(clip_id)
            if group is None:
                ungrouped += 1
                log.warning("%s has no _gNN_cNN in its name: it forms a group of its own", f)
                group, clip = clip_id, ""
            rows.append([clip_id, str(f), cls, label, f"{cls}_{group}", clip])
    if ungrouped:
        log.warning("%d clips without a group in their name", ungrouped)
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Class names indexed by label."""
    pairs = manifest[["label", "class"]].drop_duplicates().sort_values("label")
    if pairs["label"].duplicated().any():
        raise ValueError("the manifest gives one label two class names")
    names = dict(zip(pairs["label"], pairs["class"], strict=True))
    return [names.get(i, f"class_{i}") for i in range(int(pairs["label"].max()) + 1)]


def read_classes(path: str | os.PathLike) -> list[str]:
    """Class names, one per line in label order (results/final/classes.txt)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def write_classes(names: list[str], path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{n}\n" for n in names)
