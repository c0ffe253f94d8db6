"""tools/benchmark.py, benchmarks/torchvision_baseline.py and benchmarks/compare_torchvision.py on tiny images."""

import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from digit_detectron import get_digit_cfg, register_digits
from digit_detectron.analysis.benchmark import benchmark, padding_fraction, select_images, time_steps
from digit_detectron.data.image_io import ImageReadError

from conftest import REPO_ROOT, tiny_model_opts, write_digit_dataset

CONFIG = os.path.join(REPO_ROOT, "configs", "digits_cpu.yaml")
BENCHMARK = os.path.join(REPO_ROOT, "tools", "benchmark.py")
BASELINE = os.path.join(REPO_ROOT, "benchmarks", "torchvision_baseline.py")
COMPARE = os.path.join(REPO_ROOT, "benchmarks", "compare_torchvision.py")
MACHINE_FIELDS = {"cpu", "cores", "torch_threads", "torch", "python"}


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on 2 shared cores, 2 OpenMP threads are up to ~20x slower (benchmarks/speed.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_digit_dataset(tmp_path_factory.mktemp("bench") / "digits", counts=(6, 4, 3))


@pytest.fixture(scope="module")
def baseline():
    return load_module(BASELINE, "torchvision_baseline")


def tiny_cfg(tmp_path):
    return get_digit_cfg(CONFIG, tiny_model_opts(tmp_path) + ["MODEL.WEIGHTS", ""])


def check_timing(result, batch_size, timed):
    assert result["batch_size"] == batch_size and result["iterations_timed"] == timed
    assert result["s_per_iter"] > 0 and result["cpu_s_per_iter"] > 0
    assert result["images_per_s"] == pytest.approx(batch_size / result["s_per_iter"])
    assert 0.0 <= result["padding_fraction"] < 1.0
    assert result["peak_rss_mb"] > 100  # a detector is loaded
    assert MACHINE_FIELDS <= set(result) and result["torch"] == torch.__version__


@pytest.mark.slow
def test_benchmark_train_and_inference(root, tmp_path):
    register_digits(root, "benchtest")
    cfg = tiny_cfg(tmp_path)
    train = benchmark(cfg, "train", "benchtest_train", num_images=4, batch_size=2, warmup=1)
    check_timing(train, batch_size=2, timed=2)
    assert train["task"] == "train" and train["dataset"] == "benchtest_train"
    assert train["data_s_per_image"] > 0 and train["decode_s_per_image"] > 0
    # Loading in the same process before each step can only lower the throughput.
    assert train["images_per_s_with_data"] < train["images_per_s"]
    # The seed fixes the random train scales, hence the padding.
    again = benchmark(cfg, "train", "benchtest_train", num_images=4, batch_size=2, warmup=1, seed=train["seed"])
    assert again["padding_fraction"] == train["padding_fraction"]

    inference = benchmark(cfg, "inference", "benchtest_valid", num_images=2, batch_size=2, warmup=0, order="aspect")
    check_timing(inference, batch_size=2, timed=1)
    assert inference["order"] == "aspect"


def test_predict_task_runs_the_predictor_on_files_of_an_unlabelled_split(root, tmp_path):
    register_digits(root, "benchtest")
    # The test split has no json: the aspect order reads each file's size from its header.
    result = benchmark(
        tiny_cfg(tmp_path), "predict", "benchtest_test", num_images=3, batch_size=3, warmup=0, order="aspect"
    )
    check_timing(result, batch_size=3, timed=1)
    assert "data_s_per_image" not in result  # decoding is inside the timed step


def test_select_images_cycles_skips_unlabelled_and_sorts_by_aspect(tmp_path):
    files = []
    for name, (h, w) in {"wide": (10, 40), "square": (20, 20), "tall": (40, 10)}.items():
        files.append(str(tmp_path / f"{name}.png"))
        cv2.imwrite(files[-1], np.zeros((h, w, 3), np.uint8))
    dicts = [{"file_name": f, "annotations": [{}] if i != 1 else []} for i, f in enumerate(files)]
    assert [d["file_name"] for d in select_images(dicts, 5, is_train=False)] == files + files[:2]
    assert [d["file_name"] for d in select_images(dicts, 3, is_train=True)] == [files[0], files[2], files[0]]
    assert [d["file_name"] for d in select_images(dicts, 3, is_train=False, order="aspect")] == files[::-1]
    with pytest.raises(ValueError, match="empty_set has no usable image with boxes"):
        select_images(dicts[1:2], 3, is_train=True, dataset_name="empty_set")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="broken.png: not an image file"):
        select_images([{"file_name": str(tmp_path / "broken.png")}], 2, is_train=False, order="aspect")


def test_padding_fraction_and_time_steps():
    images = [torch.zeros(3, 32, 32), torch.zeros(3, 32, 64)]
    assert padding_fraction([images], 32) == pytest.approx(1 - 3072 / 4096)
    assert padding_fraction([images[:1], images[1:]], 32) == 0.0
    assert padding_fraction([[torch.zeros(3, 33, 64)]], 32) == pytest.approx(1 - 33 / 64)

    seen = []
    wall, cpu = time_steps(seen.append, [1, 2, 3], warmup=1, progress=False)
    assert seen == [1, 2, 3] and len(wall) == len(cpu) == 2
    with pytest.raises(ValueError, match="2 batches leave none to time after 2 warm-up"):
        time_steps(seen.append, [1, 2], warmup=2, progress=False)


def run_tool(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT)


@pytest.mark.slow
def test_benchmark_tool_prints_table_and_writes_json(root, tmp_path):
    out = tmp_path / "bench" / "benchmark_inference.json"
    proc = run_tool(
        BENCHMARK,
        "--config-file",
        CONFIG,
        "--task",
        "inference",
        "--dataset-root",
        root,
        "--images",
        "2",
        "--batch-size",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--output",
        str(out.parent),
        *tiny_model_opts(tmp_path),
        "MODEL.WEIGHTS",
        "",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Wrote {out}" in proc.stdout and "| images_per_s" in proc.stdout
    result = json.loads(out.read_text())
    check_timing(result, batch_size=2, timed=1)
    assert result["dataset"] == "digits_valid" and result["torch_threads"] == 1
    assert result["config"] == CONFIG and result["opts"][-2:] == ["MODEL.WEIGHTS", ""]


@pytest.mark.slow
def test_benchmark_tool_missing_dataset_is_a_clear_error(tmp_path):
    proc = run_tool(
        BENCHMARK, "--config-file", CONFIG, "--dataset-root", str(tmp_path / "nowhere"), "MODEL.WEIGHTS", ""
    )
    assert proc.returncode != 0
    assert "error: digit dataset split 'train' not found under" in proc.stderr and "nowhere" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reference_model_is_the_reference_setup(baseline):
    model = baseline.build_reference_model()
    assert model.transform.min_size == (800,) and model.transform.max_size == 1333
    assert model.rpn.anchor_generator.sizes == ((4,), (8,), (12,), (24,), (48,))
    assert model.rpn.anchor_generator.num_anchors_per_location() == [4] * 5
    assert model.rpn.head.cls_logits.out_channels == 4 and model.rpn.head.bbox_pred.out_channels == 16
    assert model.roi_heads.box_predictor.cls_score.out_features == 11
    assert model.roi_heads.fg_bg_sampler.positive_fraction == 0.25
    assert model.roi_heads.score_thresh == 0.5 and model.roi_heads.nms_thresh == 0.5
    # Random init, nothing frozen: the stem trains, with BatchNorm.
    assert model.backbone.body.conv1.weight.requires_grad
    assert isinstance(model.backbone.body.bn1, torch.nn.BatchNorm2d)


def test_iou_term(baseline):
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])}
    half = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 5.0]])}
    assert baseline.iou_term([half], [target]).item() == pytest.approx((0.5 + 1.0) / 2)
    assert baseline.iou_term([{"boxes": torch.zeros(0, 4)}], [target]).item() == 1.0


@pytest.mark.slow
def test_reference_train_step_adds_an_eval_forward(root, baseline):
    torch.manual_seed(0)
    model = baseline.build_reference_model(min_size=32, max_size=64)
    # Fewer proposals and sampled ROIs than the reference, only to keep the test fast.
    model.rpn._pre_nms_top_n = model.rpn._post_nms_top_n = {"training": 64, "testing": 64}
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 32
    modes = []
    model.roi_heads.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    register_digits(root, "benchtest")
    from detectron2.data import DatasetCatalog

    samples = [baseline.load_sample(d) for d in DatasetCatalog.get("benchtest_train")[:2]]
    image, target = samples[0]
    assert image.dtype == torch.float32 and 0.0 <= image.min() and image.max() <= 1.0
    assert target["labels"].min() >= 1 and target["labels"].max() <= 10 and target["boxes"].shape[1] == 4
    before = model.rpn.head.cls_logits.weight.detach().clone()
    baseline.make_train_step(model, optimizer)(tuple(map(list, zip(*samples))))
    assert modes == [True, False]  # the training forward, then the eval-mode one
    assert model.training
    assert not torch.equal(before, model.rpn.head.cls_logits.weight)


@pytest.mark.slow
def test_compare_runs_both_sides_and_prints_the_ratio(root, tmp_path):
    out = tmp_path / "cmp"
    proc = run_tool(
        COMPARE,
        "--dataset-root",
        root,
        "--config-file",
        CONFIG,
        "--output",
        str(out),
        "--tasks",
        "inference",
        "--images",
        "2",
        "--warmup",
        "0",
        "--inference-batch-size",
        "2",
        "--baseline-images",
        "1",
        "--baseline-batch-size",
        "1",
        "--baseline-warmup",
        "0",
        "--baseline-min-size",
        "32",
        "--baseline-max-size",
        "64",
        "--threads",
        "1",
        *tiny_model_opts(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads((out / "benchmark_inference.json").read_text())
    ref = json.loads((out / "torchvision_inference.json").read_text())
    summary = json.loads((out / "comparison.json").read_text())
    ratio = ours["images_per_s"] / ref["images_per_s"]
    assert summary["ratios"] == {"inference": pytest.approx(ratio)}
    assert f"inference: digit_detectron processes {ratio:.1f}x the images per second" in proc.stdout
    assert ref["min_size"] == 32 and ref["input_size_median"][0] <= 64
    assert ours["torch_threads"] == ref["torch_threads"] == 1
    assert [r["pipeline"] for r in summary["rows"]] == ["digit_detectron", "torchvision reference"]


def _recall_by_size():
    return load_module(os.path.join(REPO_ROOT, "benchmarks", "recall_by_size.py"), "recall_by_size")


def test_recall_bands_count_each_digit_once_in_its_height_band():
    rows = np.array([[8, 0.3, 0], [11.9, 0.6, 1], [12, 0.75, 1], [30, 0.9, 0], [40, 0.8, 1], [100, 0.55, 1]])
    table = _recall_by_size().bands_table(rows)
    assert [b["height_px"] for b in table] == ["0-12", "12-16", "24-32", ">=32"]
    assert [b["digits"] for b in table] == [2, 1, 1, 2]
    assert table[0] == {
        "height_px": "0-12",
        "digits": 2,
        "proposal_iou_0.5": 50.0,
        "proposal_iou_0.7": 0.0,
        "detected": 50.0,
    }
    assert table[3]["proposal_iou_0.7"] == 50.0 and table[3]["detected"] == 100.0


@pytest.mark.slow
def test_recall_by_size_on_the_ready_model_and_real_images(root, tmp_path):
    """The ready model on drawn digits (48 px tall in 64-px-high images): every digit counted once, large ones found."""
    root = type(tmp_path)(root)
    proc = run_tool(
        "benchmarks/recall_by_size.py", "--weights", "ready", "--json", str(root / "valid.json"),
        "--images", str(root / "valid"), "--output", str(tmp_path / "recall"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "recall" / "recall_by_size.json").read_text())
    labelled = json.loads((root / "valid.json").read_text())["annotations"]
    assert sum(b["digits"] for b in result["bands"]) == len(labelled)
    for band in result["bands"]:
        assert 0 <= band["detected"] <= 100 and band["proposal_iou_0.7"] <= band["proposal_iou_0.5"]
    assert result["bands"][-1]["height_px"] == ">=32" and result["bands"][-1]["proposal_iou_0.5"] >= 50
