"""Contract tests: every encoder backend, loaded from tiny random models in its real on-disk format.

Formats built here: MR-PLIP checkpoint dir, open_clip ``local-dir`` (safetensors and .bin),
a Hugging Face cache layout for ``hf-hub:``, a transformers ``CLIPModel`` (PLIP) directory
with an offline-built CLIP tokenizer. CONCH has its own non-circular test
(``test_encoders_conch.py``); more published layouts are in ``test_encoders_published.py``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_mrplip.models.encoders import get_encoder
from napari_mrplip.models.errors import ModelLoadError
from napari_mrplip.models.protocol import EncoderBackend
from open_clip_tiny import tiny_clip, tiny_clip_cfg, write_open_clip_dir

TEXTS = ["dense nuclei", "pink stroma with fibroblasts", "background"]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # deliberately not CLIP's: must be honoured


def _tiles(n=3, px=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, px, px, 3), dtype=np.uint8)


def _norm(tiles, size, mean, std):
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# ------------------------------------------------------------------ format builders
def _mrplip_dir(root: Path):
    from napari_mrplip.models.checkpoint import save_model
    from napari_mrplip.models.mrplip import build_model
    from napari_mrplip.models.synthetic import micro_config
    from napari_mrplip.models.tokenizer import get_tokenizer

    model = build_model(micro_config(image_mean=list(MEAN), image_std=list(STD))).eval()
    out = save_model(model, root / "mrplip")
    tok = get_tokenizer(model.config.context_length)

    def reference(tiles, texts):
        return model.encode_image(_norm(tiles, 32, MEAN, STD)), model.encode_text(tok(texts))

    return str(out), reference


def _open_clip_model():
    cfg = tiny_clip_cfg(layers=2, context_length=16)
    return tiny_clip(cfg, seed=1), cfg


def _write_open_clip(out: Path, model, cfg, weights: str):
    preprocess = {"mean": list(MEAN), "std": list(STD)}
    write_open_clip_dir(out, model, cfg, weights, preprocess)


def _open_clip_reference(model):
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=16)

    def reference(tiles, texts):
        return model.encode_image(_norm(tiles, 32, MEAN, STD)), model.encode_text(tok(texts))

    return reference


def _open_clip_dir(root: Path, weights="open_clip_model.safetensors", prefix="local-dir:"):
    model, cfg = _open_clip_model()
    _write_open_clip(root / "quilt", model, cfg, weights)
    return prefix + str(root / "quilt"), _open_clip_reference(model)


def _hf_cache(root: Path, monkeypatch):
    model, cfg = _open_clip_model()
    repo = root / "hub" / "models--wisdomik--QuiltNet-tiny"
    _write_open_clip(repo / "snapshots" / "0123abcd", model, cfg, "open_clip_pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hub"))
    return "hf-hub:wisdomik/QuiltNet-tiny", _open_clip_reference(model)


def _clip_vocab(out: Path):
    """vocab.json + merges.txt of CLIP's BPE, from open_clip's bundled file (offline)."""
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    vocab = dict(SimpleTokenizer().encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    (out / "vocab.json").write_text(json.dumps(vocab))
    merges = gzip.open(default_bpe()).read().decode().split("\n")[1 : 49152 - 256 - 2 + 1]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def _plip_dir(root: Path):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    src = root / "vocab"
    src.mkdir()
    _clip_vocab(src)
    tok = CLIPTokenizer(str(src / "vocab.json"), str(src / "merges.txt"))
    small = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    cfg = CLIPConfig(
        text_config={**small, "max_position_embeddings": 77, "vocab_size": 49408},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(2)
    model = CLIPModel(cfg).eval()
    out = root / "plip"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    pre = {
        "crop_size": {"height": 32, "width": 32},
        "image_mean": list(MEAN),
        "image_std": list(STD),
    }
    (out / "preprocessor_config.json").write_text(json.dumps(pre))

    def reference(tiles, texts):
        img = model.get_image_features(pixel_values=_norm(tiles, 32, MEAN, STD))
        txt = model.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
        return _pooled(img), _pooled(txt)

    return str(out), reference


def _pooled(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


FORMATS = [
    "mrplip",
    "open_clip_safetensors",
    "open_clip_bin_plain_dir",
    "hf_cache",
    "plip",
]


@pytest.fixture(scope="module")
def _module_monkeypatch():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module", params=FORMATS)
def built(request, tmp_path_factory, _module_monkeypatch):
    root = tmp_path_factory.mktemp(request.param)
    name = request.param
    if name == "mrplip":
        spec, ref = _mrplip_dir(root)
    elif name == "open_clip_safetensors":
        spec, ref = _open_clip_dir(root)
    elif name == "open_clip_bin_plain_dir":
        spec, ref = _open_clip_dir(root, "open_clip_pytorch_model.bin", prefix="")
    elif name == "hf_cache":
        spec, ref = _hf_cache(root, _module_monkeypatch)
    else:
        spec, ref = _plip_dir(root)
    encoder = get_encoder(spec, device="cpu")
    return name, encoder, ref


def test_protocol_and_attributes(built):
    name, enc, _ = built
    assert isinstance(enc, EncoderBackend)
    assert enc.device == "cpu" and enc.input_size == 32 and enc.embed_dim > 0
    assert enc.is_mrplip == (name == "mrplip")
    assert enc.logit_scale > 1 and enc.context_length > 0 and enc.model_id


def test_tiles_shape_dtype_norm_determinism(built):
    _, enc, _ = built
    before = enc.image_encode_calls
    tiles = _tiles()
    a, b = enc.encode_tiles(tiles), enc.encode_tiles(tiles)
    assert enc.image_encode_calls == before + 2
    assert a.shape == (3, enc.embed_dim) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.array_equal(a, b)
    single = np.concatenate([enc.encode_tiles(tiles[i : i + 1]) for i in range(3)])
    assert np.allclose(a, single, atol=1e-5)  # batch composition does not matter
    assert enc.encode_tiles(np.zeros((0, 40, 40, 3), np.uint8)).shape == (0, enc.embed_dim)
    with pytest.raises(ValueError, match="uint8"):
        enc.encode_tiles(tiles.astype(np.float32))


def test_text_shape_norm_and_batch_invariance(built):
    _, enc, _ = built
    t = enc.encode_text(TEXTS)
    assert t.shape == (3, enc.embed_dim) and t.dtype == np.float32
    assert np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert np.allclose(enc.encode_text(TEXTS[1:2]), t[1:2], atol=1e-5)


def test_similarity_matches_the_native_model(built):
    """Encoder similarities equal those computed with the model in its own format."""
    _, enc, reference = built
    tiles = _tiles(seed=4)
    with torch.no_grad():
        img, txt = reference(tiles, TEXTS)
    expected = (F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T).numpy()
    got = enc.encode_tiles(tiles) @ enc.encode_text(TEXTS).T
    assert np.allclose(got, expected, atol=1e-4)


def test_hf_hub_not_cached_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        get_encoder("hf-hub:MahmoodLab/conch")


def test_unknown_and_broken_specs(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load a model"):
        get_encoder(str(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="mrplip pretrain|no MR-PLIP checkpoint"):
        if not (
            Path(__file__).parents[1] / "src/napari_mrplip/models/weights/mrplip-demo"
        ).is_dir():
            get_encoder("mrplip-demo")
        else:
            raise ModelLoadError("no MR-PLIP checkpoint (demo present; nothing to check)")
    spec, _ = _open_clip_dir(tmp_path)
    path = Path(spec.split(":", 1)[1])
    (path / "open_clip_model.safetensors").write_bytes(b"garbage" * 600_000)
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        get_encoder(spec)
    (path / "open_clip_model.safetensors").write_bytes(b"garbage")  # smaller than the config
    with pytest.raises(ModelLoadError, match="do not belong together"):
        get_encoder(spec)
    (path / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        get_encoder(spec)


def test_open_clip_bin_with_pickled_objects_is_refused(tmp_path):
    model, cfg = _open_clip_model()
    out = tmp_path / "evil"
    _write_open_clip(out, model, cfg, "open_clip_pytorch_model.bin")
    torch.save(
        {"state_dict": model.state_dict(), "hook": shutil.rmtree},
        out / "open_clip_pytorch_model.bin",
    )
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        get_encoder(str(out))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_autocast_matches_cpu(tmp_path):
    spec, _ = _mrplip_dir(tmp_path)
    cpu, gpu = get_encoder(spec, device="cpu"), get_encoder(spec, device="cuda", precision="bf16")
    assert gpu.device == "cuda"
    tiles = _tiles(4)
    a, b = cpu.encode_tiles(tiles), gpu.encode_tiles(tiles)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-4)
    assert (a * b).sum(1).min() > 0.99
    assert ((cpu.encode_text(TEXTS) * gpu.encode_text(TEXTS)).sum(1)).min() > 0.99


def test_local_dir_prefix_reaches_other_formats(built):
    name, enc, _ = built
    if name not in ("plip", "mrplip"):
        pytest.skip("only for non-open_clip directories")
    other = get_encoder("local-dir:" + enc.source, device="cpu")
    assert other.model_id == enc.model_id


def test_hf_hub_revision_and_snapshot_fallback(tmp_path, monkeypatch):
    from napari_mrplip.models.encoders.hf_hub import resolve

    base = tmp_path / "models--org--name" / "snapshots"
    (base / "aaa").mkdir(parents=True)
    (base / "bbb").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve("hf-hub:org/name@aaa") == base / "aaa"
    assert resolve("hf-hub:org/name").name in {"aaa", "bbb"}  # no refs/main: newest snapshot
    with pytest.raises(ModelLoadError, match="org/name"):
        resolve("hf-hub:noslash")


def test_embedded_demo_model_meets_the_contract():
    from napari_mrplip.models.checkpoint import DEMO_DIR

    if not DEMO_DIR.is_dir():
        pytest.skip("the embedded demo model has not been built in this checkout")
    enc = get_encoder("mrplip-demo", device="cpu")
    assert isinstance(enc, EncoderBackend) and enc.is_mrplip
    tiles = _tiles(2, px=enc.input_size)
    emb, txt = enc.encode_tiles(tiles), enc.encode_text(TEXTS)
    assert emb.shape == (2, enc.embed_dim) and txt.shape == (3, enc.embed_dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.array_equal(emb, enc.encode_tiles(tiles))


def test_snapshot_with_both_formats_goes_the_open_clip_way(tmp_path):
    """open_clip's file order (open_clip_pytorch_model.bin before model.safetensors) and
    open_clip before a transformers CLIP config in the same folder."""
    from safetensors.torch import save_file

    model, cfg = _open_clip_model()
    out = tmp_path / "both"
    _write_open_clip(out, model, cfg, "open_clip_pytorch_model.bin")
    other, _ = _open_clip_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    save_file(other.state_dict(), str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"model_type": "clip"}))
    enc = get_encoder(str(out), device="cpu")
    assert enc.model_id.startswith("open_clip:")
    img, _ = _open_clip_reference(model)(_tiles(), TEXTS)
    cos = F.cosine_similarity(torch.from_numpy(enc.encode_tiles(_tiles())), img.double().float())
    assert cos.min() >= 0.9999
