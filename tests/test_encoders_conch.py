"""CONCH as its authors publish it, checked against a reference assembled here (non-circular).

The reference is built from the library classes CONCH itself uses (a timm ViT trunk,
open_clip's ``AttentionalPooler`` with CONCH's fixed 8 heads, open_clip's
``TextTransformer`` with an appended CLS token) under CONCH's published key names, and run
by a forward written here from CONCH's description; the project's ``ConchModel`` is not used
to build or run it. The tokenizer has CONCH's normalisation (NFD, strip accents, lowercase,
byte-level with a prefix space). Widths and depths are small: key names do not depend on
them. The hub layout (``pytorch_model.bin`` + ``meta.yaml``) finds its tokenizer and config
in an installed ``conch`` package (a package directory made here on ``sys.path``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_mrplip.models.encoders import get_encoder
from napari_mrplip.models.errors import ModelLoadError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WIDTH, DIM, CTX, VOCAB, SIZE = 64, 32, 24, 300, 64
#: A config shaped exactly like CONCH's conch_ViT-B-16.json; smaller numbers, same keys.
CONFIG = {
    "embed_dim": DIM,
    "embed_dim_caption": WIDTH,
    "vision_cfg": {
        "image_size": SIZE,
        "patch_size": 16,
        "layers": 2,
        "width": WIDTH,
        "num_heads": 4,
        "attentional_pool_caption": True,
        "attentional_pool_contrast": True,
        "attn_pooler_heads": 8,
        "n_queries_contrast": 1,
        "n_queries_caption": 4,
        "output_tokens": True,
    },
    "text_cfg": {
        "context_length": CTX,
        "vocab_size": VOCAB,
        "width": WIDTH,
        "heads": 4,
        "layers": 2,
        "embed_cls": True,
        "output_tokens": True,
    },
    "multimodal_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": WIDTH, "heads": 4},
    "custom_text": True,
}
TEXTS = ["Dense nuclei in tumour", "pink stroma with fibroblasts", "Café-au-lait background"]


def conch_tokenizer(path: Path) -> None:
    """A byte-level BPE with CONCH's normaliser and special tokens (<pad> = 0)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    special = ["<pad>", "<start_of_text>", "<end_of_text>"]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=special, show_progress=False)
    corpus = ["dense nuclei in tumour", "pink stroma with fibroblasts", "cafe au lait fat"] * 20
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<start_of_text> $A <end_of_text>",
        special_tokens=[("<start_of_text>", 1), ("<end_of_text>", 2)],
    )
    tok.save(str(path))


class Reference:
    """CONCH's contrastive forward over a state dict with its published key names."""

    def __init__(self, cfg: dict = CONFIG, seed: int = 5):
        from open_clip.transformer import AttentionalPooler, TextTransformer
        from timm.models.vision_transformer import VisionTransformer

        torch.manual_seed(seed)
        v, t = cfg["vision_cfg"], cfg["text_cfg"]
        dim, self.size, self.ctx = cfg["embed_dim"], v["image_size"], t["context_length"]
        width, self.width = v.get("width", 768), t["width"]
        assert v["attn_pooler_heads"] == 8
        self.trunk = VisionTransformer(
            img_size=self.size,
            patch_size=v["patch_size"],
            embed_dim=width,
            depth=v.get("layers", 12),
            num_heads=v.get("num_heads", 12),
            num_classes=0,
            global_pool="",
        ).eval()
        self.pool = AttentionalPooler(dim, width, n_head=8, n_queries=1).eval()
        cap = cfg["embed_dim_caption"]
        self.pool_caption = AttentionalPooler(
            cap, width, n_head=8, n_queries=v["n_queries_caption"]
        )
        self.ln = torch.nn.LayerNorm(dim)
        torch.nn.init.normal_(self.ln.weight, 1.0, 0.2)
        torch.nn.init.normal_(self.ln.bias, 0.0, 0.2)
        self.proj = torch.randn(dim, dim) * dim**-0.5
        self.text = TextTransformer(
            context_length=self.ctx - 1,
            vocab_size=t["vocab_size"],
            width=t["width"],
            heads=t["heads"],
            layers=t["layers"],
            output_dim=dim,
            embed_cls=True,
            pad_id=0,
        ).eval()
        torch.nn.init.normal_(self.text.cls_emb, std=0.5)
        self.cap = cap

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"visual.trunk.{k}": x for k, x in self.trunk.state_dict().items()}
        state |= {f"visual.attn_pool_contrast.{k}": x for k, x in self.pool.state_dict().items()}
        state |= {
            f"visual.attn_pool_caption.{k}": x for k, x in self.pool_caption.state_dict().items()
        }
        state |= {f"visual.ln_contrast.{k}": x for k, x in self.ln.state_dict().items()}
        state |= {
            "visual.ln_caption.weight": torch.ones(self.cap),
            "visual.ln_caption.bias": torch.zeros(self.cap),
        }
        state["visual.proj_contrast"] = self.proj
        state |= {f"text.{k}": x for k, x in self.text.state_dict().items()}
        state["text_decoder.ln_final.weight"] = torch.ones(self.width)  # skipped: captioning only
        state["text.attn_mask"] = torch.zeros(self.ctx, self.ctx)  # older files carry this buffer
        state["logit_scale"] = torch.tensor(np.log(1 / 0.07), dtype=torch.float32)
        return state

    @torch.no_grad()
    def image(self, tiles: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True) / 255
        mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
        x = (x - mean) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
        tokens = self.trunk(x)  # (B, 1 + N, W): global_pool='' keeps every token
        return self.ln(self.pool(tokens)[:, 0]) @ self.proj

    @torch.no_grad()
    def text_embed(self, tokenizer_file: Path, texts: list[str]) -> torch.Tensor:
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(tokenizer_file),
            bos_token="<start_of_text>",
            eos_token="<end_of_text>",
            pad_token="<pad>",
        )
        ids = tok(  # CONCH calls batch_encode_plus (removed in transformers 5): same arguments
            texts,
            max_length=self.ctx - 1,
            truncation=True,
            padding="max_length",
            return_tensors="pt",
        )["input_ids"]
        ids = F.pad(ids, (0, 1), value=0)[:, :-1]  # CONCH pads to 128 then drops the last
        return self.text(ids)


def _tiles(n=3, px=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, px, px, 3), dtype=np.uint8)


def _cos(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return F.cosine_similarity(a, b, dim=-1)


@pytest.fixture(scope="module")
def conch_package(tmp_path_factory):
    """An installed-looking ``conch`` package holding only the authors' side files."""
    site = tmp_path_factory.mktemp("site")
    pkg = site / "conch" / "open_clip_custom"
    (pkg / "tokenizers").mkdir(parents=True)
    (pkg / "model_configs").mkdir()
    (site / "conch" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    conch_tokenizer(pkg / "tokenizers" / "conch_byte_level_bpe_uncased.json")
    (pkg / "model_configs" / "conch_ViT-B-16.json").write_text(json.dumps(CONFIG))
    return site


@pytest.fixture(scope="module")
def hub_copy(tmp_path_factory):
    """``pytorch_model.bin`` + ``meta.yaml``: what huggingface-cli download MahmoodLab/CONCH gives."""
    out = tmp_path_factory.mktemp("hub") / "CONCH"
    out.mkdir()
    ref = Reference()
    torch.save(ref.state_dict(), out / "pytorch_model.bin")
    (out / "meta.yaml").write_text("model_name: conch_ViT-B-16\n")
    return out, ref


def test_hub_copy_uses_the_installed_package_and_matches_the_reference(
    hub_copy, conch_package, monkeypatch
):
    root, ref = hub_copy
    monkeypatch.syspath_prepend(str(conch_package))
    with pytest.warns(UserWarning, match="1 unexpected key"):
        enc = get_encoder(str(root), device="cpu")
    assert "conch" not in sys.modules  # found by find_spec, never imported
    assert enc.input_size == SIZE and enc.context_length == CTX and enc.embed_dim == DIM
    assert enc.load_report.unexpected == ("text.attn_mask",)
    assert enc.load_report.skipped > 0 and not enc.load_report.missing
    tiles = _tiles()
    assert _cos(enc.encode_tiles(tiles), ref.image(tiles)).min() >= 0.9999
    tok_file = conch_package / "conch/open_clip_custom/tokenizers/conch_byte_level_bpe_uncased.json"
    assert _cos(enc.encode_text(TEXTS), ref.text_embed(tok_file, TEXTS)).min() >= 0.9999
    # CONCH's normalisation: accents, case and the prefix space do not change the embedding
    same = enc.encode_text(["cafe-au-lait background", "CAFÉ-AU-LAIT BACKGROUND"])
    assert _cos(same[0], same[1]) >= 0.99999
    assert enc.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_pooler_heads_are_always_eight(hub_copy, conch_package, monkeypatch, tmp_path):
    """A config asking for 4 heads is overridden (CONCH's code ignores it): still the reference."""
    root, ref = hub_copy
    monkeypatch.syspath_prepend(str(conch_package))
    cfg = json.loads(json.dumps(CONFIG))
    cfg["vision_cfg"]["attn_pooler_heads"] = 4
    out = tmp_path / "conch4"
    out.mkdir()
    (out / "pytorch_model.bin").symlink_to(root / "pytorch_model.bin")
    (out / "conch_ViT-B-16.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="always builds 8"):
        enc = get_encoder(str(out), device="cpu")
    tiles = _tiles(2, seed=4)
    assert _cos(enc.encode_tiles(tiles), ref.image(tiles)).min() >= 0.9999


def test_hf_cache_spelling_is_case_insensitive(hub_copy, conch_package, monkeypatch, tmp_path):
    root, ref = hub_copy
    monkeypatch.syspath_prepend(str(conch_package))
    snap = tmp_path / "hub" / "models--MahmoodLab--CONCH" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for name in ("pytorch_model.bin", "meta.yaml"):
        (snap / name).symlink_to(root / name)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.warns(UserWarning):
        enc = get_encoder("hf-hub:MahmoodLab/conch", device="cpu")  # the README's spelling
    tiles = _tiles(2, seed=9)
    assert _cos(enc.encode_tiles(tiles), ref.image(tiles)).min() >= 0.9999


def test_hub_copy_without_the_package_says_how_to_get_the_tokenizer(hub_copy, monkeypatch):
    root, _ = hub_copy
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "conch" else real(name, *a)
    )
    with pytest.raises(ModelLoadError) as e:
        get_encoder(str(root), device="cpu")
    msg = str(e.value)
    assert "conch_byte_level_bpe_uncased.json" in msg and str(root) in msg
    assert "pip install git+https://github.com/mahmoodlab/CONCH.git" in msg


def test_missing_weights_and_oversized_config(tmp_path, conch_package, monkeypatch):
    monkeypatch.syspath_prepend(str(conch_package))
    out = tmp_path / "c"
    out.mkdir()
    conch_tokenizer(out / "conch_byte_level_bpe_uncased.json")
    with pytest.raises(ModelLoadError, match="huggingface-cli download MahmoodLab/CONCH"):
        get_encoder(str(out), device="cpu")
    # a config describing a far larger model than the file holds is refused before allocating
    big = json.loads(json.dumps(CONFIG))
    big["vision_cfg"].update(width=4096, layers=48)
    (out / "conch_ViT-B-16.json").write_text(json.dumps(big))
    torch.save({"logit_scale": torch.tensor(1.0)}, out / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="do not belong together"):
        get_encoder(str(out), device="cpu")


#: CONCH's published conch_ViT-B-16.json (vision width/depth/heads are timm ViT-B/16's).
NATIVE = {
    "embed_dim": 512,
    "embed_dim_caption": 768,
    "vision_cfg": {
        "image_size": 448,
        "patch_size": 16,
        "attentional_pool_caption": True,
        "attentional_pool_contrast": True,
        "attn_pooler_heads": 8,
        "n_queries_contrast": 1,
        "n_queries_caption": 256,
        "output_tokens": True,
    },
    "text_cfg": {
        "context_length": 128,
        "vocab_size": 32007,
        "width": 768,
        "heads": 12,
        "layers": 12,
        "embed_cls": True,
        "output_tokens": True,
    },
    "multimodal_cfg": {
        "context_length": 128,
        "vocab_size": 32007,
        "width": 768,
        "heads": 12,
        "layers": 12,
    },
    "custom_text": True,
}


@pytest.mark.slow
def test_native_size_conch_matches_the_reference(tmp_path, monkeypatch):
    """The published architecture at full size (448 px, ViT-B/16, 12-layer text, 32007 tokens)."""
    site = tmp_path / "site"
    pkg = site / "conch" / "open_clip_custom"
    (pkg / "tokenizers").mkdir(parents=True)
    (pkg / "model_configs").mkdir()
    (site / "conch" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    conch_tokenizer(pkg / "tokenizers" / "conch_byte_level_bpe_uncased.json")
    (pkg / "model_configs" / "conch_ViT-B-16.json").write_text(json.dumps(NATIVE))
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "CONCH"
    out.mkdir()
    ref = Reference(NATIVE, seed=7)
    torch.save(ref.state_dict(), out / "pytorch_model.bin")
    (out / "meta.yaml").write_text("model_name: conch_ViT-B-16\n")
    with pytest.warns(UserWarning):
        enc = get_encoder(str(out), device="cpu")
    assert enc.input_size == 448 and enc.context_length == 128 and enc.embed_dim == 512
    tiles = _tiles(2, px=512)
    assert _cos(enc.encode_tiles(tiles), ref.image(tiles)).min() >= 0.9999
    tok = pkg / "tokenizers" / "conch_byte_level_bpe_uncased.json"
    assert _cos(enc.encode_text(TEXTS), ref.text_embed(tok, TEXTS)).min() >= 0.9999
