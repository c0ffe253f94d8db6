"""torchvision MobileNetV3 / RegNet as registered detectron2 backbones (random init and from state dicts).

The warm start filling them is tested with the other backbones in test_pretrain.py.
"""

import os

import pytest
import torch
import torchvision
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from digit_detectron import get_digit_cfg
from digit_detectron.data import DigitDatasetMapper, register_digits
from digit_detectron.modeling import TorchvisionBackbone

from conftest import REPO_ROOT, tiny_model_opts

MOBILENET = os.path.join(REPO_ROOT, "configs", "digits_cpu_mobilenet_v3.yaml")
REGNET = os.path.join(REPO_ROOT, "configs", "digits_cpu_regnet.yaml")


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "mobilenet_v3_large", "regnet_x_400mf"])
def test_stages_have_resnet_names_and_strides(arch):
    backbone = TorchvisionBackbone(arch)
    shapes = backbone.output_shape()
    assert list(shapes) == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    out = backbone(torch.rand(2, 3, 64, 96))
    for name, feature in out.items():
        assert feature.shape == (2, shapes[name].channels, 64 // shapes[name].stride, 96 // shapes[name].stride)


@pytest.mark.slow
@pytest.mark.parametrize("config", [MOBILENET, REGNET])
def test_detector_trains_with_the_registered_backbone(config, digit_root, tmp_path):
    register_digits(digit_root, "tvb")
    cfg = get_digit_cfg(config, tiny_model_opts(tmp_path) + ["DATASETS.TRAIN", "('tvb_train',)"])
    model = build_model(cfg)
    assert type(model.backbone.bottom_up) is TorchvisionBackbone
    mapper = DigitDatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get("tvb_train")[:2]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    with EventStorage():
        losses = model(batch)
        total = sum(losses.values())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
    first = model.backbone.bottom_up.stem[0][0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_weights_from_a_torchvision_state_dict(tmp_path):
    net = torchvision.models.mobilenet_v3_small(weights=None)
    path = str(tmp_path / "mobilenet_v3_small.pth")
    torch.save(net.state_dict(), path)
    backbone = TorchvisionBackbone("mobilenet_v3_small", weights=path)
    # Stem and stages hold net.features' layers in order; the classifier is not used.
    ours, theirs = list(backbone.state_dict().values()), list(net.features.state_dict().values())
    assert len(ours) == len(theirs) > 100
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert not torch.equal(ours[0], torchvision.models.mobilenet_v3_small(weights=None).features[0][0].weight)

    wrong = str(tmp_path / "regnet.pth")
    torch.save(torchvision.models.regnet_x_400mf(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="regnet.pth: not a torchvision mobilenet_v3_small state dict"):
        TorchvisionBackbone("mobilenet_v3_small", weights=wrong)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="torchvision.models has no 'mobilenet_v9'"):
        TorchvisionBackbone("mobilenet_v9")
    with pytest.raises(ValueError, match="must be a torchvision mobilenet_\\* or regnet_\\* model, got 'resnet18'"):
        TorchvisionBackbone("resnet18")
    with pytest.raises(ValueError, match="has no stage 'res6'"):
        TorchvisionBackbone("mobilenet_v3_small", out_features=["res5", "res6"])
