"""
torchvision classification networks (MobileNetV3, RegNet, ...) as detectron2 backbones.

``build_torchvision_fpn_backbone`` (BACKBONE_REGISTRY) cuts ``MODEL.TORCHVISION_BACKBONE.ARCH``,
built with random init or from a torchvision state dict, into stages at strides 4 / 8 / 16 / 32,
names them ``res2`` .. ``res5`` like detectron2's ResNet, and puts detectron2's FPN on top; the
rest of a ResNet-FPN config (FPN / RPN / ROI in-features, anchors) applies unchanged.
"""

import os

import torch
import torchvision
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from torch import nn

from ..utils.errors import DigitError

STAGE_NAMES = {4: "res2", 8: "res3", 16: "res4", 32: "res5"}
# State-dict prefixes of the classifier heads, which the backbone does not use.
_HEAD_PREFIXES = ("classifier.", "fc.")
# Probe size for finding the stride of every layer; any multiple of 32 works.
_PROBE = 64


class ConversionError(DigitError, ValueError):
    """Weights that the converter does not understand; the message names the file or the tensors."""


def load_torchvision_state_dict(path):
    """Read a torchvision state dict (a plain one, or under "model" as torchvision's references save it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(f"{path}: not a readable torch file ({type(e).__name__}: {e})") from e
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConversionError(f"{path}: not a state dict (a mapping of names to tensors)")
    return data


def _layers(arch, net):
    """The network's feature layers in forward order (the classifier head left out)."""
    if arch.startswith("mobilenet"):
        return list(net.features)
    if arch.startswith("regnet"):
        return [net.stem, *net.trunk_output]
    raise ValueError(
        f"MODEL.TORCHVISION_BACKBONE.ARCH must be a torchvision mobilenet_* or regnet_* model, got {arch!r}"
    )


class TorchvisionBackbone(Backbone):
    """
    A torchvision network's feature layers grouped into a stem (stride 2) and stages ``res2`` ..
    ``res5`` (strides 4..32), each ending at the last layer of its stride.
    """

    def __init__(self, arch, out_features=("res2", "res3", "res4", "res5"), weights=""):
        super().__init__()
        builder = getattr(torchvision.models, arch, None)
        if builder is None:
            raise ValueError(f"torchvision.models has no {arch!r}")
        net = builder(weights=None)
        if weights:
            state = load_torchvision_state_dict(weights)
            state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith(_HEAD_PREFIXES)]
            if missing or unexpected:
                raise ValueError(
                    f"{weights}: not a torchvision {arch} state dict "
                    f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
                )
        layers = _layers(arch, net)

        strides = []
        with torch.no_grad():
            x = torch.zeros(1, 3, _PROBE, _PROBE)
            was_training = net.training
            net.eval()
            for layer in layers:
                x = layer(x)
                strides.append((_PROBE // x.shape[-1], x.shape[1]))
            net.train(was_training)

        self.stem = nn.Sequential()
        self._out_feature_strides, self._out_feature_channels = {}, {}
        self.stage_names = []
        for i, (layer, (stride, channels)) in enumerate(zip(layers, strides)):
            name = STAGE_NAMES.get(stride, "stem" if stride < 4 else None)
            if name is None:
                raise ValueError(f"{arch}: layer {i} has stride {stride}, past the supported 32")
            if name == "stem":
                self.stem.append(layer)
                continue
            if not hasattr(self, name):
                self.add_module(name, nn.Sequential())
                self.stage_names.append(name)
            getattr(self, name).append(layer)
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = channels
        for name in out_features:
            if name not in self.stage_names:
                raise ValueError(f"{arch} has no stage {name!r} (it has {self.stage_names})")
        self._out_features = list(out_features)

    def forward(self, x):
        x = self.stem(x)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
            if name == self._out_features[-1]:
                break
        return outputs


@BACKBONE_REGISTRY.register()
def build_torchvision_backbone(cfg, input_shape: ShapeSpec):
    """``MODEL.TORCHVISION_BACKBONE`` as a bottom-up backbone with ``res2`` .. ``res5`` outputs."""
    c = cfg.MODEL.TORCHVISION_BACKBONE
    if input_shape.channels != 3:
        raise ValueError(f"torchvision backbones take 3 input channels, got {input_shape.channels}")
    return TorchvisionBackbone(c.ARCH, c.OUT_FEATURES, c.WEIGHTS)


@BACKBONE_REGISTRY.register()
def build_torchvision_fpn_backbone(cfg, input_shape: ShapeSpec):
    """``build_torchvision_backbone`` with detectron2's FPN (MODEL.FPN) and a max-pooled P6."""
    return FPN(
        bottom_up=build_torchvision_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
