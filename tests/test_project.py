"""The project's own promises: README commands, CI, pinned environments, documented options."""

import re

import yaml

from conftest import REPO


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


def test_conda_envs_are_pinned_and_agree_with_pip():
    pins = pip_pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert spec["channels"][0] == "conda-forge", env
        for dep in spec["dependencies"]:
            assert isinstance(dep, str) and re.fullmatch(r"[\w.-]+=[\w.]+", dep), (env, dep)
            package, version = dep.split("=")
            # python and ffmpeg come from outside pip (imageio-ffmpeg ships the latter).
            assert package in pins or package in ("python", "ffmpeg"), (env, package)
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


def test_every_option_has_a_description_a_default_and_a_readme_entry():
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    readme = (REPO / "README.md").read_text()
    keys = schema_keys(schema)
    assert len(keys) > 20
    for key in keys:
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        assert node.get("description") and "default" in node, key
        assert f"`{key}`" in readme, f"{key} is not documented in README.md"


def schema_default(schema: dict, key: str):
    node = schema
    for part in key.split("."):
        node = node["properties"][part]
    return node.get("default")


def config_value(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def shown(value) -> str:
    """A config value as the README's table writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return " / ".join(shown(v) for v in value.values())
    if isinstance(value, list):
        separator = " " if all(str(v).startswith(".") for v in value) else ", "
        return separator.join(shown(v) for v in value) if value else "[]"
    return str(value)


def readme_defaults() -> dict[str, tuple[str, str]]:
    """key -> (default, demo value) as the README's configuration table gives them."""
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        keys = re.findall(r"`([\w.]+)`", cells[0])
        default, _, note = cells[1].partition(" (")
        demo = re.search(r"demo: ([^,)]+(?:, [^:,)]+)*?)(?:, \w+:|\))", note)
        values = default.split(", ") if len(keys) > 1 else [default]
        demos = demo.group(1).split(", ") if demo and len(keys) > 1 else [demo and demo.group(1)]
        for i, key in enumerate(keys):
            rows[key] = (values[min(i, len(values) - 1)], demos[min(i, len(demos) - 1)])
    return rows


# Defaults the table describes in words.
DESCRIBED = {"demo.classes": "all ten"}


def test_the_readme_gives_each_default_and_the_demo_value():
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    demo = yaml.safe_load((REPO / "config/config.yaml").read_text())
    table = readme_defaults()
    for key in schema_keys(schema):
        default, demo_value = table[key]
        expected = DESCRIBED.get(key, shown(schema_default(schema, key)))
        assert default == expected, f"README: {key} default {default!r}, schema: {expected!r}"
        try:
            value = config_value(demo, key)
        except KeyError:
            continue
        if value != schema_default(schema, key):
            assert demo_value == shown(value), (
                f"README: {key} {demo_value!r} in the demo, config.yaml: {shown(value)!r}"
            )


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
