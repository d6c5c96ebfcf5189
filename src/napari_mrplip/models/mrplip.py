"""The MR-PLIP module: towers, shared embedding space, fusion encoder, heads and losses."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_mrplip.models.batch import BagBatch
from napari_mrplip.models.config import MRPLIPConfig
from napari_mrplip.models.fusion import FusionEncoder
from napari_mrplip.models.heads import ITMHead, MLMHead, MRTVAHeads
from napari_mrplip.models.losses import (
    IGNORE_INDEX,
    cvta_loss,
    dense_alignment_loss,
    itc_loss,
    itm_loss,
    magnification_groups,
    mask_tokens,
    mlm_loss,
    mrtva_loss,
    sample_hard_negatives,
)
from napari_mrplip.models.tokenizer import MASK_TOKEN_ID, PAD_ID
from napari_mrplip.models.towers import EOT_ID, build_text_tower, build_vision_tower

_SOT_ID = EOT_ID - 1
_SPECIAL_IDS = (PAD_ID, _SOT_ID, EOT_ID, MASK_TOKEN_ID)


class MRPLIP(nn.Module):
    """Multi-resolution pathology-language model.

    Parameters
    ----------
    cfg : MRPLIPConfig
        Architecture and objective (see ``models/config.py``).

    Attributes
    ----------
    visual, text : nn.Module
        Vision and text towers; both output ``(pooled (B, D), tokens (B, T, W))``.
    logit_scale : nn.Parameter
        Log of the contrastive inverse temperature (CLIP parameterisation).
    fusion : FusionEncoder
        Cross-attention encoder producing text-guided embeddings z.
    """

    def __init__(self, cfg: MRPLIPConfig):
        super().__init__()
        self.config = cfg
        self.visual = build_vision_tower(cfg)
        self.text = build_text_tower(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        f = cfg.fusion
        self.fusion = FusionEncoder(
            self.visual.width,
            self.text.width,
            f.width,
            f.heads,
            f.layers,
            f.mlp_ratio,
            f.visual_tokens,
        )
        self.itm_head = ITMHead(f.width)
        token_dim = self.text.tt.token_embedding.weight.shape[1]
        self.mlm_head = MLMHead(f.width, cfg.text.vocab_size, token_dim)
        self.mrtva_heads = MRTVAHeads(f.width, cfg.mrtva.proj_dim, cfg.mrtva.pred_dim)
        mean = torch.tensor(cfg.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)

    # ------------------------------------------------------------------ inference
    @property
    def uses_features(self) -> bool:
        """True when the vision tower reads precomputed features instead of pixels."""
        return self.config.vision.kind == "features"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB ``(B, H, W, 3)`` -> normalised float ``(B, 3, S, S)`` on the model's device.

        Tiles of another size are resized (bilinear, antialiased) to ``image_size``.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 tiles (B, H, W, 3), got {tuple(images.shape)}")
        x = images.to(self.image_mean.device, non_blocking=True).permute(0, 3, 1, 2).float()
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return (x / 255.0 - self.image_mean) / self.image_std

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Normalised images ``(B, 3, S, S)`` (or features for a features model) -> ``(B, D)``."""
        pooled, _ = self.visual(images)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def encode_image_dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One vision pass -> L2-normalised ``(B, D)`` tile and ``(B, g, g, D)`` patch-token
        embeddings (tokens through the same projection as the pooled embedding)."""
        pooled, tokens = self.visual(images)
        dense = self._project_tokens(tokens)
        g = int(round(dense.shape[1] ** 0.5))
        return F.normalize(pooled, dim=-1), dense.reshape(dense.shape[0], g, g, -1)

    def _project_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        vit = getattr(self.visual, "vit", None)
        if vit is None or getattr(vit, "proj", None) is None:
            raise ValueError(
                "dense (patch-token) maps need a ViT image tower; this model reads "
                "precomputed features: use tile maps"
            )
        return F.normalize(tokens @ vit.proj.to(tokens.dtype), dim=-1)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Tokens ``(B, L)`` -> ``(B, D)``."""
        pooled, _ = self.text(tokens)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def get_logit_scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped to ``max_logit_scale``."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        """CLIP-style forward: ``(image (B, D), text (B, D), logit scale)``, normalised."""
        return self.encode_image(images), self.encode_text(tokens), self.get_logit_scale()

    # ------------------------------------------------------------------ training
    def compute_losses(
        self,
        batch: BagBatch,
        rank: int = 0,
        world_size: int = 1,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """All enabled loss terms on one batch of bags.

        Only terms with a non-zero weight are computed. With only ``itc`` enabled the
        step is a plain CLIP step (one vision pass, one text pass, contrastive loss).

        Parameters
        ----------
        batch : BagBatch
            Bags on the model's device.
        rank, world_size : int
            Distributed position for the ITC feature gather.
        generator : torch.Generator, optional
            Random source for ITM negative sampling and MLM masking.

        Returns
        -------
        dict
            ``{"<name>_loss": scalar}`` per enabled term and ``"loss"``, their weighted sum.
        """
        cfg, on = self.config, self.config.enabled_losses
        bsz, n_tiles = batch.caption_tokens.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cfg.vision.freeze):
            img_emb, vis_tok = self.visual(self._vision_input(batch))
        captions = self._trim(batch.caption_tokens.reshape(bsz * n_tiles, -1))
        txt_emb, txt_tok = self.text(captions)
        img_n = F.normalize(img_emb, dim=-1).view(bsz, n_tiles, -1)
        txt_n = F.normalize(txt_emb, dim=-1).view(bsz, n_tiles, -1)
        scale = self.get_logit_scale()
        groups = magnification_groups(batch.mag_index)
        losses: dict[str, torch.Tensor] = {}
        if "itc" in on:
            losses["itc_loss"] = itc_loss(img_n, txt_n, groups, scale, rank, world_size)
        if "cvta" in on or "mrtva" in on:
            cvta, z_loss = self._keyword_losses(batch, img_n, vis_tok, scale, "mrtva" in on)
            if "cvta" in on:
                losses["cvta_loss"] = cvta
            if z_loss is not None:
                losses["mrtva_loss"] = z_loss
        if "itm" in on:
            losses["itm_loss"] = self._itm(
                img_n, txt_n, vis_tok, txt_tok, captions, groups, generator
            )
        if "mlm" in on:
            losses["mlm_loss"] = self._mlm(captions, vis_tok, generator)
        if "dta" in on:
            losses["dta_loss"] = self._dense_loss(batch, vis_tok, scale)
        losses["loss"] = sum(cfg.loss_weights[name] * losses[f"{name}_loss"] for name in on)
        return losses

    def _trim(self, tokens: torch.Tensor) -> torch.Tensor:
        return _trim_padding(tokens) if self.config.text.causal else tokens

    def _vision_input(self, batch: BagBatch) -> torch.Tensor:
        bsz, n_tiles = batch.caption_tokens.shape[:2]
        if self.uses_features:
            if batch.features is None:
                raise ValueError(
                    "this MR-PLIP config reads precomputed tile features (vision.kind="
                    "'features'), but the batch has none: set BagBatch.features (B, N, F)"
                )
            return batch.features.reshape(bsz * n_tiles, *batch.features.shape[2:])
        return self.preprocess(batch.images.reshape(bsz * n_tiles, *batch.images.shape[2:]))

    def _dense_loss(self, batch, vis_tok, scale) -> torch.Tensor:
        """Dense token alignment of every tile's patch tokens with its bag's keywords."""
        bsz, n_kw = batch.keyword_mask.shape
        n_tiles = batch.caption_tokens.shape[1]
        kw_ids = self._trim(batch.keyword_tokens.reshape(bsz * n_kw, -1))
        unique_ids, inverse = torch.unique(kw_ids, dim=0, return_inverse=True)
        unique_n = F.normalize(self.text(unique_ids)[0], dim=-1)
        onehot = F.one_hot(inverse, len(unique_ids)).view(bsz, n_kw, -1).bool()
        bag_has = (onehot & batch.keyword_mask.bool()[..., None]).any(dim=1)  # (B, U)
        present = bag_has.repeat_interleave(n_tiles, dim=0)  # tiles are bag-major
        tokens = self._project_tokens(vis_tok)
        return dense_alignment_loss(tokens, unique_n, present, self.config.dense_topk, scale)

    def _keyword_losses(self, batch, img_n, vis_tok, scale, want_mrtva):
        """CVTA over the bag's keywords, then MRTVA on z fused with each patch's top-k."""
        bsz, n_kw = batch.keyword_mask.shape
        if n_kw == 0:
            raise ValueError("CVTA/MRTVA are enabled but the batch has no keyword slots (K = 0)")
        kw_ids = self._trim(batch.keyword_tokens.reshape(bsz * n_kw, -1))
        # Bags share most keywords: encode each distinct keyword once (exact), then gather.
        unique_ids, inverse = torch.unique(kw_ids, dim=0, return_inverse=True)
        unique_emb, unique_tok = self.text(unique_ids)
        kw_emb, kw_tok = unique_emb[inverse], unique_tok[inverse]
        kw_n = F.normalize(kw_emb, dim=-1).view(bsz, n_kw, -1)
        mask = batch.keyword_mask.bool()
        cvta, top_idx, top_valid = cvta_loss(img_n, kw_n, mask, self.config.cvta_topk, scale)
        if not want_mrtva:
            return cvta, None
        n_tiles, k = top_idx.shape[1:]
        rows = torch.arange(bsz, device=top_idx.device).view(bsz, 1, 1).expand_as(top_idx)
        ctx = kw_tok.view(bsz, n_kw, *kw_tok.shape[1:])[rows, top_idx]
        ids = kw_ids.view(bsz, n_kw, -1)[rows, top_idx]
        pad = (ids == PAD_ID) | ~top_valid[..., None]
        ctx = ctx.reshape(bsz * n_tiles, -1, ctx.shape[-1])
        z = self.fusion.visual_query(vis_tok, ctx, pad.reshape(bsz * n_tiles, -1))
        proj, pred = self.mrtva_heads(z.view(bsz, n_tiles, -1))
        return cvta, mrtva_loss(proj, pred, batch.parent_index)

    def _itm(self, img_n, txt_n, vis_tok, txt_tok, captions, groups, generator):
        """Matching on positives plus one hard negative caption per image and image per caption."""
        bsz, n_tiles = img_n.shape[:2]
        dev = img_n.device
        pos_img, neg_pairs = [], []
        for pos in groups:
            flat = (torch.arange(bsz, device=dev)[:, None] * n_tiles + pos.to(dev)).reshape(-1)
            with torch.no_grad():
                sim = img_n.flatten(0, 1)[flat] @ txt_n.flatten(0, 1)[flat].T
                inverse = torch.unique(captions[flat], dim=0, return_inverse=True)[1]
                same = inverse[:, None] == inverse[None, :]
                neg_t, ok_t = sample_hard_negatives(sim, same, generator)
                neg_i, ok_i = sample_hard_negatives(sim.T, same, generator)
            pos_img.append(flat)
            neg_pairs.append((flat[ok_t], flat[neg_t[ok_t]]))
            neg_pairs.append((flat[neg_i[ok_i]], flat[ok_i]))
        pos_idx = torch.cat(pos_img)
        img_idx = torch.cat([pos_idx] + [i for i, _ in neg_pairs])
        txt_idx = torch.cat([pos_idx] + [t for _, t in neg_pairs])
        labels = torch.zeros(img_idx.shape[0], dtype=torch.long, device=dev)
        labels[: pos_idx.shape[0]] = 1
        pad = captions[txt_idx] == PAD_ID
        fused = self.fusion.visual_query(vis_tok[img_idx], txt_tok[txt_idx], pad)
        return itm_loss(self.itm_head(fused), labels)

    def _mlm(self, captions, vis_tok, generator):
        """Reconstruct masked caption tokens from the text and the image via the fusion encoder."""
        masked, labels = mask_tokens(
            captions, self.config.mlm_probability, MASK_TOKEN_ID, _SPECIAL_IDS, generator
        )
        _, tok = self.text(masked)
        fused = self.fusion.text_query(tok, masked == PAD_ID, vis_tok)
        sel = labels != IGNORE_INDEX
        logits = self.mlm_head(fused[sel], self.text.tt.token_embedding.weight)
        return mlm_loss(logits, labels[sel])


def _trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drop trailing all-padding columns of ``(M, L)`` tokens (at least one column kept).

    Exact for the causal text tower (no real token attends to later padding).
    """
    used = (tokens != PAD_ID).any(dim=0)
    length = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    return tokens[:, :length]


def build_model(cfg: MRPLIPConfig | str) -> MRPLIP:
    """Build a randomly initialised MR-PLIP from a config (or a config name/path)."""
    if not isinstance(cfg, MRPLIPConfig):
        from napari_mrplip.models.config import load_config

        cfg = load_config(cfg)
    return MRPLIP(cfg)
