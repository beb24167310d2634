"""The losses picked by name: BCE, focal (against torchvision's), class-balanced (against a hand computation)."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from hatememes.losses import LossConfig, class_balanced_weights, make_loss

torch.manual_seed(0)
LOGITS = torch.randn(32, dtype=torch.float64) * 3
LABELS = (torch.rand(32) < 0.3).double()


def test_bce_is_torch_bce():
    loss = make_loss("bce", LossConfig(), (10, 5))(LOGITS, LABELS)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(LOGITS, LABELS))


def test_focal_with_gamma_zero_and_no_alpha_is_bce():
    focal = make_loss("focal", LossConfig(name="focal", focal_alpha=None, focal_gamma=0.0), (10, 5))
    torch.testing.assert_close(focal(LOGITS, LABELS), F.binary_cross_entropy_with_logits(LOGITS, LABELS))


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.75, 0.5), (None, 1.0)])
def test_focal_matches_torchvision(alpha, gamma):
    focal = make_loss("focal", LossConfig(name="focal", focal_alpha=alpha, focal_gamma=gamma), (10, 5))
    expected = sigmoid_focal_loss(LOGITS, LABELS, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean")
    torch.testing.assert_close(focal(LOGITS, LABELS), expected)


def test_focal_down_weights_easy_examples():
    logits, labels = torch.tensor([4.0, 0.1]), torch.tensor([1.0, 1.0])  # one confident and right, one unsure
    focal = make_loss("focal", LossConfig(name="focal", focal_gamma=2.0), (1, 1))
    ratios = [
        focal(logits[i : i + 1], labels[i : i + 1]) / F.binary_cross_entropy_with_logits(logits[i], labels[i])
        for i in (0, 1)
    ]
    assert ratios[0] < 0.001 < 0.2 < ratios[1]  # (1 - p_t)^2: 0.018^2 against 0.475^2


def test_class_balanced_weights_by_hand():
    # counts (90 benign, 10 hateful), beta 0.9: effective numbers E_n = 1 + beta + ... + beta^(n-1)
    effective = [sum(0.9**k for k in range(n)) for n in (90, 10)]  # 9.99924, 6.51322
    inverse = [1 / e for e in effective]
    expected = [2 * w / sum(inverse) for w in inverse]
    assert class_balanced_weights((90, 10), beta=0.9) == pytest.approx(expected, rel=1e-12)
    assert class_balanced_weights((90, 10), beta=0.9) == pytest.approx((0.788885, 1.211115), abs=1e-6)


def test_class_balanced_limits():
    assert class_balanced_weights((90, 10), beta=0.0) == pytest.approx((1.0, 1.0))  # every E_n = 1
    assert class_balanced_weights((90, 10), beta=0.999999) == pytest.approx((0.2, 1.8), rel=1e-4)  # ~ 1 / n


@pytest.mark.parametrize("base", ["bce", "focal"])
def test_class_balanced_weighs_each_example_by_its_class(base):
    config = LossConfig(name="class_balanced", focal_alpha=0.25, focal_gamma=2.0, cb_beta=0.9, cb_base=base)
    w_benign, w_hateful = class_balanced_weights((90, 10), beta=0.9)
    per_example = make_loss(base, config, (90, 10))
    expected = torch.stack(
        [per_example(LOGITS[i : i + 1], LABELS[i : i + 1]) * (w_hateful if LABELS[i] else w_benign) for i in range(32)]
    ).mean()
    torch.testing.assert_close(make_loss("class_balanced", config, (90, 10))(LOGITS, LABELS), expected)


def test_losses_are_differentiable_scalars():
    logits = LOGITS.clone().requires_grad_(True)
    for name in ("bce", "focal", "class_balanced"):
        loss = make_loss(name, LossConfig(name=name), (20, 12))(logits, LABELS)
        assert loss.shape == ()
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="bce, class_balanced, focal"):
        make_loss("hinge", LossConfig(), (1, 1))


def test_class_balanced_needs_both_classes():
    with pytest.raises(ValueError, match="positive count"):
        make_loss("class_balanced", LossConfig(name="class_balanced"), (10, 0))
