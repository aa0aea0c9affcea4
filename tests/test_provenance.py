"""Results identified by what made them: code digests, file digests, and
state files that a kill cannot leave unreadable."""

import json
import logging
import os
import shutil

import pytest
from test_search import FakeTrial

from actionrec import provenance
from actionrec.resume import epochs_done, finished_rows, prepare_work_dir
from actionrec.search import SearchSettings, bayes_search
from conftest import REPO

SETTINGS = SearchSettings.from_config(
    {"low": 1e-4, "high": 1e-1, "bayes": {"n_calls": 4, "n_initial_points": 2}}
)


def test_code_digest_follows_the_modules_a_script_imports(tmp_path):
    scripts = shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    names = [p.name for p in provenance.modules_of(scripts / "train_model.py")]
    # Through train.py: the feature cache's checks are part of training's code.
    assert {"train_model.py", "train.py", "features.py", "model.py", "resume.py"} <= set(names)
    card, demo = scripts / "write_model_card.py", scripts / "render_demo.py"
    before = provenance.code_digest(card), provenance.code_digest(demo)
    module = scripts / "actionrec/model_card.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    after = provenance.code_digest(card), provenance.code_digest(demo)
    assert after[0] != before[0]  # the model card's code changed
    assert after[1] == before[1]  # the demo renderer does not import it


def imports_by_whole_parse(path, package):
    """The package modules a file imports, from its whole syntax tree: what
    provenance finds from the import statements alone."""
    import ast

    tree = ast.walk(ast.parse(path.read_text()))
    return provenance.package_modules(tree, package, inside=path.parent == package)


def test_the_imports_found_are_those_of_the_whole_syntax_tree(tmp_path):
    package = (REPO / "scripts/actionrec").resolve()
    files = sorted((REPO / "scripts").rglob("*.py")) + sorted((REPO / "bench").glob("*.py"))
    assert len(files) > 60
    for path in files:
        path = path.resolve()
        assert provenance._imported_modules(path, package) == imports_by_whole_parse(
            path, package
        ), path
    # Imports in every form and place, and a docstring that reads as one.
    scripts = shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    package = scripts / "actionrec"
    odd = scripts / "odd.py"
    odd.write_text(
        '"""Usage:\n    from actionrec import split\n"""\n'
        "import os, actionrec.model as m\n"
        "from actionrec import (\n    tables,  # the tables\n    logs,\n)\n"
        "def f():\n    if True:\n        from actionrec.video import find_ffmpeg\n"
    )
    whole = {"model", "tables", "logs", "video"}
    assert imports_by_whole_parse(odd, package) == whole
    # The docstring's line counts as an import: one module more, never one fewer.
    assert provenance._imported_modules(odd, package) == whole | {"split"}
    # An import that does not start its line: the whole file is parsed.
    odd.write_text(odd.read_text() + "x = 1; import actionrec.groups\n")
    assert provenance._imported_modules(odd, package) == whole | {"groups"}


def test_a_file_replaced_with_an_older_time_gets_another_digest(tmp_path):
    path = tmp_path / "net.keras"
    path.write_bytes(b"first network")
    first = provenance.file_sha256(path)
    stat = path.stat()
    path.write_bytes(b"other network")
    os.utime(path, ns=(stat.st_atime_ns - 10**10, stat.st_mtime_ns - 10**10))
    assert provenance.file_sha256(path) != first


@pytest.mark.parametrize("text", ['{"epoch": 3, "lo', "", "\x00\x01"], ids=["cut", "empty", "bin"])
def test_unreadable_state_is_discarded_with_a_warning(tmp_path, caplog, text):
    path = tmp_path / "state.json"
    path.write_text(text)
    with caplog.at_level(logging.WARNING):
        assert provenance.read_json_state(path) is None
    assert "state.json cannot be read" in caplog.text
    assert provenance.read_json_state(tmp_path / "absent.json") is None


def test_state_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "state.json"
    provenance.write_json_atomic(path, {"epoch": 1})
    provenance.write_json_atomic(path, {"epoch": 2})
    assert json.loads(path.read_text()) == {"epoch": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_cut_short_fingerprint_starts_the_training_afresh(tmp_path, caplog):
    work = tmp_path / "work"
    prepare_work_dir(work, {"config": {"lr": 0.1}})
    (work / "frozen").mkdir()
    (work / "fingerprint.json").write_text('{"config": {"l')
    with caplog.at_level(logging.WARNING):
        prepare_work_dir(work, {"config": {"lr": 0.1}})
    assert "starting afresh" in caplog.text
    assert not (work / "frozen").exists()
    assert json.loads((work / "fingerprint.json").read_text()) == {"config": {"lr": 0.1}}


def test_a_backup_whose_record_is_cut_short_restarts_the_stage(tmp_path):
    stage = tmp_path / "frozen"
    (stage / "backup").mkdir(parents=True)
    (stage / "backup/training_metadata.json").write_text('{"epoch": 2, "batch"')
    (stage / "best.weights.h5").write_bytes(b"weights")
    assert epochs_done(stage) == 0
    assert not (stage / "backup").exists() and not (stage / "best.weights.h5").exists()
    (stage / "backup").mkdir()
    (stage / "backup/training_metadata.json").write_text('{"epoch": 2}')
    assert epochs_done(stage) == 2


@pytest.mark.parametrize("broken", ["trials.json", "trials.tsv"])
def test_a_search_with_cut_short_state_starts_afresh(tmp_path, broken):
    work = tmp_path / "bayes"
    with pytest.raises(KeyboardInterrupt):
        bayes_search(FakeTrial(die_after=3), SETTINGS, 5, work)
    path, text = work / broken, (work / broken).read_text()
    # Cut inside the last row's last field, or halfway through the JSON.
    cut = text.rstrip().rfind("\t") if broken.endswith("tsv") else len(text) // 2
    path.write_text(text[:cut])
    fresh = FakeTrial()
    table = bayes_search(fresh, SETTINGS, 5, work)
    assert len(fresh.calls) == 4 and len(table) == 4


@pytest.mark.parametrize(
    "log", ["epoch,loss\n0,1.0\n", "", "not,a\nlog"], ids=["short", "empty", "other"]
)
def test_a_history_log_that_disagrees_with_the_backup_is_no_crash(tmp_path, caplog, log):
    stage = tmp_path / "frozen"
    stage.mkdir()
    (stage / "history.csv").write_text(log)
    with caplog.at_level(logging.WARNING):
        assert finished_rows(stage, 3) is None
    assert "history.csv" in caplog.text
