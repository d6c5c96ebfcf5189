"""Training vocabulary: recorded by training, shipped with the embedded model, and prompts
made of unseen words flagged (CLI stderr, panel); external models are never flagged."""

from __future__ import annotations

import json

import pytest

from napari_mrplip.models.vocabulary import (
    TrainingVocabulary,
    content_words,
    prompt_warnings,
    vocabulary_for_spec,
)


def test_content_words_fold_spelling_plural_and_stop_words():
    assert content_words("A photomicrograph showing Tumour cells") == ["tumor", "cell"]
    assert content_words("brown DAB-positive nuclei|nucleus") == [
        "brown", "dab-positive", "dab", "positive", "nuclei",
    ]  # fmt: skip


def test_embedded_model_knows_its_stain_phrases_not_tumour():
    vocab = vocabulary_for_spec("mrplip-demo")
    assert vocab is not None and "dense nuclei" in vocab.phrases
    for known in ("dense nuclei", "pink stroma", "brown DAB-positive nuclei", "background"):
        assert vocab.unseen(known) == [], known
    (msg,) = prompt_warnings(vocab, ["tumour"])
    assert "'tumour'" in msg and "never saw" in msg
    assert vocab.unseen("lymphocytes") == ["lymphocytes"]
    assert prompt_warnings(vocab, ["dense nuclei", "pink stroma|stroma"]) == []


def test_external_models_get_no_warning(tmp_path):
    (tmp_path / "open_clip_config.json").write_text("{}")
    assert vocabulary_for_spec(str(tmp_path)) is None
    assert vocabulary_for_spec("hf-hub:wisdomik/QuiltNet-B-32") is None
    assert prompt_warnings(None, ["tumour"]) == []


def test_finetuned_checkpoint_inherits_base_vocabulary_plus_classes(tmp_path):
    cfg = {"base_model": "mrplip-demo", "class_names": ["tumour", "stroma"]}
    (tmp_path / "finetune_config.json").write_text(json.dumps(cfg))
    vocab = vocabulary_for_spec(str(tmp_path))
    assert vocab.unseen("tumour") == [] and vocab.unseen("lymphocytes") == ["lymphocytes"]


def test_pretraining_records_the_manifest_vocabulary(tmp_path):
    from napari_mrplip.train.data_setup import write_vocabulary

    rec = {
        "slide": "a.svs",
        "tiles": [{"caption": "20x: dense nuclei in pink stroma"}],
        "keywords": ["dense nuclei"],
    }
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(rec) + "\n")
    write_vocabulary(manifest, tmp_path)
    vocab = TrainingVocabulary.load(tmp_path)
    assert vocab.words == {"dense", "nuclei", "pink", "stroma"}
    assert vocab.phrases == ("dense nuclei",)


def test_bad_vocabulary_file_names_itself(tmp_path):
    (tmp_path / "vocabulary.json").write_text("{not json")
    with pytest.raises(ValueError, match="vocabulary.json"):
        TrainingVocabulary.load(tmp_path)


def test_cli_warns_on_stderr(tmp_path, capsys):
    import numpy as np

    from napari_mrplip.cli import main
    from napari_mrplip.io.writers import write_pyramid

    # a slide that opens (slides that do not are refused before the model loads) but is over
    # a one-tile budget, so the run stops after the model loaded and the warning was printed
    slide = write_pyramid(tmp_path / "s.ome.tif", np.full((256, 256, 3), 200, np.uint8), mpp=0.5)
    rc = main(["heatmap", str(slide), "--prompt", "tumour", "--prompt", "dense nuclei",
               "--out", str(tmp_path / "h.ome.tif"), "--device", "cpu", "--max-tiles", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2  # every slide failed (over the budget); the warning came first
    assert "warning: prompt 'tumour'" in err and "dense nuclei" not in err.split("budget")[0]
