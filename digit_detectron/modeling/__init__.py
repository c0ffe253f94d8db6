"""
Model parts of digit_detectron; importing registers ``DigitROIHeads`` (ROI_HEADS_REGISTRY) and the
torchvision backbones and the top-pooled ResNet FPN (BACKBONE_REGISTRY).
"""

from .iou_loss import IOU_LOSS_TYPES, box_iou_loss, iou_loss_lambda
from .resnet_fpn import build_resnet_fpn_top_pooled_backbone
from .roi_heads import DigitFastRCNNOutputLayers, DigitROIHeads, credit_foreground
from .torchvision_backbone import TorchvisionBackbone, build_torchvision_backbone, build_torchvision_fpn_backbone

__all__ = [
    "IOU_LOSS_TYPES",
    "box_iou_loss",
    "iou_loss_lambda",
    "DigitFastRCNNOutputLayers",
    "DigitROIHeads",
    "credit_foreground",
    "TorchvisionBackbone",
    "build_torchvision_backbone",
    "build_torchvision_fpn_backbone",
    "build_resnet_fpn_top_pooled_backbone",
]
