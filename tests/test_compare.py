"""The backbone comparison's summary and its sentence on the original claim."""

import re

import pandas as pd

from actionrec.verdict import claim_sentence, markdown


def summary(eff_seconds, eff_acc, res_seconds, res_acc):
    common = {
        "head": "average",
        "split_method": "group",
        "hardware": "CPU: test, 2 threads",
        "epochs": 3,
        "classes": 10,
        "val_accuracy": 0.5,
        "test_macro_f1": 0.5,
        "lr": 0.001,
        "backbone_training": "pretraining",
    }
    return pd.DataFrame(
        [
            {
                "backbone": "efficientnetb0",
                "train_seconds_per_epoch": eff_seconds,
                "test_accuracy": eff_acc,
                "parameters": 4_000_000,
                **common,
            },
            {
                "backbone": "resnet50",
                "train_seconds_per_epoch": res_seconds,
                "test_accuracy": res_acc,
                "parameters": 23_000_000,
                **common,
            },
        ]
    )


def test_the_sentence_names_split_hardware_and_verdict():
    holds = claim_sentence(summary(10.0, 0.60, 40.0, 0.62))
    assert "4.0x faster per epoch (pretraining)" in holds and "it supports" in holds
    assert "group split" in holds and "CPU: test, 2 threads" in holds
    slower = claim_sentence(summary(50.0, 0.60, 40.0, 0.62))
    assert "slower" in slower and "does not support" in slower
    worse = claim_sentence(summary(10.0, 0.40, 40.0, 0.62))
    assert "does not support" in worse


def test_a_budget_that_leaves_one_near_chance_tests_nothing():
    for eff, res in ((0.10, 0.12), (0.60, 0.19)):
        sentence = claim_sentence(summary(10.0, eff, 40.0, res))
        assert "cannot test the accuracy half" in sentence and "supports" not in sentence


def test_frozen_backbones_are_compared_by_their_inference_speed():
    table = summary(10.0, 0.6, 40.0, 0.6).assign(
        backbone_training="frozen", inference_clips_per_second=[30.0, 10.0]
    )
    sentence = claim_sentence(table)
    assert "classified test clips 3.0x faster" in sentence and "did not train them" in sentence


def test_without_both_backbones_the_sentence_says_so():
    only = summary(10.0, 0.6, 40.0, 0.6).iloc[:1]
    assert "says nothing about the original claim" in claim_sentence(only)


def test_markdown_table_has_a_row_per_backbone():
    table = summary(10.0, 0.6, 40.0, 0.6)
    text = markdown(table, claim_sentence(table))
    rows = [re.split(r"\s*\|\s*", line.strip("| ")) for line in text.splitlines() if "|" in line]
    assert ["efficientnetb0", "average"] == rows[2][:2] and ["resnet50", "average"] == rows[3][:2]
    assert "4,000,000" in text and text.rstrip().endswith("at similar accuracy.")
