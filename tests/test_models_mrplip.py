"""The MRPLIP module: compute_losses contract, ITC-only cost, a real optimisation step."""

from __future__ import annotations

import pytest
import torch

from napari_mrplip.models.config import (
    LOSS_NAMES,
    ConfigError,
    MRPLIPConfig,
    list_configs,
    load_config,
)
from napari_mrplip.models.mrplip import build_model
from napari_mrplip.models.synthetic import bag_layout, micro_config, random_batch
from napari_mrplip.models.tokenizer import MASK_TOKEN_ID, get_tokenizer

ONLY_ITC = {"itc": 1.0, "cvta": 0.0, "mrtva": 0.0, "itm": 0.0, "mlm": 0.0}


@pytest.fixture(scope="module")
def cfg() -> MRPLIPConfig:
    return micro_config()


def test_builtin_configs_parse_and_round_trip():
    assert {"mrplip-tiny", "mrplip-b16", "mrplip-frozen-features"} <= set(list_configs())
    for name in list_configs():
        c = load_config(name)
        assert MRPLIPConfig.from_dict(c.to_dict()) == c
    tiny = load_config("mrplip-tiny")
    assert (tiny.image_size, tiny.embed_dim, tiny.context_length) == (112, 256, 64)


@pytest.mark.parametrize("name", ["mrplip-tiny", "mrplip-b16", "mrplip-frozen-features"])
def test_builtin_configs_build(name):
    """Every built-in config builds (on the meta device: no memory) with the expected size."""
    with torch.device("meta"):
        model = build_model(name)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    expected = {
        "mrplip-tiny": (5, 20),
        "mrplip-b16": (140, 200),
        "mrplip-frozen-features": (60, 110),
    }
    low, high = expected[name]
    assert low < n_params < high
    with torch.device("meta"):
        x = torch.zeros(2, 3, model.config.image_size, model.config.image_size)
        if model.uses_features:
            x = torch.zeros(2, model.config.vision.feature_dim)
        assert model.encode_image(x).shape == (2, model.config.embed_dim)


def test_config_rejects_typos_and_bad_values(tmp_path):
    raw = load_config("mrplip-tiny").to_dict()
    raw["vision"]["layer"] = 3
    bad = tmp_path / "bad.json"
    bad.write_text(__import__("json").dumps(raw))
    with pytest.raises(ConfigError, match="layer"):
        load_config(bad)
    with pytest.raises(ConfigError, match="every loss weight is zero"):
        micro_config(loss_weights=dict.fromkeys(LOSS_NAMES, 0.0))
    with pytest.raises(ConfigError, match="no MR-PLIP config"):
        load_config("no-such-config")


def test_compute_losses_keys_and_weighted_sum(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = random_batch(cfg, batch_size=3, n_mags=2)
    losses = model.compute_losses(batch, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {f"{n}_loss" for n in cfg.enabled_losses} | {"loss"}
    assert set(cfg.enabled_losses) == set(LOSS_NAMES) - {"dta"}  # dta is opt-in
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    total = sum(cfg.loss_weights[n] * losses[f"{n}_loss"] for n in cfg.enabled_losses)
    assert losses["loss"].item() == pytest.approx(total.item())
    weights = {"itc": 0.5, "cvta": 0.0, "mrtva": 2.0, "itm": 0.0, "mlm": 1.0}
    partial = build_model(micro_config(loss_weights=weights)).compute_losses(batch)
    assert set(partial) == {"itc_loss", "mrtva_loss", "mlm_loss", "loss"}


def test_dense_token_alignment_term_trains_the_token_projection():
    weights = {**dict.fromkeys(LOSS_NAMES, 0.0), "dta": 1.0}
    cfg = micro_config(loss_weights=weights)
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = random_batch(cfg, batch_size=3, n_mags=2)
    losses = model.compute_losses(batch)
    assert set(losses) == {"dta_loss", "loss"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert model.visual.vit.proj.grad.abs().sum() > 0  # tokens go through the tile projection
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    pooled, dense = model.encode_image_dense(x)
    g = cfg.image_size // cfg.vision.patch_size
    assert dense.shape == (2, g, g, cfg.embed_dim)
    torch.testing.assert_close(pooled, model.encode_image(x))


def test_itc_only_is_a_plain_clip_step(cfg):
    """Only the towers and the temperature get gradients: no fusion, heads or keywords run."""
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    model = build_model(micro_config(loss_weights=ONLY_ITC))
    batch = random_batch(model.config, batch_size=4, n_mags=1)
    losses = model.compute_losses(batch)
    assert set(losses) == {"itc_loss", "loss"}
    losses["loss"].backward()
    for name, p in model.named_parameters():
        used = name.split(".")[0] in ("visual", "text", "logit_scale")
        assert (p.grad is not None) == used, name
    img = model.encode_image(model.preprocess(batch.images[:, 0]))
    txt = model.encode_text(batch.caption_tokens[:, 0])
    plain = ClipLoss()(img, txt, model.get_logit_scale())
    assert losses["itc_loss"].item() == pytest.approx(plain.item(), rel=1e-5)


def test_cvta_in_the_model_equals_the_formula_on_encoded_inputs():
    """Keyword de-duplication and padding trimming inside compute_losses are exact."""
    from napari_mrplip.models.losses import cvta_loss

    cfg = micro_config(loss_weights={"itc": 0.0, "cvta": 1.0, "mrtva": 0.0, "itm": 0.0, "mlm": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = random_batch(cfg, batch_size=3, n_mags=2, n_keywords=6)
    with torch.no_grad():
        got = model.compute_losses(batch)["cvta_loss"]
        b, n = batch.caption_tokens.shape[:2]
        img = model.encode_image(model.preprocess(batch.images.flatten(0, 1))).view(b, n, -1)
        kw = model.encode_text(batch.keyword_tokens.flatten(0, 1)).view(b, 6, -1)
        expected, _, _ = cvta_loss(
            img, kw, batch.keyword_mask, cfg.cvta_topk, model.get_logit_scale()
        )
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)


def test_one_optimizer_step_reduces_the_total_loss(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = random_batch(cfg, batch_size=4, n_mags=2, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)

    def total():
        return model.compute_losses(batch, generator=torch.Generator().manual_seed(7))["loss"]

    before = total()
    before.backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        after = total()
    assert after.item() < before.item()


def test_every_term_reaches_its_own_parameters(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = random_batch(cfg, batch_size=3, n_mags=2)
    losses = model.compute_losses(batch, generator=torch.Generator().manual_seed(0))
    owners = {"mrtva_loss": "mrtva_heads", "itm_loss": "itm_head", "mlm_loss": "mlm_head"}
    for key, module in owners.items():
        grads = torch.autograd.grad(
            losses[key], list(getattr(model, module).parameters()), allow_unused=True
        )
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), key


def test_all_parameters_are_used_when_every_term_is_on(cfg):
    """DDP needs no ``find_unused_parameters`` for the full objective."""
    model = build_model(cfg)
    batch = random_batch(cfg, batch_size=2, n_mags=2)
    model.compute_losses(batch, generator=torch.Generator().manual_seed(0))["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_preprocess_normalises_and_resizes(cfg):
    model = build_model(cfg)
    tiles = torch.full((2, 48, 48, 3), 255, dtype=torch.uint8)
    x = model.preprocess(tiles)
    assert x.shape == (2, 3, cfg.image_size, cfg.image_size) and x.dtype == torch.float32
    expected = (1.0 - torch.tensor(cfg.image_mean)) / torch.tensor(cfg.image_std)
    assert torch.allclose(x[0, :, 5, 5], expected, atol=1e-5)
    with pytest.raises(ValueError, match="uint8 tiles"):
        model.preprocess(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_encoders_are_normalised_and_deterministic(cfg):
    model = build_model(cfg).eval()
    tok = get_tokenizer(cfg.context_length)
    with torch.no_grad():
        a = model.encode_text(tok(["dense nuclei", "pink stroma"]))
        b = model.encode_text(tok(["dense nuclei"]))
        img = model.encode_image(model.preprocess(random_batch(cfg, 2, 1).images[:, 0]))
    assert torch.allclose(a.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(a[:1], b, atol=1e-5)
    assert img.shape == (2, cfg.embed_dim)


def test_mask_token_does_not_hijack_text_pooling(cfg):
    """Text is pooled at the end token, so the larger [MASK] id cannot move the pooling."""
    model = build_model(cfg).eval()
    tok = get_tokenizer(cfg.context_length)
    ids = tok(["dense nuclei in stroma"])
    masked = ids.clone()
    masked[0, 2] = MASK_TOKEN_ID
    _, tokens = model.text(masked)
    with torch.no_grad():
        pooled = model.encode_text(masked, normalize=False)
        eot = int((ids[0] == 49407).nonzero())
        proj = model.text.tt.text_projection
        expected = (
            proj(tokens[0, eot]) if isinstance(proj, torch.nn.Linear) else tokens[0, eot] @ proj
        )
    assert torch.allclose(pooled[0], expected, atol=1e-5)


def test_frozen_features_model_reads_batch_features():
    cfg = micro_config(vision={"kind": "features", "feature_dim": 48, "width": 64})
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = random_batch(cfg, batch_size=3, n_mags=2)
    losses = model.compute_losses(batch, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {f"{n}_loss" for n in cfg.enabled_losses} | {"loss"}
    assert model.encode_image(batch.features[:, 0]).shape == (3, cfg.embed_dim)
    batch.features = torch.randn(3, 5, 4, 48)  # token features (B, N, T, F)
    assert torch.isfinite(model.compute_losses(batch)["loss"])
    batch.features = None
    with pytest.raises(ValueError, match="BagBatch.features"):
        model.compute_losses(batch)


def test_bag_layout_is_a_quadtree():
    mags, parents = bag_layout(3)
    assert mags.tolist() == [0] + [1] * 4 + [2] * 16
    assert parents[:5].tolist() == [-1, 0, 0, 0, 0]
    assert parents[5:9].tolist() == [1, 1, 1, 1] and parents[-1] == 4


def test_tokenizer_contract():
    tok = get_tokenizer(8)
    ids = tok(["a very long caption that does not fit in eight tokens", "a"])
    assert ids.shape == (2, 8) and ids.dtype == torch.long
    assert int(ids[0, -1]) == tok.eot_token_id  # truncation keeps the end token
    assert int(ids[1, -1]) == tok.pad_id == 0
    assert tok.mask_token_id == 49408 and tok.vocab_size == 49409
    assert tok(["x"], context_length=5).shape == (1, 5)


def test_frozen_vision_tower_gets_no_gradient():
    model = build_model(micro_config(vision={"freeze": True}))
    batch = random_batch(model.config, batch_size=2, n_mags=2)
    model.compute_losses(batch, generator=torch.Generator().manual_seed(0))["loss"].backward()
    assert all(p.grad is None for p in model.visual.parameters())
    assert model.text.tt.transformer.resblocks[0].mlp.c_fc.weight.grad is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_under_bf16_autocast_on_gpu():
    torch.manual_seed(0)
    model = build_model(micro_config()).cuda()
    batch = random_batch(model.config, batch_size=4, n_mags=3).to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = model.compute_losses(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
