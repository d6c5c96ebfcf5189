"""Zero-shot helpers: prompt ensembles on a real (tiny) MR-PLIP encoder, tile and slide scoring."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mrplip.models.checkpoint import save_model
from napari_mrplip.models.encoders import get_encoder
from napari_mrplip.models.mrplip import build_model
from napari_mrplip.models.prompts import TEMPLATES, PromptEmbedder, estimate_tokens
from napari_mrplip.models.synthetic import micro_config
from napari_mrplip.models.zeroshot import (
    classify,
    classify_slide,
    logits,
    prompt_ensemble,
    scaled_softmax,
    topj_pool,
)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    out = save_model(build_model(micro_config()), tmp_path_factory.mktemp("zs") / "m")
    return get_encoder(str(out), device="cpu")


def test_one_template_list_conch_style_and_short():
    assert len(set(TEMPLATES)) == len(TEMPLATES) >= 5
    assert all(t.count("{}") == 1 for t in TEMPLATES)
    assert "an H&E stained image of {}." in TEMPLATES
    ten_words = " ".join(["carcinoma"] * 10)
    assert max(estimate_tokens(t.format(ten_words)) for t in TEMPLATES) <= 77
    # the default of every ensemble is this list (heatmap, review and prompt_ensemble)
    assert PromptEmbedder(object()).templates == TEMPLATES


def test_prompt_ensemble_default_templates_match_the_prompt_embedder(encoder):
    a = prompt_ensemble(encoder, [["tumour", "carcinoma"], "stroma"])
    b = PromptEmbedder(encoder).embed(["tumour|carcinoma", "stroma"])
    assert np.allclose(a, b, atol=1e-6)


def test_prompt_ensemble_is_the_renormalised_mean(encoder):
    classes = ["tumour", ["stroma", "fibrous tissue"]]
    emb = prompt_ensemble(encoder, classes, templates=["{}.", "an image of {}."])
    assert emb.shape == (2, encoder.embed_dim) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    texts = ["stroma.", "an image of stroma.", "fibrous tissue.", "an image of fibrous tissue."]
    manual = encoder.encode_text(texts).mean(axis=0)
    assert np.allclose(emb[1], manual / np.linalg.norm(manual), atol=1e-5)
    as_dict = prompt_ensemble(
        encoder,
        {"t": "tumour", "s": ["stroma", "fibrous tissue"]},
        templates=["{}.", "an image of {}."],
    )
    assert np.allclose(as_dict, emb, atol=1e-6)
    with pytest.raises(ValueError):
        prompt_ensemble(encoder, [[]])


def test_classify_picks_the_nearest_class():
    classes = np.eye(3, 8, dtype=np.float32)
    tiles = np.array([[0.1, 0.9, 0, 0, 0, 0, 0, 0], [1, 0, 0.2, 0, 0, 0, 0, 0]], np.float32)
    p = classify(tiles, classes, logit_scale=50.0)
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1)
    assert p.argmax(1).tolist() == [1, 0] and p[0, 1] > 0.99
    flat = classify(tiles, classes, logit_scale=0.0)  # no temperature: uniform
    assert np.allclose(flat, 1 / 3)


def test_topj_pool_means_the_top_tiles():
    tl = np.array([[1.0, 5.0], [3.0, 0.0], [2.0, 4.0], [0.0, 1.0]])
    assert topj_pool(tl, 1).tolist() == [3.0, 5.0]
    assert topj_pool(tl, 2).tolist() == [2.5, 4.5]
    assert np.allclose(topj_pool(tl, 100), tl.mean(0))  # j > N uses all tiles
    with pytest.raises(ValueError):
        topj_pool(tl, 0)


def test_slide_classification_follows_the_strongest_tiles():
    classes = np.eye(2, 4, dtype=np.float32)
    # many weakly class-0 tiles, a few strongly class-1 tiles: top-j pooling finds class 1
    tiles = np.array([[0.6, 0.4, 0.7, 0]] * 20 + [[0.0, 1.0, 0, 0]] * 3, np.float32)
    assert classify_slide(tiles, classes, 20.0, j=3).argmax() == 1
    assert logits(tiles, classes, 20.0).shape == (23, 2)


def test_scaled_softmax_matches_the_definition_and_keeps_nan():
    cos = np.array([[0.2, 0.3, -0.1], [np.nan, 0.1, 0.0]], np.float32)
    p = scaled_softmax(cos, 100.0, axis=1)
    e = np.exp(100.0 * cos[0].astype(np.float64))
    assert np.allclose(p[0], e / e.sum(), atol=1e-6)
    assert np.isnan(p[1]).all()
    cols = scaled_softmax(cos.T, 100.0, axis=0)  # prompts along axis 0: same numbers
    assert np.allclose(cols.T[0], p[0])


def test_classify_on_non_unit_rows_is_the_softmax_of_scaled_cosines():
    tiles = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    classes = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    p = classify(tiles, classes, 100.0)
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1)
    assert p[0].argmax() == 0 and p[1].argmax() == 1
