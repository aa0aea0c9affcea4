"""The project's own promises: README commands, CI, pinned environments, documented options,
documentation whose links resolve and whose measurements say where they came from."""

import re
from pathlib import Path

import yaml

from conftest import REPO

# The configuration reference: every key with its default, demo and UCF101 values, generated
# from config/schema.yaml (tests/test_config_files.py checks that it is current and complete).
CONFIG_REFERENCE = REPO / "config/README.md"


def readme_commands() -> list[str]:
    return re.findall(r"```\n(.+?)\n```", (REPO / "README.md").read_text())[:2]


def test_readme_opens_with_the_demo_and_test_commands():
    demo, tests = readme_commands()
    assert demo.endswith("snakemake --cores all") and "requirements.txt" in demo
    assert tests.endswith("pytest") and "requirements-dev.txt" in tests


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci/run").read_text()
    assert readme_commands()[1] in ci.splitlines()


def pip_pins() -> dict[str, str]:
    pins = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith(("-r", "-e")):
                package, version = line.split("==")
                pins[package.lower()] = version
    return pins


PIP_IN_ENVS = "25.3"


def test_conda_envs_are_pinned_and_agree_with_pip():
    pins = pip_pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert spec["channels"][0] == "conda-forge", env
        for dep in spec["dependencies"]:
            if isinstance(dep, dict):  # packages conda-forge lacks, from PyPI through pip
                assert list(dep) == ["pip"] and f"pip={PIP_IN_ENVS}" in spec["dependencies"]
                for line in dep["pip"]:
                    package, version = line.split("==")
                    assert pins.get(package) == version, (env, line)
                continue
            assert isinstance(dep, str) and re.fullmatch(r"[\w.-]+=[\w.]+", dep), (env, dep)
            package, version = dep.split("=")
            # python, ffmpeg and pip come from outside pip (imageio-ffmpeg ships ffmpeg).
            assert package in pins or package in ("python", "ffmpeg", "pip"), (env, package)
            assert package not in pins or pins[package] == version, (env, package, version)


def test_every_rule_uses_a_conda_env_that_exists():
    text = "".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    rules = re.findall(r"^(?:rule|checkpoint) (\w+):", text, re.M)
    envs = re.findall(r'conda:\n\s+"\.\./(envs/[\w.]+)"', text)
    assert len(envs) == len(rules) and all((REPO / e).is_file() for e in envs)


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub and name != "fractions":
            keys += schema_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_option_has_a_description_and_a_default():
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    keys = schema_keys(schema)
    assert len(keys) > 20
    for key in keys:
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        assert node.get("description") and "default" in node, key


def test_the_schema_names_what_the_catalog_names():
    """Backbones, heads, demo classes and export formats are written once, in the catalog; the
    schema's enums and descriptions must agree with it."""
    from actionrec import catalog

    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())["properties"]
    assert tuple(schema["train"]["properties"]["head"]["enum"]) == catalog.HEADS
    assert tuple(schema["compare"]["properties"]["heads"]["items"]["enum"]) == catalog.HEADS
    demo = schema["demo"]["properties"]["classes"]
    assert tuple(demo["items"]["enum"]) == catalog.DEMO_CLASSES == tuple(demo["default"])
    assert tuple(schema["train"]["properties"]["norm"]["enum"]) == catalog.NORMS
    formats = schema["export"]["properties"]["formats"]
    assert tuple(formats["items"]["enum"]) == catalog.EXPORT_FORMATS == tuple(formats["default"])
    described = schema["train"]["properties"]["backbone"]["description"]
    assert all(name in described for name in catalog.BACKBONES)
    assert schema["train"]["properties"]["backbone"]["default"] in catalog.BACKBONES


def merged(*names: str) -> dict:
    """Config files read one over the other, as snakemake --configfile A B does."""

    def over(base: dict, top: dict) -> dict:
        out = dict(base)
        for key, value in top.items():
            both = isinstance(value, dict) and isinstance(base.get(key), dict)
            out[key] = over(base[key], value) if both else value
        return out

    config: dict = {}
    for name in names:
        config = over(config, yaml.safe_load((REPO / "config" / name).read_text()))
    return config


def test_the_shipped_configs_pass_the_schema():
    from snakemake.utils import validate

    shipped = (["config.yaml"], ["ucf101.yaml"], ["ucf101.yaml", "original.yaml"])
    for names in (*shipped, ["ucf101.yaml", "i3d.yaml"]):
        config = merged(*names)
        validate(config, str(REPO / "config/schema.yaml"))
        assert config["evaluate"]["views"] <= config["extract"]["frames_per_segment"], names
    recipe, original = merged("ucf101.yaml"), merged("ucf101.yaml", "original.yaml")
    # The original's settings are one config away: no sampling, views, crops or new fine-tuning.
    assert recipe["extract"]["frames_per_segment"] > 1 and recipe["evaluate"]["crops"] == 3
    assert original["extract"]["frames_per_segment"] == 1 and original["evaluate"]["views"] == 1
    assert original["train"]["finetune"]["lr_factor"] == 0.1


def test_the_slurm_profile_leaves_each_rules_memory_to_the_rule():
    """Extraction asks for extract.buffer_mb + 1000 MB; a fixed figure in the
    profile would override it and cut a larger buffer short."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    overridden = {rule for rule, res in profile["set-resources"].items() if "mem_mb" in res}
    assert not overridden, f"the SLURM profile fixes the memory of {sorted(overridden)}"
    assert 'mem_mb=config["extract"]["buffer_mb"] + 1000' in (REPO / "rules/data.smk").read_text()


# Documentation: a short README, links that lead somewhere, measurements that say their source.

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
README_MAX_LINES = 190


def prose(text: str) -> str:
    """Markdown without fenced blocks and inline code, where links are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    seen: dict[str, int] = {}
    for line in prose(path.read_text()).splitlines():
        if not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def test_the_readme_stays_short():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; keep it to instructions (at most {README_MAX_LINES}) "
        "and move reference text to docs/"
    )


def test_the_docs_exist_and_the_readme_links_each():
    readme = (REPO / "README.md").read_text()
    pages = [p for p in DOCS if p.parent.name == "docs"]
    assert {p.name for p in pages} >= {"running.md", "data.md", "models.md", "outputs.md"}
    for page in pages:
        assert f"(docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(prose(doc.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                # Written by the configuration generator, which a checkout may predate.
                if dest != CONFIG_REFERENCE.resolve():
                    broken.append(f"{doc.relative_to(REPO)}: {target} (no such file)")
                continue
            if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_every_measurement_names_its_commit_and_date():
    """docs/results.md: each section is one measurement, and its first paragraph says the
    commit and date it was recorded at (and the machine and command)."""
    sections = re.split(r"^## ", (REPO / "docs/results.md").read_text(), flags=re.M)[1:]
    assert len(sections) >= 10
    for section in sections:
        title, _, body = section.partition("\n")
        first = body.strip().split("\n\n")[0]
        assert re.search(r"commit `[0-9a-f]{7,40}`", first), f"{title}: no commit"
        assert re.search(r"\b20\d\d-[01]\d-[0-3]\d\b", first), f"{title}: no date"
        assert "machine" in first and "command" in first, f"{title}: no machine or command"
