"""The learning-rate search: proposals, resume, choice (no TensorFlow here)."""

import math

import numpy as np
import pandas as pd
import pytest

from actionrec.search import SearchSettings, bayes_search, choose, gather_grid
from actionrec.tables import read_tsv

SETTINGS = SearchSettings.from_config(
    {"low": 1e-4, "high": 1e-1, "bayes": {"n_calls": 6, "n_initial_points": 3}}
)


class FakeTrial:
    """A smooth val loss with its minimum at lr = 0.002; counts its calls and
    can die (like a killed job) after a given number of them."""

    def __init__(self, die_after=None):
        self.calls = []
        self.die_after = die_after

    def __call__(self, lr):
        if self.die_after is not None and len(self.calls) == self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls.append(lr)
        loss = 1.0 + (math.log10(lr) - math.log10(0.002)) ** 2
        return {"lr": lr, "val_loss": loss, "val_accuracy": 1 / loss, "epoch": 1, "seconds": 0.1}


def test_the_same_seed_gives_the_same_proposals(tmp_path):
    a = bayes_search(FakeTrial(), SETTINGS, 5, tmp_path / "a")
    b = bayes_search(FakeTrial(), SETTINGS, 5, tmp_path / "b")
    c = bayes_search(FakeTrial(), SETTINGS, 6, tmp_path / "c")
    assert a["lr"].tolist() == b["lr"].tolist()
    assert a["lr"].tolist() != c["lr"].tolist()
    assert len(a) == 6 and a["lr"].between(1e-4, 1e-1).all()
    # The surrogate homes in on the minimum after the initial design.
    assert abs(math.log10(a["lr"][a["val_loss"].idxmin()] / 0.002)) < 0.5


def test_an_interrupted_search_resumes_without_repeating_trials(tmp_path):
    whole = bayes_search(FakeTrial(), SETTINGS, 5, tmp_path / "whole")
    work = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        bayes_search(FakeTrial(die_after=4), SETTINGS, 5, work)
    assert len(read_tsv(work / "trials.tsv")) == 4  # finished trials were saved as they finished
    rerun = FakeTrial()
    resumed = bayes_search(rerun, SETTINGS, 5, work)
    assert len(rerun.calls) == 2  # only the missing trials ran
    assert resumed["lr"].tolist() == whole["lr"].tolist()
    assert resumed["trial"].tolist() == list(range(1, 7))
    assert not work.exists()  # a finished search leaves no work folder behind


def test_changed_settings_start_the_search_afresh(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        bayes_search(FakeTrial(die_after=4), SETTINGS, 5, tmp_path)
    fresh = FakeTrial()
    narrower = SearchSettings.from_config(
        {"low": 1e-3, "high": 1e-2, "bayes": {"n_calls": 3, "n_initial_points": 2}}
    )
    table = bayes_search(fresh, narrower, 5, tmp_path)
    assert len(fresh.calls) == 3 and table["lr"].between(1e-3, 1e-2).all()


def test_changed_data_start_the_search_afresh(tmp_path):
    """Trials of other data (another frame size, say, with the same split)
    are not taken for this search's."""
    with pytest.raises(KeyboardInterrupt):
        bayes_search(FakeTrial(die_after=4), SETTINGS, 5, tmp_path, {"data": {"size": 64}})
    fresh = FakeTrial()
    bayes_search(fresh, SETTINGS, 5, tmp_path, {"data": {"size": 112}})
    assert len(fresh.calls) == 6


def test_choice_takes_the_lowest_val_loss_and_skips_diverged_trials():
    common = {"trial": [1, 2], "epoch": [2, 2], "seconds": [1, 1]}
    bayes = pd.DataFrame(
        {"lr": [0.01, 0.002], "val_loss": [np.nan, 0.9], "val_accuracy": [np.nan, 0.6], **common}
    )
    grid = pd.DataFrame(
        {"lr": [0.001, 0.003], "val_loss": [0.95, 0.8], "val_accuracy": [0.5, 0.55], **common}
    )
    best = choose({"bayes": bayes, "grid": grid})
    assert best["lr"] == 0.003 and best["search"] == "grid" and best["val_loss"] == 0.8
    assert best["trials"] == {"bayes": 2, "grid": 2} and best["scored_on"] == "val"
    with pytest.raises(ValueError, match="diverged"):
        choose({"bayes": bayes.iloc[:1]})


def test_grid_points_gather_sorted_by_rate(tmp_path):
    import json

    files = []
    for lr, loss in ((0.003, 0.8), (0.0003, 1.2), (0.001, 0.9)):
        files.append(tmp_path / f"lr-{lr:g}.json")
        files[-1].write_text(
            json.dumps(
                {"lr": lr, "val_loss": loss, "val_accuracy": 0.5, "epoch": 1, "seconds": 2.0}
            )
        )
    table = gather_grid(files)
    assert table["lr"].tolist() == [0.0003, 0.001, 0.003] and table["trial"].tolist() == [1, 2, 3]
