"""One real training step of a shipped config on CPU."""

import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from digit_detectron import get_digit_cfg
from digit_detectron.data import DigitDatasetMapper, register_digits

from conftest import REPO_ROOT, tiny_model_opts


def test_one_training_step_changes_parameters(digit_root, tmp_path):
    register_digits(digit_root, "step")
    cfg = get_digit_cfg(os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml"), tiny_model_opts(tmp_path))
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(cfg)
    model.train()
    mapper = DigitDatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get("step_train")[:4]]
    assert all(len(b["instances"]) > 0 for b in batch)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with EventStorage(0):
        losses = model(batch)
    assert set(losses) >= {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    optimizer.step()
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.bottom_up") for k in changed)
    assert any(k.startswith("roi_heads.box_predictor") for k in changed)
    assert any(k.startswith("proposal_generator") for k in changed)
