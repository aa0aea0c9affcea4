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
            if line and not line.startswith("-r"):
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
