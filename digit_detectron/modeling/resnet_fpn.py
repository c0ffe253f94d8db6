"""
``build_resnet_fpn_top_pooled_backbone`` (BACKBONE_REGISTRY): detectron2's ResNet FPN, whose extra top
level is max-pooled from the FPN's last level whatever it is. detectron2's own builder pools ``p5``, so
an FPN over res2..res4 (a ResNet without its last stage, configs/digits_ready.yaml) needs this one.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_top_pooled_backbone(cfg, input_shape: ShapeSpec):
    bottom_up = build_resnet_backbone(cfg, input_shape)
    in_features = cfg.MODEL.FPN.IN_FEATURES
    top_block = LastLevelMaxPool()
    last_stride = bottom_up.output_shape()[in_features[-1]].stride
    top_block.in_feature = f"p{last_stride.bit_length() - 1}"  # the FPN level of the last input: p4 for res4
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
