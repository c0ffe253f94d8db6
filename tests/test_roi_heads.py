"""DigitROIHeads: the ramped IoU term of its box predictor, against detectron2's StandardROIHeads."""

import math
import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import StandardROIHeads, build_roi_heads
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from digit_detectron.config import get_digit_cfg
from digit_detectron.engine.schedule import epoch_of_iteration
from digit_detectron.modeling import (
    DigitFastRCNNOutputLayers,
    DigitROIHeads,
    box_iou_loss,
    iou_loss_lambda,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(REPO_ROOT, "configs", "Base-Digits-RCNN-FPN.yaml")
CHANNELS = 4
IMAGE_SIZE = (64, 64)
FEATURE_SHAPES = {f"p{k}": ShapeSpec(channels=CHANNELS, stride=2**k) for k in (2, 3, 4, 5)}
TORCHVISION_LOSSES = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}


def small_cfg(*opts):
    return get_digit_cfg(
        BASE_CONFIG,
        [
            "MODEL.ROI_BOX_HEAD.NUM_FC", "1",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "16",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
            *opts,
        ],
    )  # fmt: skip


def build_heads(*opts):
    torch.manual_seed(0)
    return build_roi_heads(small_cfg(*opts), FEATURE_SHAPES).train()


def standard_and_digit_heads(*digit_opts):
    """A StandardROIHeads and a DigitROIHeads with the same weights."""
    standard = build_heads("MODEL.ROI_HEADS.NAME", "StandardROIHeads")
    digit = build_heads(*digit_opts)
    assert type(standard) is StandardROIHeads and type(digit) is DigitROIHeads
    digit.load_state_dict(standard.state_dict())  # strict: the epoch is not in the state_dict
    return standard, digit


def tiny_batch():
    """Features of 2 images, 20 proposals around / away from 2..3 digit boxes per image."""
    g = torch.Generator().manual_seed(1)
    h, w = IMAGE_SIZE
    features = {
        name: torch.randn(2, CHANNELS, h // s.stride, w // s.stride, generator=g) for name, s in FEATURE_SHAPES.items()
    }
    gt = [
        (torch.tensor([[4.0, 10.0, 20.0, 40.0], [22.0, 12.0, 36.0, 44.0]]), torch.tensor([3, 7])),
        (torch.tensor([[8.0, 6.0, 22.0, 30.0], [24.0, 8.0, 40.0, 34.0], [42.0, 9.0, 58.0, 33.0]]),
         torch.tensor([0, 9, 1])),
    ]  # fmt: skip
    proposals, targets = [], []
    for boxes, classes in gt:
        jittered = boxes.repeat(4, 1) + torch.randn(len(boxes) * 4, 4, generator=g) * 3.0
        xy = torch.rand(20 - len(jittered), 2, generator=g) * 40.0
        random = torch.cat([xy, xy + 8.0 + torch.rand(len(xy), 2, generator=g) * 16.0], dim=1)
        p = Instances(IMAGE_SIZE)
        p.proposal_boxes = Boxes(torch.cat([jittered, random]).clamp(0, 63))
        p.objectness_logits = torch.randn(20, generator=g)
        t = Instances(IMAGE_SIZE)
        t.gt_boxes = Boxes(boxes)
        t.gt_classes = classes
        proposals.append(p)
        targets.append(t)
    return features, proposals, targets


def train_losses(heads, epoch=None):
    """Training losses on `tiny_batch` with the proposal sampling seeded; also the logged scalars."""
    if epoch is not None:
        heads.set_epoch(epoch)
    features, proposals, targets = tiny_batch()
    with EventStorage(0) as storage:
        torch.manual_seed(123)
        _, losses = heads(None, features, proposals, targets)
        logged = {k: v.latest() for k, v in storage.histories().items()}
    return losses, logged


@pytest.mark.parametrize("epoch,expected", [(0, 0.0), (5, 0.0), (6, 0.1), (7, 0.15), (10, 0.3), (14, 0.5), (20, 0.5)])
def test_lambda_ramps_from_epoch_6_to_its_cap(epoch, expected):
    iou = small_cfg().MODEL.ROI_BOX_HEAD.IOU_LOSS
    value = iou_loss_lambda(epoch, iou.START_EPOCH, iou.LAMBDA_START, iou.LAMBDA_STEP, iou.LAMBDA_MAX)
    assert value == pytest.approx(expected)


def test_epoch_of_iteration():
    assert [epoch_of_iteration(i, 100) for i in (0, 99, 100, 599, 600, 1499)] == [0, 0, 1, 5, 6, 14]
    with pytest.raises(ValueError, match="iters_per_epoch"):
        epoch_of_iteration(5, 0)
    with pytest.raises(ValueError, match="iteration"):
        epoch_of_iteration(-1, 10)


def test_base_config_builds_digit_roi_heads_with_digit_predictor():
    heads = build_heads()
    assert isinstance(heads.box_predictor, DigitFastRCNNOutputLayers)
    assert heads.box_predictor.iou_loss_type == "none"
    heads.set_epoch(9)
    assert heads.epoch == 9 and heads.box_predictor.iou_loss_lambda == 0.0


@pytest.mark.parametrize("epoch", [0, 10])
def test_type_none_losses_equal_standard_roi_heads(epoch):
    standard, digit = standard_and_digit_heads()
    expected, expected_logged = train_losses(standard)
    losses, logged = train_losses(digit, epoch)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert expected["loss_box_reg"] > 0
    for k in expected:
        torch.testing.assert_close(losses[k], expected[k], rtol=0, atol=0)
    assert logged == expected_logged  # no IoU scalars


@pytest.mark.parametrize("loss_type", ["giou", "diou", "ciou"])
def test_iou_term_mixes_into_loss_cls_by_the_formula(loss_type):
    standard, digit = standard_and_digit_heads("MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", loss_type)
    expected, _ = train_losses(standard)

    losses, logged = train_losses(digit, epoch=5)  # before START_EPOCH: plain cross-entropy
    torch.testing.assert_close(losses["loss_cls"], expected["loss_cls"], rtol=0, atol=0)
    assert logged["iou_loss_lambda"] == 0.0

    losses, logged = train_losses(digit, epoch=10)
    assert set(losses) == {"loss_cls", "loss_box_reg"}  # loss_iou is logged, not summed twice
    lam, loss_iou = logged["iou_loss_lambda"], logged["loss_iou"]
    assert lam == pytest.approx(0.3)
    assert 0.0 < loss_iou < 2.0
    assert logged["loss_cls_ce"] == pytest.approx(expected["loss_cls"].item())
    mixed = (1 - lam) * expected["loss_cls"].item() + lam * loss_iou
    assert losses["loss_cls"].item() == pytest.approx(mixed, rel=1e-6)
    assert losses["loss_cls"].item() != pytest.approx(expected["loss_cls"].item())
    torch.testing.assert_close(losses["loss_box_reg"], expected["loss_box_reg"], rtol=0, atol=0)


def test_iou_term_into_box_reg_adds_to_loss_box_reg():
    standard, digit = standard_and_digit_heads(
        "MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", "diou", "MODEL.ROI_BOX_HEAD.IOU_LOSS.INTO", "box_reg"
    )
    expected, _ = train_losses(standard)
    losses, logged = train_losses(digit, epoch=14)
    assert logged["iou_loss_lambda"] == pytest.approx(0.5)
    assert logged["loss_box_reg_deltas"] == pytest.approx(expected["loss_box_reg"].item())
    added = expected["loss_box_reg"].item() + 0.5 * logged["loss_iou"]
    assert losses["loss_box_reg"].item() == pytest.approx(added, rel=1e-6)
    torch.testing.assert_close(losses["loss_cls"], expected["loss_cls"], rtol=0, atol=0)


def test_iou_term_in_loss_cls_trains_the_box_deltas():
    standard, digit = standard_and_digit_heads("MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", "ciou")
    expected, _ = train_losses(standard)
    expected["loss_cls"].backward()
    assert standard.box_predictor.bbox_pred.weight.grad is None  # cross-entropy alone: no path

    losses, _ = train_losses(digit, epoch=6)
    losses["loss_cls"].backward()
    grad = digit.box_predictor.bbox_pred.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # Class-specific regression: only rows of the classes of foreground proposals get gradient.
    rows_with_grad = grad.abs().sum(dim=1).view(10, 4).sum(dim=1) > 0
    assert rows_with_grad.nonzero().flatten().tolist() == [0, 1, 3, 7, 9]


def hand_made_predictions(num_classes=10):
    """
    Proposals of one image, their gt-class deltas (zero: predicted box == proposal) and wrong-class
    deltas (large), and one background proposal far from its placeholder box.
    """
    p = Instances(IMAGE_SIZE)
    p.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 2.0, 4.0], [10.0, 10.0, 14.0, 12.0], [30.0, 30.0, 40.0, 40.0]]))
    p.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 4.0, 2.0], [11.0, 10.0, 15.0, 12.0], [0.0, 0.0, 1.0, 1.0]]))
    p.gt_classes = torch.tensor([2, 5, num_classes])
    deltas = torch.full((3, num_classes, 4), 0.7)
    deltas[0, 2] = 0.0
    deltas[1, 5] = 0.0
    deltas = deltas.view(3, -1).requires_grad_()
    scores = torch.zeros(3, num_classes + 1, requires_grad=True)
    return (scores, deltas), p


@pytest.mark.parametrize("loss_type", ["giou", "diou", "ciou"])
def test_iou_loss_uses_gt_class_boxes_of_foreground_proposals(loss_type):
    predictor = build_heads("MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", loss_type).box_predictor
    predictions, proposals = hand_made_predictions()
    loss = predictor.iou_loss(predictions, [proposals])
    expected = TORCHVISION_LOSSES[loss_type](
        proposals.proposal_boxes.tensor[:2], proposals.gt_boxes.tensor[:2], reduction="mean"
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    deltas_grad = predictions[1].grad.view(3, 10, 4)
    assert deltas_grad[0, 2].abs().sum() > 0 and deltas_grad[1, 5].abs().sum() > 0
    assert deltas_grad.abs().sum() == deltas_grad[0, 2].abs().sum() + deltas_grad[1, 5].abs().sum()


def test_iou_loss_without_foreground_is_zero_and_differentiable():
    predictor = build_heads("MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", "diou").box_predictor
    predictor.set_epoch(8)
    predictions, proposals = hand_made_predictions()
    background = Instances(IMAGE_SIZE)
    background.proposal_boxes = proposals.proposal_boxes
    background.gt_classes = torch.full((3,), 10)
    with EventStorage(0) as storage:
        losses = predictor.losses(predictions, [background])
        assert storage.histories()["loss_iou"].latest() == 0.0
    assert predictor.iou_loss(predictions, [background]).requires_grad
    sum(losses.values()).backward()
    assert predictions[1].grad.abs().sum() == 0


def test_box_iou_losses_match_hand_computed_values():
    # Same aspect ratio (2x2 vs 2x2, shifted by 1): IoU 1/3, centers 1 apart, enclosing box 3x2.
    same = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    diou_same = 1 - 1 / 3 + 1 / 13
    # Transposed aspect ratios (2x4 vs 4x2): IoU 4/12, centers sqrt(2) apart, enclosing box 4x4.
    crossed = torch.tensor([[0.0, 0.0, 2.0, 4.0]]), torch.tensor([[0.0, 0.0, 4.0, 2.0]])
    diou_crossed = 1 - 1 / 3 + 2 / 32
    v = 4 / math.pi**2 * (math.atan(2 / 4) - math.atan(4 / 2)) ** 2
    ciou_crossed = diou_crossed + v / (1 - 1 / 3 + v) * v
    # Disjoint unit squares: IoU 0, enclosing box 3x1, union 2.
    disjoint = torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]])

    assert box_iou_loss(*same, "diou").item() == pytest.approx(diou_same, rel=1e-5)
    assert box_iou_loss(*same, "ciou").item() == pytest.approx(diou_same, rel=1e-5)
    assert box_iou_loss(*crossed, "diou").item() == pytest.approx(diou_crossed, rel=1e-5)
    assert box_iou_loss(*crossed, "ciou").item() == pytest.approx(ciou_crossed, rel=1e-5)
    # CIoU's aspect-ratio term: 0.034 here.
    assert (box_iou_loss(*crossed, "ciou") - box_iou_loss(*crossed, "diou")).item() > 0.03
    assert box_iou_loss(*disjoint, "giou").item() == pytest.approx(1 + 1 / 3, rel=1e-5)
    for loss_type, fn in TORCHVISION_LOSSES.items():
        for pair in (same, crossed, disjoint):
            torch.testing.assert_close(box_iou_loss(*pair, loss_type), fn(*pair, reduction="mean"))


def test_box_iou_loss_rejects_bad_input():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match="Unknown IoU loss type 'iou'"):
        box_iou_loss(boxes, boxes, "iou")
    with pytest.raises(ValueError, match="must pair up"):
        box_iou_loss(boxes, boxes.repeat(2, 1), "diou")


@pytest.mark.parametrize("key,value", [("TYPE", "iou"), ("INTO", "total")])
def test_bad_iou_loss_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=f"MODEL.ROI_BOX_HEAD.IOU_LOSS.{key} must be one of"):
        build_heads(f"MODEL.ROI_BOX_HEAD.IOU_LOSS.{key}", value)


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["diou", "ciou"])
def test_iou_config_trains_a_full_model(loss_type):
    config = os.path.join(REPO_ROOT, "configs", f"faster_rcnn_R_50_FPN_digits_{loss_type}.yaml")
    cfg = get_digit_cfg(
        config,
        [
            "MODEL.WEIGHTS", "",
            "MODEL.RESNETS.DEPTH", "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.FPN.OUT_CHANNELS", "32",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
        ],
    )  # fmt: skip
    assert cfg.MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE == loss_type
    assert cfg.MODEL.ROI_BOX_HEAD.IOU_LOSS.INTO == "cls"
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert isinstance(model.roi_heads, DigitROIHeads)
    model.roi_heads.set_epoch(epoch_of_iteration(700, 100))
    _, _, targets = tiny_batch()
    inputs = [{"image": torch.rand(3, *IMAGE_SIZE) * 255, "instances": t} for t in targets]
    with EventStorage(0) as storage:
        losses = model(inputs)
        logged = {k: v.latest() for k, v in storage.histories().items()}
    assert logged["iou_loss_lambda"] == pytest.approx(0.15)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0
