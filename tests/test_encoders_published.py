"""Published layouts beyond CONCH: HF text towers, bare open_clip checkpoints, vision-only
timm encoders, KEEP and MUSK. Each model is random, built by the reference library (open_clip,
timm, transformers) at the published config and key names, saved in the published layout,
loaded by ``get_encoder`` and compared with the reference library's own forward (cosine).
Widths and depths are reduced where that changes no key name (noted per test).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_mrplip.models.encoders import get_encoder
from napari_mrplip.models.errors import ModelLoadError, NoTextTowerError

TEXTS = ["dense nuclei in tumour", "pink stroma with fibroblasts", "adipose tissue"]
OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
BERT_NAME = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
#: BiomedCLIP's published open_clip_config.json (legacy ``proj`` / ``pooler_type`` keys, which the
#: reference run renames for current open_clip); only the timm trunk is the tiny ViT
#: (same key names as vit_base_patch16_224; the BERT is small through its own config).
BIOMEDCLIP = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": BERT_NAME,
            "hf_tokenizer_name": BERT_NAME,
            "proj": "mlp",  # the published file keeps open_clip's older key names
            "pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    },
    "preprocess_cfg": {"mean": list(OPENAI[0]), "std": list(OPENAI[1])},
}
SMALL_BERT = {
    "model_type": "bert",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
    "vocab_size": 60,
}


def _tiles(n=3, px=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, px, px, 3), dtype=np.uint8)


def _norm(tiles, size, mean, std):
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _cos(a, b):
    return F.cosine_similarity(torch.as_tensor(a).double(), torch.as_tensor(b).double(), dim=-1)


def _vocab(folder: Path) -> None:
    """A WordPiece vocabulary (BERT special tokens + the test words) and its tokenizer files."""
    from transformers import BertTokenizerFast

    words = sorted({w for t in TEXTS for w in t.split()} | {"cafe", "tissue", "."})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)


def _hf_cache(root: Path, repo: str, files: dict[str, str]) -> Path:
    snap = root / ("models--" + repo.replace("/", "--")) / "snapshots" / "rev0"
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)
    return snap


# ---------------------------------------------------------------- BiomedCLIP (HF text tower)
@pytest.fixture(scope="module")
def biomedclip(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("biomedclip")
    hub = root / "hub"
    bert_dir = _hf_cache(hub, BERT_NAME, {"config.json": json.dumps(SMALL_BERT)})
    # the reference: open_clip itself, from a local-dir whose config names the local BERT
    ref_dir = root / "reference"
    ref_dir.mkdir()
    ref_cfg = json.loads(json.dumps(BIOMEDCLIP))
    text = ref_cfg["model_cfg"]["text_cfg"]
    text["hf_proj_type"], text["hf_pooler_type"] = text.pop("proj"), text.pop("pooler_type")
    ref_cfg["model_cfg"]["text_cfg"]["hf_model_name"] = str(bert_dir)
    ref_cfg["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = str(ref_dir)
    (ref_dir / "open_clip_config.json").write_text(json.dumps(ref_cfg))
    _vocab(ref_dir)
    torch.manual_seed(11)
    cfg = json.loads(json.dumps(ref_cfg["model_cfg"]))
    cfg["text_cfg"]["hf_model_pretrained"] = False
    model = open_clip.model.CustomTextCLIP(**cfg).eval()
    torch.save(model.state_dict(), ref_dir / "open_clip_pytorch_model.bin")
    reference = open_clip.create_model(f"local-dir:{ref_dir}").eval()
    ref_tok = open_clip.get_tokenizer(f"local-dir:{ref_dir}")
    # the published layout: hub names in the config, tokenizer files next to the weights
    pub = hub / "models--microsoft--BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    snap = pub / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "open_clip_config.json").write_text(json.dumps(BIOMEDCLIP))
    (snap / "open_clip_pytorch_model.bin").symlink_to(ref_dir / "open_clip_pytorch_model.bin")
    _vocab(snap)
    return hub, reference, ref_tok


def test_biomedclip_hf_text_tower_matches_open_clip(biomedclip, monkeypatch):
    hub, reference, ref_tok = biomedclip
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    enc = get_encoder("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    assert enc.context_length == 256 and enc.input_size == 224 and enc.load_report.clean
    tiles = _tiles()
    with torch.no_grad():
        img = reference.encode_image(_norm(tiles, 224, *OPENAI))
        txt = reference.encode_text(ref_tok(TEXTS))
    assert _cos(enc.encode_tiles(tiles), img).min() >= 0.9999
    assert _cos(enc.encode_text(TEXTS), txt).min() >= 0.9999


def test_hf_text_tower_without_its_config_says_what_to_download(biomedclip, tmp_path, monkeypatch):
    hub, _, _ = biomedclip
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    snap = hub / "models--microsoft--BiomedCLIP-PubMedBERT_256-vit_base_patch16_224/snapshots/rev1"
    with pytest.raises(ModelLoadError) as e:
        get_encoder(str(snap))
    assert f"huggingface-cli download {BERT_NAME} config.json" in str(e.value)


# ---------------------------------------------------------------- PathGen-CLIP (bare file)
@pytest.mark.parametrize("wrapped", [False, True])
def test_open_clip_arch_at_file_matches_open_clip(tmp_path, wrapped):
    """ViT-S-32: a small bundled open_clip architecture (ViT-B-16's key names)."""
    import open_clip

    torch.manual_seed(12)
    model = open_clip.create_model("ViT-S-32").eval()
    state = model.state_dict()
    file = tmp_path / "pathgenclip.pt"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrapped else state, file
    )
    reference = open_clip.create_model("ViT-S-32", pretrained=str(file)).eval()
    tok = open_clip.get_tokenizer("ViT-S-32")
    enc = get_encoder(f"open_clip:ViT-S-32@{file}")
    tiles = _tiles()
    with torch.no_grad():
        img = reference.encode_image(_norm(tiles, 224, *OPENAI))
        txt = reference.encode_text(tok(TEXTS))
    assert _cos(enc.encode_tiles(tiles), img).min() >= 0.9999
    assert _cos(enc.encode_text(TEXTS), txt).min() >= 0.9999


def test_open_clip_arch_errors_name_the_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="open_clip:ARCH@FILE"):
        get_encoder("open_clip:ViT-B-16")
    with pytest.raises(ModelLoadError, match="list_models"):
        get_encoder(f"open_clip:ViT-Q-99@{tmp_path / 'x.pt'}")
    with pytest.raises(ModelLoadError, match="does not exist"):
        get_encoder(f"open_clip:ViT-B-16@{tmp_path / 'x.pt'}")


# ---------------------------------------------------------------- vision-only (timm format)
def _timm_folder(out: Path, config: dict, seed: int):
    import timm

    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    args = dict(config["model_args"])
    if args.get("mlp_layer") == "timm.layers.SwiGLUPacked":
        args["mlp_layer"], args["act_layer"] = timm.layers.SwiGLUPacked, torch.nn.SiLU
    torch.manual_seed(seed)
    model = timm.create_model(config["architecture"], pretrained=False, **args).eval()
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(out / "model.safetensors"))
    return model


SMALL_VIT = {"embed_dim": 64, "depth": 2, "num_heads": 4}


def test_uni_layout_matches_timm_and_refuses_prompts(tmp_path):
    """UNI's timm hub config (vit_large_patch16_224 arguments), width/depth reduced."""
    cfg = {
        "architecture": "vit_large_patch16_224",
        "num_classes": 0,
        "model_args": {
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "num_classes": 0,
            "dynamic_img_size": True,
            **SMALL_VIT,
        },
        "pretrained_cfg": {"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])},
    }
    model = _timm_folder(tmp_path / "uni", cfg, 13)
    enc = get_encoder(str(tmp_path / "uni"))
    tiles = _tiles()
    with torch.no_grad():
        ref = model(_norm(tiles, 224, *IMAGENET))
    assert _cos(enc.encode_tiles(tiles), ref).min() >= 0.9999
    assert not enc.has_text
    with pytest.raises(NoTextTowerError, match="vision-only.*linear probe"):
        enc.encode_text(TEXTS)


def test_virchow_layout_cls_plus_mean_tokens(tmp_path):
    """Virchow's config names SwiGLUPacked/SiLU as strings and keeps every token."""
    cfg = {
        "architecture": "vit_huge_patch14_224",
        "model_args": {
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            "mlp_layer": "timm.layers.SwiGLUPacked",
            "act_layer": "torch.nn.SiLU",
            **SMALL_VIT,
            "embed_dim": 96,  # 96 x 5.3375 rounds to an even SwiGLU width
        },
        "pretrained_cfg": {"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])},
    }
    model = _timm_folder(tmp_path / "virchow", cfg, 14)
    enc = get_encoder(str(tmp_path / "virchow"))
    tiles = _tiles(2)
    with torch.no_grad():
        out = model(_norm(tiles, 224, *IMAGENET))
    ref = torch.cat([out[:, 0], out[:, 1:].mean(1)], dim=-1)  # Virchow's model card
    assert enc.embed_dim == 192
    assert _cos(enc.encode_tiles(tiles), ref).min() >= 0.9999
    cfg["model_args"]["act_layer"] = "os.system"
    (tmp_path / "virchow" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="nothing is imported by name"):
        get_encoder(str(tmp_path / "virchow"))


# ---------------------------------------------------------------- KEEP (native rebuild)
def test_keep_rebuilt_natively_matches_timm_and_bert(tmp_path, monkeypatch):
    """KEEP's key names (visual, visual_head, text, logit_scale); ViT-L reduced in width/depth."""
    import timm
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from napari_mrplip.models.encoders import keep

    monkeypatch.setattr(keep, "VISION_ARGS", {**keep.VISION_ARGS, **SMALL_VIT})
    out = tmp_path / "KEEP"
    _vocab(out)
    (out / "modeling_keep.py").write_text("raise SystemExit('shipped code must never run')\n")
    text_cfg = {k: v for k, v in SMALL_BERT.items() if k != "model_type"}
    (out / "config.json").write_text(
        json.dumps(
            {
                "model_type": "keep",
                "text_config": text_cfg,
                "projection_dim": 32,
                "auto_map": {"AutoModel": "modeling_keep.KEEPModel"},
            }
        )
    )
    torch.manual_seed(15)
    visual = timm.create_model("vit_large_patch16_224", pretrained=False, **keep.VISION_ARGS).eval()
    head = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.GELU(), torch.nn.Linear(32, 32))
    text = BertModel(BertConfig(**text_cfg)).eval()
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    state |= {f"visual_head.{k}": v for k, v in head.state_dict().items()}
    state |= {f"text.{k}": v for k, v in text.state_dict().items()}
    state["logit_scale"] = torch.tensor(float(np.log(1 / 0.04)))
    from safetensors.torch import save_file

    save_file(state, str(out / "model.safetensors"))
    enc = get_encoder(str(out))
    assert enc.context_length == 256 and enc.logit_scale == pytest.approx(25.0, rel=1e-4)
    tiles = _tiles()
    tok = BertTokenizerFast.from_pretrained(str(out))
    with torch.no_grad():
        img = head(visual(_norm(tiles, 224, *IMAGENET)))
        ids = tok(TEXTS, max_length=256, padding="max_length", truncation=True, return_tensors="pt")
        txt = text(**ids).pooler_output
    assert _cos(enc.encode_tiles(tiles), img).min() >= 0.9999
    assert _cos(enc.encode_text(TEXTS), txt).min() >= 0.9999
    (out / "vocab.txt").unlink()
    with pytest.raises(
        ModelLoadError, match="vocab.txt.*huggingface-cli download Astaxanthin/KEEP"
    ):
        get_encoder(str(out))


# ---------------------------------------------------------------- MUSK (authors' package)
def test_musk_without_its_package_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("musk") is not None:
        pytest.skip("the MUSK package is installed here")
    from safetensors.torch import save_file

    out = tmp_path / "musk"
    out.mkdir()
    save_file(
        {"beit3.encoder.layers.0.ffn.fc1.weight": torch.zeros(2, 2)}, str(out / "model.safetensors")
    )
    with pytest.raises(
        ModelLoadError, match="pip install git\\+https://github.com/lilab-stanford/MUSK"
    ):
        get_encoder(str(out))
    with pytest.raises(ModelLoadError, match="huggingface-cli download xiangjx/musk"):
        get_encoder(f"musk:{tmp_path / 'absent'}")
