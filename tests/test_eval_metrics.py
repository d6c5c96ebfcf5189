"""Evaluation metrics equal hand computations; prompt files in CONCH's shape parse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_mrplip import metrics as m
from napari_mrplip.evaluation.prompts import PromptFileError, align, read_prompt_file

# rows = true class, columns = predicted class
CM = np.array([[3, 1, 0], [1, 2, 1], [0, 0, 2]])


def test_confusion_matrix_counts():
    t = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    p = [0, 0, 0, 1, 0, 1, 1, 2, 2, 2]
    assert (m.confusion_matrix(t, p, 3) == CM).all()
    with pytest.raises(ValueError, match="0..2"):
        m.confusion_matrix([0, 3], [0, 0], 3)


def test_metrics_equal_a_hand_computation():
    # recall: 3/4, 2/4, 2/2 -> balanced accuracy (0.75 + 0.5 + 1) / 3 = 0.75
    assert m.per_class_recall(CM) == pytest.approx([0.75, 0.5, 1.0])
    assert m.balanced_accuracy(CM) == pytest.approx(0.75)
    # precision: 3/4, 2/3, 2/3; F1 = 2PR/(P+R): 0.75, 4/7, 0.8
    assert m.per_class_precision(CM) == pytest.approx([0.75, 2 / 3, 2 / 3])
    assert m.per_class_f1(CM) == pytest.approx([0.75, 4 / 7, 0.8])
    # weighted by support 4, 4, 2: (4*0.75 + 4*4/7 + 2*0.8) / 10
    assert m.weighted_f1(CM) == pytest.approx((3 + 16 / 7 + 1.6) / 10)
    assert m.accuracy(CM) == pytest.approx(0.7)


def test_absent_and_never_predicted_classes():
    cm = np.array([[2, 0, 1], [0, 0, 0], [1, 0, 0]])  # class 1 absent, class 2 never right
    r = m.per_class_recall(cm)
    assert r[0] == pytest.approx(2 / 3) and np.isnan(r[1]) and r[2] == 0
    assert m.balanced_accuracy(cm) == pytest.approx((2 / 3 + 0) / 2)  # NaN class left out
    # F1: class 0 = 2*2/(4+1+1) = 2/3; class 2 = 0; weights 3, 0, 1
    assert m.weighted_f1(cm) == pytest.approx((3 * 2 / 3) / 4)
    s = m.summary(cm, ["a", "b", "c"])
    assert s["per_class_recall"]["b"] is None and s["confusion_matrix"] == cm.tolist()
    assert np.isnan(m.balanced_accuracy(np.zeros((2, 2), int)))


def test_recall_at_k():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.0, 0.8, 0.7]])
    assert m.recall_at_k(sim, [0, 1, 2], 1) == pytest.approx(2 / 3)  # query 2 ranks 1 first
    assert m.recall_at_k(sim, [0, 1, 2], 2) == pytest.approx(1.0)
    assert m.recall_at_k(sim, [{1, 2}, {0}, {2}], 1) == pytest.approx(0.0 + 0 + 0)
    assert m.recall_at_k(sim, [{0, 2}, {1}, {1}], 1) == pytest.approx(1.0)


CONCH_CRC = {
    "0": {
        "classnames": {
            "ADI": ["adipose", "adipose tissue", "fat"],
            "STR": ["stroma", "tumor-associated stroma"],
            "TUM": ["tumor", "adenocarcinoma"],
        },
        "templates": ["CLASSNAME.", "a photomicrograph showing CLASSNAME.", "CLASSNAME, H&E."],
    }
}


def test_conch_prompt_file(tmp_path):
    path = tmp_path / "crc100k_prompts_all_per_class.json"
    path.write_text(json.dumps(CONCH_CRC))
    p = read_prompt_file(path)
    assert p.templates == ("{}.", "a photomicrograph showing {}.", "{}, H&E.")
    assert p.synonyms["ADI"] == ["adipose", "adipose tissue", "fat"]
    a = align(p, ["TUM", "ADI"], "data")  # data classes first, prompt-only ones still compete
    assert list(a.synonyms) == ["TUM", "ADI", "STR"]
    with pytest.raises(PromptFileError, match=r"no prompts for class\(es\) \['LYM'\]"):
        align(p, ["LYM"], "data")
    (tmp_path / "plain.json").write_text(json.dumps({"tumour": ["tumour", "carcinoma"]}))
    assert read_prompt_file(tmp_path / "plain.json").templates is None
    (tmp_path / "bad.json").write_text(json.dumps({"0": {"classnames": {"A": []}}}))
    with pytest.raises(PromptFileError, match="bad.json"):
        read_prompt_file(tmp_path / "bad.json")
