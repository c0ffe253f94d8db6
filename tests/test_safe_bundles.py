"""Model files load with torch.load(weights_only=True): a bundle loads, a pickle with a payload is refused."""

import os

import pytest
import torch

from digit_detectron import DigitReader, get_digit_cfg
from digit_detectron.checkpoint import DigitCheckpointer
from digit_detectron.checkpoint.bundle import BundleError, read_bundle_config, write_bundle
from digit_detectron.checkpoint.digit_checkpointer import CheckpointError
from digit_detectron.config import get_model_cfg

from conftest import REPO_ROOT, save_random_checkpoint, tiny_model_opts

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")


class Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def bundle(tmp_path):
    weights = save_random_checkpoint(tmp_path, CONFIG)
    return write_bundle(str(tmp_path / "bundle.pth"), weights, get_digit_cfg(CONFIG, tiny_model_opts(tmp_path)))


def test_a_bundle_is_tensors_and_plain_values(bundle):
    data = torch.load(bundle, map_location="cpu", weights_only=True)
    assert isinstance(data["digit_detectron"]["config"], str)  # the config rides as YAML text
    assert "READER" in read_bundle_config(bundle)
    assert DigitReader(bundle, device="cpu").number_reader.score_threshs == (0.6,)


def test_a_pickle_with_a_payload_is_refused_unless_trusted(bundle, tmp_path, monkeypatch):
    marker = tmp_path / "payload_ran"
    data = torch.load(bundle, map_location="cpu", weights_only=True)
    data["extra"] = Payload(marker)
    evil = tmp_path / "evil.pth"
    torch.save(data, evil)
    monkeypatch.delenv("DIGITS_TRUST_PICKLE", raising=False)
    for load in (read_bundle_config, lambda p: DigitReader(p, device="cpu"), lambda p: get_model_cfg(None, (), p)):
        with pytest.raises(BundleError, match=f"{evil}: holds pickled Python objects .* DIGITS_TRUST_PICKLE=1"):
            load(str(evil))
    model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="refused"):
        DigitCheckpointer(model).load(str(evil))
    assert not marker.exists()  # nothing ran
    monkeypatch.setenv("DIGITS_TRUST_PICKLE", "1")  # the documented opt-in for a trusted old file
    assert "READER" in read_bundle_config(str(evil))
    assert marker.exists()


def test_a_slim_bundle_is_float16_weights_and_config_and_reads_like_the_original(bundle, tmp_path):
    from digit_detectron.checkpoint.bundle import write_slim_bundle

    full = torch.load(bundle, map_location="cpu", weights_only=True)
    full["optimizer"] = {"state": {}, "param_groups": []}  # what a training checkpoint also carries
    full["iteration"] = 99
    torch.save(full, tmp_path / "training.pth")
    slim = write_slim_bundle(str(tmp_path / "training.pth"), str(tmp_path / "slim.pth"))
    data = torch.load(slim, map_location="cpu", weights_only=True)
    assert set(data) == {"model", "digit_detectron"}
    floats = [v for v in data["model"].values() if torch.is_floating_point(v)]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert os.path.getsize(slim) < 0.6 * os.path.getsize(bundle)
    # The weights load back into the float32 model, each within float16's rounding of the original.
    a = DigitReader(bundle, device="cpu").predictor.model.state_dict()
    b = DigitReader(slim, device="cpu").predictor.model.state_dict()
    for key, value in a.items():
        assert b[key].dtype == value.dtype
        if torch.is_floating_point(value):
            assert torch.allclose(b[key], value, rtol=1e-3, atol=1e-4), key
    with pytest.raises(BundleError, match="not a bundle"):
        plain = tmp_path / "plain.pth"
        torch.save({"model": full["model"]}, plain)
        write_slim_bundle(str(plain), str(tmp_path / "x.pth"))
    # make_model --from BUNDLE KEY VALUE: another config entry (test-time settings) over the same weights
    from digit_detectron.checkpoint.bundle import bundle_entry, read_bundle_config
    from digit_detectron.config import get_digit_cfg

    cfg = get_digit_cfg(None, ["MODEL.RPN.POST_NMS_TOPK_TEST", "7"], embedded=(bundle, read_bundle_config(bundle)))
    other = write_slim_bundle(str(tmp_path / "training.pth"), str(tmp_path / "other.pth"), entry=bundle_entry(cfg))
    assert DigitReader(other, device="cpu").cfg.MODEL.RPN.POST_NMS_TOPK_TEST == 7
    assert DigitReader(slim, device="cpu").cfg.MODEL.RPN.POST_NMS_TOPK_TEST != 7
    assert torch.equal(torch.load(other, weights_only=True)["model"][key], data["model"][key])


def test_without_a_shipped_ready_model_the_reader_says_how_to_get_one(monkeypatch, tmp_path):
    from digit_detectron.checkpoint import bundle

    monkeypatch.setattr(bundle, "READY_MODEL", str(tmp_path / "weights" / "digits_ready.pth"))
    monkeypatch.setattr(bundle, "READY_MODEL_ONNX", str(tmp_path / "weights" / "digits_ready.onnx"))
    for engine in ("auto", "torch", "onnx"):
        with pytest.raises(BundleError, match="ships no ready model; pass a model .*make model"):
            DigitReader(device="cpu", engine=engine)
