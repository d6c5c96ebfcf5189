"""MR-PLIP loss terms as pure functions of tensors (no model inside).

Shapes: B bags, N tiles per bag, K keywords per bag, D embedding dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def magnification_groups(mag_index: torch.Tensor) -> list[torch.Tensor]:
    """Bag positions per magnification: one ``(n_m,)`` long tensor per magnification."""
    mags = mag_index.detach().cpu()
    return [torch.nonzero(mags == m).flatten() for m in torch.unique(mags)]


def itc_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    groups: list[torch.Tensor],
    logit_scale: torch.Tensor,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Symmetric InfoNCE per magnification with open_clip's ``ClipLoss``, averaged.

    Parameters
    ----------
    img, txt : torch.Tensor
        ``(B, N, D)`` L2-normalised image and caption embeddings.
    groups : list of torch.Tensor
        Bag positions of each magnification (``magnification_groups``).
    logit_scale : torch.Tensor
        Scalar multiplier ``exp(t)`` (already exponentiated and clamped).
    rank, world_size : int
        Distributed position; features are gathered over all ranks *with* gradient and
        each rank computes the global loss (so the value equals a single-process run
        with the same global batch).
    """
    from open_clip.loss import ClipLoss

    clip = ClipLoss(gather_with_grad=world_size > 1, rank=rank, world_size=world_size)
    dim = img.shape[-1]
    terms = []
    for pos in groups:
        pos = pos.to(img.device)
        i = img.index_select(1, pos).reshape(-1, dim)
        t = txt.index_select(1, pos).reshape(-1, dim)
        terms.append(clip(i, t, logit_scale))
    return torch.stack(terms).mean()


def cvta_loss(
    patch: torch.Tensor,
    keywords: torch.Tensor,
    keyword_mask: torch.Tensor,
    topk: int,
    logit_scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-resolution visual-textual alignment.

    ``L = -(1/|bag|) sum_a (1/k) sum_{b in topk(a)} log softmax_b'(v_a . w_b' / tau)[b]``,
    averaged over bags; the top-k set is chosen without gradient. Bags with fewer than
    k keywords use all they have; bags without keywords are left out.

    Parameters
    ----------
    patch : torch.Tensor
        ``(B, N, D)`` L2-normalised patch embeddings v.
    keywords : torch.Tensor
        ``(B, K, D)`` L2-normalised keyword embeddings w.
    keyword_mask : torch.Tensor
        ``(B, K)`` bool, True for real keywords.
    topk : int
        Positives per patch.
    logit_scale : torch.Tensor
        Scalar ``1 / tau``.

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    top_idx : torch.Tensor
        ``(B, N, k)`` long, the chosen keywords per patch.
    top_valid : torch.Tensor
        ``(B, N, k)`` bool, False where a bag had fewer than k keywords.
    """
    logits = logit_scale * torch.einsum("bnd,bkd->bnk", patch, keywords)
    logits = logits.masked_fill(~keyword_mask[:, None, :], float("-inf"))
    k = min(int(topk), keywords.shape[1])
    top_idx = logits.detach().topk(k, dim=-1).indices
    top_valid = keyword_mask[:, None, :].expand_as(logits).gather(-1, top_idx)
    logp = logits.log_softmax(dim=-1).gather(-1, top_idx).masked_fill(~top_valid, 0.0)
    n_pos = top_valid.sum(-1)
    per_patch = -logp.sum(-1) / n_pos.clamp(min=1)
    has_kw = n_pos > 0
    per_bag = (per_patch * has_kw).sum(-1) / has_kw.sum(-1).clamp(min=1)
    bag_ok = has_kw.any(-1)
    loss = (per_bag * bag_ok).sum() / bag_ok.sum().clamp(min=1)
    return loss, top_idx, top_valid


def dense_alignment_loss(
    tokens: torch.Tensor,
    keywords: torch.Tensor,
    present: torch.Tensor,
    topk: int,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Dense token alignment (dta): CVTA's top-k selection moved to the patch tokens.

    For every keyword a tile's bag mentions, the ``topk`` patch tokens of the tile most
    similar to it (chosen without gradient) must pick that keyword out of every distinct
    keyword in the batch. A keyword is thus learnt *where* it shows in the tile, and the
    selected tokens are pushed away from the keywords of other tiles ("brown DAB-positive
    nuclei" vs "hematoxylin counterstain"): multiple-instance learning over tokens.

    ``L = -mean_{m, u in bag(m), t in topk_m(u)} log softmax_u'(s * p_{m,t} . w_u')[u]``

    Parameters
    ----------
    tokens : torch.Tensor
        ``(M, T, D)`` L2-normalised patch-token embeddings of M tiles.
    keywords : torch.Tensor
        ``(U, D)`` L2-normalised embeddings of the batch's distinct keywords.
    present : torch.Tensor
        ``(M, U)`` bool, True where tile m's bag has keyword u.
    topk : int
        Tokens aligned per (tile, keyword).
    logit_scale : torch.Tensor
        Scalar ``1 / tau``.

    Returns
    -------
    torch.Tensor
        Scalar (0 when no tile has a keyword).
    """
    logits = logit_scale * torch.einsum("mtd,ud->mtu", tokens, keywords)
    k = min(int(topk), tokens.shape[1])
    sel = logits.detach().topk(k, dim=1).indices  # (M, k, U): best tokens per keyword
    logp = logits.log_softmax(dim=-1).gather(1, sel)  # logp[m, sel[m, j, u], u]
    weight = present[:, None, :].to(logp.dtype)
    return -(logp * weight).sum() / (weight.sum() * k).clamp(min=1.0)


def negative_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over rows."""
    return -F.cosine_similarity(pred, target.detach(), dim=-1).mean()


def mrtva_loss(proj: torch.Tensor, pred: torch.Tensor, parent_index: torch.Tensor) -> torch.Tensor:
    """Multi-resolution text-guided visual alignment (symmetric SimSiam, parent <-> child).

    ``L = 1/2 D(h_p, sg(g_c)) + 1/2 D(h_c, sg(g_p))`` over every (child, parent) pair.

    Parameters
    ----------
    proj : torch.Tensor
        ``(B, N, P)`` projector outputs g(z).
    pred : torch.Tensor
        ``(B, N, P)`` predictor outputs h(g(z)).
    parent_index : torch.Tensor
        ``(N,)`` long, parent position within the bag, -1 for the root.
    """
    child = torch.nonzero(parent_index >= 0).flatten().to(proj.device)
    if child.numel() == 0:
        return pred.sum() * 0.0
    parent = parent_index.to(proj.device).index_select(0, child)
    g_c, g_p = proj.index_select(1, child), proj.index_select(1, parent)
    h_c, h_p = pred.index_select(1, child), pred.index_select(1, parent)
    return 0.5 * negative_cosine(h_p, g_c) + 0.5 * negative_cosine(h_c, g_p)


def sample_hard_negatives(
    sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one hard negative per row from ``softmax(sim)`` restricted to non-positives.

    Parameters
    ----------
    sim : torch.Tensor
        ``(M, M)`` similarities (row i: query i against every candidate).
    same : torch.Tensor
        ``(M, M)`` bool, True where a candidate counts as a positive for the row (the
        diagonal and duplicates of the same text); those are never drawn.

    Returns
    -------
    neg : torch.Tensor
        ``(M,)`` long, the drawn candidate per row (meaningless where not ``valid``).
    valid : torch.Tensor
        ``(M,)`` bool, False for rows with no admissible negative.
    """
    same = same | torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    weights = sim.detach().float().softmax(dim=1).masked_fill(same, 0.0)
    valid = (~same).any(dim=1)
    weights = torch.where(valid[:, None], weights + (~same) * 1e-12, (~same).float() + 1.0)
    if generator is not None and generator.device != weights.device:
        weights = weights.to(generator.device)
    neg = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return neg.to(sim.device), valid


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of matching logits ``(M, 2)`` against labels ``(M,)`` (1 = match)."""
    return F.cross_entropy(logits.float(), labels)


def mask_tokens(
    tokens: torch.Tensor,
    probability: float,
    mask_id: int,
    special_ids: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random ``probability`` share of ordinary tokens with ``mask_id``.

    Every row with an ordinary token gets at least one mask (short captions would
    otherwise often contribute nothing; our choice). Special tokens are never masked.

    Returns
    -------
    masked : torch.Tensor
        ``(..., L)`` tokens with masks applied.
    labels : torch.Tensor
        ``(..., L)`` original ids at masked positions, ``IGNORE_INDEX`` elsewhere.
    """
    eligible = torch.ones_like(tokens, dtype=torch.bool)
    for sid in special_ids:
        eligible &= tokens != sid
    rand = torch.rand(tokens.shape, generator=generator, device="cpu").to(tokens.device)
    chosen = (rand < probability) & eligible
    score = rand.masked_fill(~eligible, 2.0)
    first = F.one_hot(score.argmin(dim=-1), tokens.shape[-1]).bool() & eligible
    chosen |= first & ~chosen.any(dim=-1, keepdim=True)
    masked = tokens.masked_fill(chosen, mask_id)
    labels = tokens.masked_fill(~chosen, IGNORE_INDEX)
    return masked, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over masked positions only: ``logits (..., V)``, ``labels (...)``."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1)
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
