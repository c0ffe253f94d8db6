"""ROI heads whose box predictor mixes a ramped DIoU / CIoU / GIoU term into its losses."""

from detectron2.config import configurable
from detectron2.layers import cat, nonzero_tuple
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, FastRCNNOutputLayers, StandardROIHeads
from detectron2.utils.events import get_event_storage

from .iou_loss import IOU_LOSS_TYPES, box_iou_loss, iou_loss_lambda
from .roi_align import use_sparse_training_pass
from .soft_nms import soft_nms_inference_single_image

__all__ = ["DigitFastRCNNOutputLayers", "DigitROIHeads", "credit_foreground"]

_IOU_LOSS_INTO = ("cls", "box_reg")


class DigitFastRCNNOutputLayers(FastRCNNOutputLayers):
    """
    :class:`FastRCNNOutputLayers` with an IoU loss between the decoded box predicted for the
    ground-truth class of each foreground proposal and its matched ground-truth box, weighted by
    ``lambda`` = :func:`iou_loss_lambda` of the current epoch (set by :meth:`set_epoch`):

    * ``iou_loss_into="cls"``: ``loss_cls = (1 - lambda) * loss_cls + lambda * loss_iou``;
    * ``iou_loss_into="box_reg"``: ``loss_box_reg = loss_box_reg + lambda * loss_iou``.

    ``loss_iou`` is the mean over foreground proposals. Like detectron2's, the losses log to the
    active EventStorage: ``iou_loss_lambda``, ``loss_iou`` and the unmixed term (``loss_cls_ce``
    or ``loss_box_reg_deltas``), every iteration. ``iou_loss_type="none"`` gives detectron2's losses.
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        iou_loss_type="none",
        iou_loss_into="cls",
        iou_loss_start_epoch=6,
        iou_loss_lambda_start=0.1,
        iou_loss_lambda_step=0.05,
        iou_loss_lambda_max=0.5,
        soft_nms_sigma=0.0,
        foreground_score=False,
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: as for :class:`FastRCNNOutputLayers`.
            iou_loss_type (str): "none", "giou", "diou" or "ciou".
            iou_loss_into (str): "cls" or "box_reg", the loss the IoU term is mixed into.
            iou_loss_start_epoch, iou_loss_lambda_start, iou_loss_lambda_step,
            iou_loss_lambda_max: the schedule of :func:`iou_loss_lambda`.
            soft_nms_sigma (float): > 0: Gaussian soft-NMS with this sigma replaces the per-class
                hard NMS at inference (``modeling/soft_nms.py``); 0: detectron2's NMS.
            foreground_score (bool): at inference, the most likely digit of each proposal scores the
                proposal's foreground probability (1 - background) instead of its own probability
                (``credit_foreground``); the other digits keep theirs.
        """
        super().__init__(input_shape, **kwargs)
        if iou_loss_type not in IOU_LOSS_TYPES:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE must be one of {IOU_LOSS_TYPES}, got {iou_loss_type!r}")
        if iou_loss_into not in _IOU_LOSS_INTO:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.IOU_LOSS.INTO must be one of {_IOU_LOSS_INTO}, got {iou_loss_into!r}")
        self.iou_loss_type = iou_loss_type
        self.iou_loss_into = iou_loss_into
        self.iou_loss_start_epoch = iou_loss_start_epoch
        self.iou_loss_lambda_start = iou_loss_lambda_start
        self.iou_loss_lambda_step = iou_loss_lambda_step
        self.iou_loss_lambda_max = iou_loss_lambda_max
        self.soft_nms_sigma = float(soft_nms_sigma)
        self.foreground_score = bool(foreground_score)
        # 0-indexed training epoch; a plain attribute (not checkpointed): the trainer sets it.
        self.epoch = 0

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        iou = cfg.MODEL.ROI_BOX_HEAD.IOU_LOSS
        ret.update(
            {
                "iou_loss_type": iou.TYPE,
                "iou_loss_into": iou.INTO,
                "iou_loss_start_epoch": iou.START_EPOCH,
                "iou_loss_lambda_start": iou.LAMBDA_START,
                "iou_loss_lambda_step": iou.LAMBDA_STEP,
                "iou_loss_lambda_max": iou.LAMBDA_MAX,
                "soft_nms_sigma": cfg.MODEL.ROI_HEADS.SOFT_NMS.SIGMA if cfg.MODEL.ROI_HEADS.SOFT_NMS.ENABLED else 0.0,
                "foreground_score": cfg.MODEL.ROI_HEADS.FOREGROUND_SCORE,
            }
        )
        return ret

    def set_epoch(self, epoch):
        """Set the 0-indexed training epoch that picks the IoU term's weight."""
        self.epoch = int(epoch)

    @property
    def iou_loss_lambda(self):
        """Weight of the IoU term in the current epoch (0 when ``iou_loss_type`` is "none")."""
        if self.iou_loss_type == "none":
            return 0.0
        return iou_loss_lambda(
            self.epoch,
            self.iou_loss_start_epoch,
            self.iou_loss_lambda_start,
            self.iou_loss_lambda_step,
            self.iou_loss_lambda_max,
        )

    def predict_probs(self, predictions, proposals):
        probs = super().predict_probs(predictions, proposals)
        if not self.foreground_score:
            return probs
        return [credit_foreground(p) for p in probs]

    def inference(self, predictions, proposals):
        if self.soft_nms_sigma <= 0:
            return super().inference(predictions, proposals)
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        results = [
            soft_nms_inference_single_image(
                b, s, p.image_size, self.test_score_thresh, self.soft_nms_sigma, self.test_topk_per_image
            )
            for b, s, p in zip(boxes, scores, proposals)
        ]
        return [r[0] for r in results], [r[1] for r in results]

    def losses(self, predictions, proposals):
        losses = super().losses(predictions, proposals)
        if self.iou_loss_type == "none":
            return losses
        loss_iou = self.iou_loss(predictions, proposals)
        lam = self.iou_loss_lambda
        if self.iou_loss_into == "cls":
            unmixed_name, unmixed = "loss_cls_ce", losses["loss_cls"]
            losses["loss_cls"] = (1.0 - lam) * unmixed + lam * loss_iou
        else:
            unmixed_name, unmixed = "loss_box_reg_deltas", losses["loss_box_reg"]
            losses["loss_box_reg"] = unmixed + lam * loss_iou
        storage = get_event_storage()
        storage.put_scalar("iou_loss_lambda", lam, smoothing_hint=False)  # a schedule value, like lr
        storage.put_scalar("loss_iou", loss_iou.item())
        storage.put_scalar(unmixed_name, unmixed.item())
        return losses

    def iou_loss(self, predictions, proposals):
        """
        Mean IoU loss of ``iou_loss_type`` over the foreground proposals between the box decoded
        from the deltas of each one's ground-truth class and its matched ground-truth box.
        Differentiable w.r.t. the predicted deltas; 0 (in the graph) without foreground.
        """
        _, proposal_deltas = predictions
        if not len(proposals):
            return proposal_deltas.sum() * 0.0
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        gt_boxes = cat(
            [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
            dim=0,
        )
        fg_inds = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))[0]
        box_dim = proposal_boxes.shape[1]
        if proposal_deltas.shape[1] == box_dim:  # class-agnostic regression
            fg_deltas = proposal_deltas[fg_inds]
        else:
            fg_deltas = proposal_deltas.view(-1, self.num_classes, box_dim)[fg_inds, gt_classes[fg_inds]]
        fg_pred_boxes = self.box2box_transform.apply_deltas(fg_deltas, proposal_boxes[fg_inds])
        return box_iou_loss(fg_pred_boxes, gt_boxes[fg_inds], self.iou_loss_type)


def credit_foreground(probs):
    """
    ``probs`` (R x (K + 1) softmax, background last) with each row's most likely class set to the row's
    foreground probability, 1 - background: a box that is surely a digit but torn between two digits
    (e.g. 0.45 "1", 0.40 "7", 0.15 background) scores 0.85 for its best digit instead of 0.45, so a
    reader's score threshold keeps it. The other classes keep their own probabilities, which are lower.
    """
    if probs.shape[0] == 0:
        return probs
    foreground = 1.0 - probs[:, -1:]
    best = probs[:, :-1].argmax(dim=1, keepdim=True)
    return probs.scatter(1, best, foreground)


@ROI_HEADS_REGISTRY.register()
class DigitROIHeads(StandardROIHeads):
    """
    :class:`StandardROIHeads` whose box predictor is a :class:`DigitFastRCNNOutputLayers`
    (configured by ``MODEL.ROI_BOX_HEAD.IOU_LOSS``) and whose box pooler's ROIAlign levels train
    through :class:`SparseROIAlign` (``MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN``). The trainer calls
    :meth:`set_epoch`.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = DigitFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        if cfg.MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN == "sparse":
            ret["box_pooler"] = use_sparse_training_pass(ret["box_pooler"])
        return ret

    def set_epoch(self, epoch):
        """Set the 0-indexed training epoch that picks the IoU term's weight."""
        self.box_predictor.set_epoch(epoch)

    @property
    def epoch(self):
        return self.box_predictor.epoch
