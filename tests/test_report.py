"""The HTML report of a finished run: its front page opens with the final
model's headline numbers, every result carries labels, and (opt-in) a real
headless Chromium renders that front page."""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actionrec import report_intro
from conftest import snakemake

LEAKAGE = {"leakage": {"val": 0.0, "test": 0.0}}
METRICS = {
    "accuracy": 0.5,
    "macro_f1": 0.25,
    "split_method": "group",
    "leakage_share": 0.0,
    "test_clips": 6,
}


def test_headline_values_are_strings_the_report_shows():
    labels = report_intro.headline(METRICS, LEAKAGE)
    # The report's tables print a label of 0 as an empty cell: every value is text.
    assert all(isinstance(v, str) and v for v in labels.values()), labels
    assert labels["test accuracy"] == "0.5000" and labels["macro F1"] == "0.2500"
    assert labels["leak check"].startswith("passed (0.0% of test, 0.0% of val")


def test_leak_check_names_the_share_of_leaking_clips():
    check = report_intro.headline(
        {**METRICS, "split_method": "random", "leakage_share": 0.5},
        {"leakage": {"val": 0.25, "test": 0.5}},
    )["leak check"]
    assert check.startswith("leaks (50.0% of test, 25.0% of val clips share a group with train")


def embedded(page: str, name: str):
    """The JSON value that Snakemake's report page embeds as ``var NAME = ...;``."""
    found = []
    for match in re.finditer(rf"^\s*var {name} = (.*);$", page, re.M):
        try:
            found.append(json.loads(match.group(1)))
        except ValueError:
            continue  # the bundled JavaScript libraries declare variables too
    assert len(found) == 1, f"report.html embeds `var {name}` {len(found)} times, not once"
    return found[0]


def visible_text(fragment: str) -> str:
    """The text a reader sees: no tags, and no scripts, whose embedded data
    would hold the numbers even on a page that failed to draw."""
    fragment = re.sub(r"<(script|style)\b.*?</\1>", " ", fragment, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


@pytest.fixture(scope="module")
def report_page(tiny_run) -> Path:
    page = tiny_run / "results/report.html"
    out = snakemake(tiny_run, "--configfile", "tiny.yaml", "--report", str(page))
    assert out.returncode == 0, out.stderr[-3000:]
    return page


def expected_headline(run: Path) -> dict[str, str]:
    """What the front page should say, read from the run's own JSON files."""
    metrics = json.loads((run / "results/final/metrics.json").read_text())
    leakage = json.loads((run / "results/data/leakage.json").read_text())["leakage"]
    verdict = "passed" if metrics["leakage_share"] == 0 and leakage["val"] == 0 else "leaks"
    return {
        "test accuracy": f"{metrics['accuracy']:.4f}",
        "macro F1": f"{metrics['macro_f1']:.4f}",
        "split method": metrics["split_method"],
        "leak check": f"{verdict} ({metrics['leakage_share']:.1%} of test, "
        f"{leakage['val']:.1%} of val clips",
    }


@pytest.mark.workflow
def test_front_page_opens_with_the_headline_numbers(tiny_run, report_page):
    front = visible_text(embedded(report_page.read_text(), "workflow_desc"))
    for name, value in expected_headline(tiny_run).items():
        assert f"{name} {value}" in front, (
            f"report/workflow.rst: the front page of {report_page} lacks {name!r} = {value!r}; "
            f"it reads: {front[:600]}"
        )
    # The headline comes before the links to the details, not after them.
    assert front.index("test accuracy") < front.index("metrics.json"), front[:600]


@pytest.mark.workflow
def test_every_result_carries_labels_that_line_up_in_its_menu(report_page):
    page = report_page.read_text()
    results, categories = embedded(page, "results"), embedded(page, "categories")
    unlabelled = sorted(path for path, result in results.items() if not result["labels"])
    assert not unlabelled, f"rules/*.smk: give these report() items labels={{...}}: {unlabelled}"
    for path, result in results.items():
        labels = result["labels"]
        kind = "figure" if result["mime_type"].startswith("image/") else "table"
        assert list(labels)[:2] == [kind, "split"], f"{path}: labels {labels}"
    for category, groups in categories.items():
        for group, paths in groups.items():
            # One kind per menu, so that its table has no half-empty column.
            kinds = {next(iter(results[p]["labels"])) for p in paths}
            assert len(kinds) == 1, f"{category} / {group} mixes {kinds}: give each a subcategory"
            # Two items with equal labels in one menu show as one row: one is lost.
            rows = [json.dumps(results[p]["labels"], sort_keys=True) for p in paths]
            assert len(set(rows)) == len(rows), f"{category} / {group}: labels repeat: {rows}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing. Session-scoped
    and asked for first, so that the test skips before the tiny run starts."""
    if os.environ.get("ACTIONREC_BROWSER_TEST") != "1":
        pytest.skip(
            "set ACTIONREC_BROWSER_TEST=1 to run it: it installs Debian's chromium with "
            "apt-get when missing and renders the report in it"
        )
    exe = shutil.which("chromium")
    if exe:
        return exe
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed, and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert out.returncode == 0, f"{' '.join(cmd)} failed: {out.stderr[-1000:]}"
    return shutil.which("chromium")


def headless(exe: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    """The page loaded in headless chromium, its scripts given time to draw it."""
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",  # as root in a container, chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,900",
        "--virtual-time-budget=15000",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


# Run after the report's scripts have drawn the page: where the headline's last
# row ends, for the test to compare with the window's height.
MEASURE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const cell = [...document.querySelectorAll("td")].find(td => td.textContent == "leak check");
  document.body.dataset.headlineBottom = cell ? cell.getBoundingClientRect().bottom : -1;
}, 1000));
</script>"""


@pytest.mark.workflow
def test_a_browser_shows_the_headline_on_the_first_screen(
    chromium, tiny_run, report_page, tmp_path
):
    exe = chromium
    # The front page is drawn by the report's JavaScript; the DOM after it ran
    # shows whether the numbers reached the screen.
    dom = headless(exe, report_page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = visible_text(dom.stdout)
    for name, value in expected_headline(tiny_run).items():
        assert f"{name} {value}" in text, f"{report_page} drawn by chromium lacks {name} {value}"
    page = report_page.read_text()
    end = page.rindex("</body>")
    measured = tmp_path / "measured.html"
    measured.write_text(page[:end] + MEASURE + page[end:])
    dom = headless(exe, measured, "--dump-dom")
    bottom = re.search(r'data-headline-bottom="([-\d.]+)"', dom.stdout)
    assert bottom and 0 < float(bottom.group(1)) <= 900, (
        f"report/workflow.rst: the headline's last row ends at "
        f"{bottom.group(1) if bottom else 'nowhere'} px, not within the first 900 px"
    )
    shot = tmp_path / "report-front.png"
    out = headless(exe, report_page, f"--screenshot={shot}")
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 900), (image.format, image.size)
        pixels = np.asarray(image.convert("L"), dtype=float)
    # A page that failed to draw is one flat colour; text and the rule graph are not.
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.002, f"{shot} is blank"
