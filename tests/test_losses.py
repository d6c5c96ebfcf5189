"""Each MR-PLIP loss on hand-made inputs, checking a property that breaks if the formula is wrong."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_mrplip.models.losses import (
    IGNORE_INDEX,
    cvta_loss,
    itc_loss,
    magnification_groups,
    mask_tokens,
    mlm_loss,
    mrtva_loss,
    sample_hard_negatives,
)


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


# ---------------------------------------------------------------- ITC
def test_itc_random_embeddings_near_log_batch():
    img, txt = _unit(64, 1, 512, seed=1), _unit(64, 1, 512, seed=2)
    groups = magnification_groups(torch.tensor([0]))
    loss = itc_loss(img, txt, groups, torch.tensor(1.0))
    assert abs(float(loss) - math.log(64)) < 0.05


def test_itc_symmetric_in_images_and_texts():
    img, txt = _unit(8, 3, 32, seed=3), _unit(8, 3, 32, seed=4)
    groups = magnification_groups(torch.tensor([0, 1, 1]))
    scale = torch.tensor(10.0)
    assert torch.allclose(itc_loss(img, txt, groups, scale), itc_loss(txt, img, groups, scale))


def test_itc_perfect_pairs_give_small_loss():
    img = _unit(8, 1, 64, seed=5)
    loss = itc_loss(img, img.clone(), magnification_groups(torch.tensor([0])), torch.tensor(100.0))
    assert float(loss) < 1e-3


def test_itc_negatives_come_only_from_the_same_magnification():
    # Bag positions 0 (mag 0) and 1 (mag 1). Make every mag-1 caption equal to a mag-0
    # image: a global loss would be confused, the per-magnification loss is not.
    img = _unit(4, 2, 16, seed=6)
    txt = img.clone()
    txt[:, 1] = img[:, 0]  # mag-1 captions now match mag-0 images, not their own tiles
    scale = torch.tensor(50.0)
    per_mag = itc_loss(img, img.clone(), magnification_groups(torch.tensor([0, 1])), scale)
    confused = itc_loss(img, txt, magnification_groups(torch.tensor([0, 1])), scale)
    assert float(per_mag) < 1e-3
    assert float(confused) > float(per_mag) + 1.0


# ---------------------------------------------------------------- CVTA
def _cvta_by_hand(v, w, mask, k, scale):
    total = 0.0
    for b in range(v.shape[0]):
        valid = [j for j in range(w.shape[1]) if mask[b, j]]
        bag = 0.0
        for a in range(v.shape[1]):
            logits = torch.tensor([scale * float(v[b, a] @ w[b, j]) for j in valid])
            logp = logits.log_softmax(0)
            top = logits.topk(min(k, len(valid))).indices
            bag += -float(logp[top].mean())
        total += bag / v.shape[1]
    return total / v.shape[0]


def test_cvta_matches_the_formula():
    v, w = _unit(3, 4, 16, seed=7), _unit(3, 6, 16, seed=8)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    loss, idx, valid = cvta_loss(v, w, mask, 2, torch.tensor(5.0))
    assert float(loss) == pytest.approx(_cvta_by_hand(v, w, mask, 2, 5.0), rel=1e-5)
    assert idx.shape == (3, 4, 2) and bool(valid.all())
    assert not bool((idx[1] >= 4).any())  # masked keywords are never positives


def test_cvta_lower_when_the_topk_keywords_match():
    w = torch.eye(6)[None]  # six orthogonal keywords
    mask = torch.ones(1, 6, dtype=torch.bool)
    matched = F.normalize(w[:, 0] + w[:, 1], dim=-1)[:, None]  # close to keywords 0 and 1
    spread = F.normalize(torch.ones(1, 1, 6), dim=-1)  # equally close to all six
    scale = torch.tensor(20.0)
    good, idx, _ = cvta_loss(matched, w, mask, 2, scale)
    bad, _, _ = cvta_loss(spread, w, mask, 2, scale)
    assert set(idx.flatten().tolist()) == {0, 1}
    assert float(bad) == pytest.approx(math.log(6), rel=1e-5)
    assert float(good) < math.log(2) + 1e-3 < float(bad)


def test_cvta_ignores_padded_keywords_and_keywordless_bags():
    v, w = _unit(2, 3, 8, seed=9), _unit(2, 4, 8, seed=10)
    mask = torch.tensor([[True, True, True, False], [False] * 4])
    loss, _, valid = cvta_loss(v, w, mask, 2, torch.tensor(3.0))
    w2 = w.clone()
    w2[0, 3] = v[0, 0]  # a padded slot identical to a patch must change nothing
    loss2, _, _ = cvta_loss(v, w2, mask, 2, torch.tensor(3.0))
    assert torch.isfinite(loss) and float(loss) == pytest.approx(float(loss2))
    assert not bool(valid[1].any())
    only_first, _, _ = cvta_loss(v[:1], w[:1], mask[:1], 2, torch.tensor(3.0))
    assert float(loss) == pytest.approx(float(only_first))


# ---------------------------------------------------------------- MRTVA
def test_mrtva_has_no_gradient_through_the_target_branch():
    proj = torch.randn(2, 5, 8, requires_grad=True)  # g(z): the target branch
    pred = torch.randn(2, 5, 8, requires_grad=True)  # h(g(z)): the online branch
    parent = torch.tensor([-1, 0, 0, 0, 0])
    mrtva_loss(proj, pred, parent).backward()
    assert proj.grad is None or float(proj.grad.abs().max()) == 0.0
    assert float(pred.grad.abs().max()) > 0.0
    assert float(pred.grad[:, 0].abs().max()) > 0.0  # the root is predicted from children


def test_mrtva_value_symmetric_parent_child():
    same = _unit(1, 1, 8, seed=11).expand(1, 3, 8)
    parent = torch.tensor([-1, 0, 0])
    assert float(mrtva_loss(same, same.clone(), parent)) == pytest.approx(-1.0)
    g = _unit(1, 3, 8, seed=13)
    # D(h_p, g_c) and D(h_c, g_p) weigh equally: swapping the roles leaves the loss unchanged
    h = _unit(1, 3, 8, seed=12)
    a = mrtva_loss(g, h, parent)
    expected = 0.5 * -F.cosine_similarity(h[:, [0, 0]], g[:, [1, 2]], dim=-1).mean()
    expected += 0.5 * -F.cosine_similarity(h[:, [1, 2]], g[:, [0, 0]], dim=-1).mean()
    assert float(a) == pytest.approx(float(expected), rel=1e-5)


def test_mrtva_without_children_is_zero():
    x = torch.randn(2, 1, 4, requires_grad=True)
    assert mrtva_loss(x, x, torch.tensor([-1])).item() == 0.0


# ---------------------------------------------------------------- ITM
def test_itm_hard_negatives_are_never_the_positive():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(12, 12, generator=g) * 5
    sim.fill_diagonal_(10.0)  # the positive is the most similar: softmax would pick it
    texts = torch.tensor([0, 1, 2, 3, 4, 5, 0, 7, 8, 9, 10, 0])  # duplicates of caption 0
    same = texts[:, None] == texts[None, :]
    for _ in range(200):
        neg, valid = sample_hard_negatives(sim, same, g)
        assert bool(valid.all())
        rows = torch.arange(12)
        assert not bool((neg == rows).any())
        assert not bool(same[rows, neg].any())


def test_itm_negatives_follow_the_similarity_softmax():
    sim = torch.zeros(4, 4)
    sim[0, 3] = 8.0  # for row 0, candidate 3 is by far the hardest negative
    g = torch.Generator().manual_seed(1)
    draws = [int(sample_hard_negatives(sim, torch.zeros(4, 4, dtype=torch.bool), g)[0][0])]
    draws += [
        int(sample_hard_negatives(sim, torch.zeros(4, 4, dtype=torch.bool), g)[0][0])
        for _ in range(99)
    ]
    assert draws.count(3) > 90


def test_itm_rows_without_admissible_negative_are_flagged():
    same = torch.ones(3, 3, dtype=torch.bool)  # all captions identical
    _, valid = sample_hard_negatives(torch.randn(3, 3), same)
    assert not bool(valid.any())


# ---------------------------------------------------------------- MLM
SPECIAL = (0, 49406, 49407, 49408)


def test_mask_tokens_masks_only_ordinary_tokens_at_the_requested_rate():
    g = torch.Generator().manual_seed(0)
    body = torch.randint(1, 40000, (400, 30), generator=g)
    tokens = torch.cat(
        [
            torch.full((400, 1), 49406),
            body,
            torch.full((400, 1), 49407),
            torch.zeros(400, 5, dtype=torch.long),
        ],
        1,
    )
    masked, labels = mask_tokens(tokens, 0.15, 49408, SPECIAL, g)
    chosen = labels != IGNORE_INDEX
    assert bool((masked[chosen] == 49408).all())
    assert bool((labels[chosen] == tokens[chosen]).all())
    assert bool((masked[~chosen] == tokens[~chosen]).all())
    assert not bool(chosen[:, 0].any() or chosen[:, 31:].any())  # start, end, padding
    assert bool(chosen.any(dim=1).all())  # every row has at least one mask
    assert 0.13 < float(chosen[:, 1:31].float().mean()) < 0.17


def test_mlm_loss_counts_only_masked_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 2], labels[1, 4] = 3, 7
    base = mlm_loss(logits, labels)
    expected = F.cross_entropy(torch.stack([logits[0, 2], logits[1, 4]]), torch.tensor([3, 7]))
    assert float(base) == pytest.approx(float(expected))
    noisy = logits.clone()
    noisy[0, 0] += 100.0  # unmasked positions change nothing
    noisy[1, 5] -= 50.0
    assert float(mlm_loss(noisy, labels)) == pytest.approx(float(base))
    moved = logits.clone()
    moved[0, 2, 3] += 5.0  # the masked position's target logit lowers the loss
    assert float(mlm_loss(moved, labels)) < float(base)
