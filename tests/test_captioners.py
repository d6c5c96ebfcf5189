"""Captioners: stain statistics and wording on real and hand-made tiles; the VLM code path."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mrplip.data.captioners import Captioner, StainCaptioner, VLMCaptioner
from napari_mrplip.data.keywords import extract_keywords
from napari_mrplip.data.stain import stain_stats
from napari_mrplip.data.vlm import VLMLoadError
from napari_mrplip.embed.tiles import read_tiles, xywh_to_boxes
from napari_mrplip.io import open_slide

# Level-0 boxes (x0, y0, w, h) of landmark regions, read at 20x (0.5 µm/px) as 112 px tiles.
CMU_DENSE = (1100, 2100, 224, 224)  # epidermis: crowded basal nuclei
CMU_STROMA = (800, 2500, 224, 224)  # dermis: pink collagen
CMU_GLASS = (100, 100, 224, 224)
OS2_KI67 = (1100, 1100, 220, 220)  # Ki67: brown DAB-positive nuclei among blue ones


@pytest.fixture(scope="module")
def tiles():
    from conftest import CMU_SVS, OS2_OME

    if not CMU_SVS.exists() or not OS2_OME.exists():
        pytest.skip("shared slides missing")
    cmu, os2 = open_slide(CMU_SVS), open_slide(OS2_OME)
    return {
        "dense": read_tiles(cmu, xywh_to_boxes(CMU_DENSE), 112)[0],
        "stroma": read_tiles(cmu, xywh_to_boxes(CMU_STROMA), 112)[0],
        "glass": read_tiles(cmu, xywh_to_boxes(CMU_GLASS), 112)[0],
        "ki67": read_tiles(os2, xywh_to_boxes(OS2_KI67), 112)[0],
        "cmu_5x": read_tiles(cmu, xywh_to_boxes((900, 1600, 448, 448)), 112)[0],
    }


def _brown_nuclei(n=12, size=112, seed=0) -> np.ndarray:
    """Pale blue background with round dark-brown DAB nuclei (about 8 µm at 0.5 µm/px)."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (190, 200, 220)  # pale haematoxylin counterstain
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in rng.integers(10, size - 10, size=(n, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = (110, 70, 40)
    return img


def test_stats_on_hand_made_tiles():
    white = stain_stats(np.full((64, 64, 3), 248, np.uint8), mpp=0.5)
    assert white["background_fraction"] == 1.0 and white["tissue_fraction"] == 0.0
    brown = stain_stats(_brown_nuclei(), mpp=0.5)
    assert brown["dab_positive_nuclei"] >= 8 and brown["dab_positive_fraction"] > 0.9
    assert brown["eosin"] < 0.005
    pink = np.full((64, 64, 3), (235, 140, 185), np.uint8)
    p = stain_stats(pink, mpp=0.5)
    assert p["stroma_fraction"] > 0.9 and p["dab_fraction"] == 0 and p["nuclear_fraction"] == 0
    with pytest.raises(ValueError, match="uint8"):
        stain_stats(np.zeros((8, 8, 3), np.float32))


def test_stats_on_real_tiles(tiles):
    dense, stroma = stain_stats(tiles["dense"]), stain_stats(tiles["stroma"])
    ki67, glass = stain_stats(tiles["ki67"]), stain_stats(tiles["glass"])
    assert dense["nuclear_fraction"] > 3 * stroma["nuclear_fraction"]
    assert stroma["stroma_fraction"] > 0.5 > dense["stroma_fraction"]
    assert ki67["dab_positive_nuclei"] >= 1 and dense["dab_positive_nuclei"] == 0
    assert ki67["eosin"] < 0.005 < stroma["eosin"]  # IHC has no eosin
    assert glass["background_fraction"] > 0.95


def test_captions_match_the_prompts_they_should(tiles):
    cap = StainCaptioner()
    assert isinstance(cap, Captioner)
    words = {k: cap.caption(t, 5.0 if k == "cmu_5x" else 20.0) for k, t in tiles.items()}
    assert "background" in words["glass"].lower()
    assert "nuclei" in words["dense"] and "background" not in words["dense"].lower()
    assert "stroma" in words["stroma"] and "dense" not in words["stroma"]
    assert "DAB-positive nuclei" in words["ki67"]
    assert "H&E" in words["dense"] or "haematoxylin and eosin" in words["dense"]
    assert "5x" in words["cmu_5x"] and "tissue" in words["cmu_5x"]
    assert len(set(words.values())) == len(words)
    keys = extract_keywords([words["dense"], words["ki67"]])
    assert "brown dab-positive nuclei" in keys or "dab-positive nuclei" in keys


def test_hand_made_captions():
    cap = StainCaptioner()
    assert "background" in cap.caption(np.full((112, 112, 3), 250, np.uint8), 20).lower()
    assert "DAB-positive nuclei" in cap.caption(_brown_nuclei(), 20)
    membranes = np.full((112, 112, 3), (150, 100, 60), np.uint8)
    assert "DAB" in cap.caption(membranes, 20)


def test_captions_deterministic_and_varied(tiles):
    cap = StainCaptioner()
    assert cap.caption(tiles["dense"], 20) == cap.caption(tiles["dense"].copy(), 20)
    # Different tiles of the same kind get different phrasings.
    phrasings = {cap.caption(_brown_nuclei(seed=s), 20) for s in range(12)}
    assert len(phrasings) >= 3
    assert all("DAB" in p for p in phrasings)


def test_magnification_changes_vocabulary(tiles):
    cap = StainCaptioner()
    low, high = cap.caption(tiles["dense"], 5), cap.caption(tiles["dense"], 20)
    assert "Low power" in low or "5x" in low
    assert "chromatin" in high and "chromatin" not in low


def _tiny_llava(path):
    """A random 2-layer LLaVA (CLIP vision + Llama text) with an offline word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:"]
    words += "can you provide a concise description of the histopathology image shown ? dense nuclei pink stroma".split()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    template = (
        "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %} "
        "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(words),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        image_token_index=4,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return words


@pytest.mark.slow
def test_vlm_captioner_runs_a_local_llava(tmp_path, tiles):
    words = _tiny_llava(tmp_path / "llava")
    cap = VLMCaptioner(tmp_path / "llava", max_new_tokens=6)
    assert isinstance(cap, Captioner)
    text = cap.caption(tiles["dense"], 20)
    assert text and all(w in words for w in text.split())  # decoded from the tiny vocabulary
    assert cap.caption(tiles["dense"], 20) == text  # greedy decoding is deterministic
    import pickle

    assert pickle.loads(pickle.dumps(cap))._model is None  # picklable without the weights


def test_vlm_captioner_clear_errors(tmp_path):
    with pytest.raises(VLMLoadError, match="no config.json"):
        VLMCaptioner(tmp_path / "absent")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    cap = VLMCaptioner(tmp_path / "broken")
    with pytest.raises(VLMLoadError, match="broken"):
        cap.caption(np.zeros((16, 16, 3), np.uint8), 20)


@pytest.mark.slow
def test_vlm_batched_generation_equals_one_at_a_time(tmp_path, tiles):
    _tiny_llava(tmp_path / "llava")
    cap = VLMCaptioner(tmp_path / "llava", max_new_tokens=6)
    batch = np.stack([tiles[k] for k in ("dense", "stroma", "glass", "ki67")])
    one_by_one = [cap.caption(t, 20) for t in batch]
    assert cap.caption_batch(batch, [20] * 4) == one_by_one  # left padding changes nothing
    from napari_mrplip.data.captioners import caption_tiles

    assert caption_tiles(cap, batch, [20] * 4) == one_by_one
