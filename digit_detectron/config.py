"""Config keys of the digit_detectron plugin."""

import os

import yaml
from detectron2.config import CfgNode as CN

from .checkpoint.bundle import BundleError, read_bundle_config, ready_model
from .data.datasets import register_digits
from .modeling.iou_loss import IOU_LOSS_TYPES
from .utils.cli import device_opts
from .utils.device import resolve_device
from .utils.errors import ConfigError


def add_digit_config(cfg):
    """
    Add the digit_detectron keys to a detectron2 config (call before ``merge_from_file``).

    "The reference design" below is the HW2 method this project reimplements and measures against:
    R50-FPN, AdamW, a ramped DIoU term in the classification loss, test-time score 0.7 / NMS 0.3.
    """
    _C = cfg

    # "auto": cuda when torch sees a GPU, else cpu (utils/device.py); "cuda" without a GPU runs on cpu.
    _C.MODEL.DEVICE = "auto"
    # Optimizer: "AdamW" (the reference design's) or "SGD" (detectron2's default).
    _C.SOLVER.OPTIMIZER = "AdamW"
    # AdamW betas.
    _C.SOLVER.BETAS = (0.9, 0.999)
    # AdamW as one fused kernel over all parameters (torch.optim.AdamW(fused=True)): the same update
    # to float rounding, ~3x less time per optimizer step on CPU than the per-tensor loop (34 -> 11 ms
    # of a digits_cpu step, benchmarks/speed.md). Also used by the backbone pre-training. False:
    # PyTorch's default per-tensor loop.
    _C.SOLVER.ADAMW_FUSED = True
    # > 0: SOLVER.MAX_ITER = ceil(EPOCHS * train images / IMS_PER_BATCH); 0: SOLVER.MAX_ITER counts.
    _C.SOLVER.EPOCHS = 0
    # TEST.EVAL_PERIOD and SOLVER.CHECKPOINT_PERIOD may be -1, meaning "once per epoch".

    # Photometric train augmentations (no flips: a mirrored digit is another glyph or none).
    _C.INPUT.COLOR_JITTER = CN()
    # Probability of applying the jitter to an image; 0 disables it.
    _C.INPUT.COLOR_JITTER.PROB = 0.0
    # Maximum relative change of brightness / contrast / saturation (0.2 = factor in [0.8, 1.2]).
    _C.INPUT.COLOR_JITTER.BRIGHTNESS = 0.2
    _C.INPUT.COLOR_JITTER.CONTRAST = 0.2
    _C.INPUT.COLOR_JITTER.SATURATION = 0.2
    _C.INPUT.GAUSSIAN_BLUR = CN()
    # Probability of blurring an image; 0 disables it.
    _C.INPUT.GAUSSIAN_BLUR.PROB = 0.0
    # Odd kernel size in pixels.
    _C.INPUT.GAUSSIAN_BLUR.KERNEL_SIZE = 3
    # Sigma is drawn uniformly from this range.
    _C.INPUT.GAUSSIAN_BLUR.SIGMA = (0.3, 0.8)
    # Width scale (height kept), for condensed and expanded faces: probability, and the range the factor
    # is drawn from (log-uniformly); 0 disables it.
    _C.INPUT.WIDTH_SCALE = CN()
    _C.INPUT.WIDTH_SCALE.PROB = 0.0
    _C.INPUT.WIDTH_SCALE.RANGE = (0.75, 1.33)
    # Small rotation of the whole image (boxes become the rotated boxes' bounding boxes); 0 disables it.
    _C.INPUT.ROTATION = CN()
    _C.INPUT.ROTATION.PROB = 0.0
    # The angle is drawn uniformly from [-ANGLE, ANGLE] degrees.
    _C.INPUT.ROTATION.ANGLE = 5.0
    # Probability of turning an image gray (the same value in every channel).
    _C.INPUT.GRAYSCALE_PROB = 0.0
    # Probability of inverting an image (255 - value): light digits on dark become dark on light.
    _C.INPUT.INVERT_PROB = 0.0
    # Gaussian pixel noise: probability, and the range its sigma (0..255 scale) is drawn from.
    _C.INPUT.NOISE = CN()
    _C.INPUT.NOISE.PROB = 0.0
    _C.INPUT.NOISE.SIGMA = (2.0, 8.0)

    # IoU term of DigitROIHeads' box predictor, ramped in by epoch:
    # lambda = min(LAMBDA_START + LAMBDA_STEP * (epoch - START_EPOCH), LAMBDA_MAX) from START_EPOCH on, else 0.
    _C.MODEL.ROI_BOX_HEAD.IOU_LOSS = CN()
    # "none", "giou", "diou" or "ciou".
    _C.MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE = "none"
    # "cls": loss_cls = (1 - lambda) * CE + lambda * IoU loss (the reference design);
    # "box_reg": loss_box_reg += lambda * IoU loss (the reference code's intent).
    _C.MODEL.ROI_BOX_HEAD.IOU_LOSS.INTO = "cls"
    # First (0-indexed) epoch with a non-zero lambda.
    _C.MODEL.ROI_BOX_HEAD.IOU_LOSS.START_EPOCH = 6
    _C.MODEL.ROI_BOX_HEAD.IOU_LOSS.LAMBDA_START = 0.1
    _C.MODEL.ROI_BOX_HEAD.IOU_LOSS.LAMBDA_STEP = 0.05
    _C.MODEL.ROI_BOX_HEAD.IOU_LOSS.LAMBDA_MAX = 0.5
    # The box pooler's ROIAlign in training passes: "sparse" = the same weights as a sparse matrix
    # product (modeling/roi_align.py; outputs and gradients equal to float rounding, ~7x faster on CPU
    # than torchvision's single-threaded backward), "torchvision" = torchvision's op. Inference always
    # runs torchvision's op.
    _C.MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN = "sparse"

    # Gaussian soft-NMS in place of the ROI heads' per-class NMS at inference (modeling/soft_nms.py):
    # an overlapping box of the same class keeps score * exp(-IoU^2 / SIGMA) instead of being removed.
    _C.MODEL.ROI_HEADS.SOFT_NMS = CN()
    _C.MODEL.ROI_HEADS.SOFT_NMS.ENABLED = False
    _C.MODEL.ROI_HEADS.SOFT_NMS.SIGMA = 0.5
    # At inference the most likely digit of each box scores the box's foreground probability
    # (1 - background) instead of its own (modeling/roi_heads.py, credit_foreground).
    _C.MODEL.ROI_HEADS.FOREGROUND_SCORE = False

    # build_torchvision_fpn_backbone: a torchvision classification network (random init unless
    # WEIGHTS names a torchvision state dict file) as the bottom-up backbone, stages res2..res5.
    _C.MODEL.TORCHVISION_BACKBONE = CN()
    # A torchvision.models builder: mobilenet_v3_large, mobilenet_v3_small, regnet_x_400mf, ...
    _C.MODEL.TORCHVISION_BACKBONE.ARCH = "mobilenet_v3_large"
    _C.MODEL.TORCHVISION_BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    _C.MODEL.TORCHVISION_BACKBONE.WEIGHTS = ""

    _C.DIGITS = CN()
    # Training iterations per epoch; 0: derived from the train set size and SOLVER.IMS_PER_BATCH.
    _C.DIGITS.ITERS_PER_EPOCH = 0
    # More dataset roots in the HW2 layout to register, as "PREFIX:ROOT" strings: "synth:datasets/synth"
    # registers synth_train, synth_valid, synth_test (and synth_valid_instyle / synth_test_ood if present).
    _C.DIGITS.DATASET_ROOTS = []
    # Sampling ratio of each DATASETS.TRAIN entry, e.g. [0.3, 0.7]: the expected share of each dataset in
    # the training batches whatever its size; empty: every image equally often (detectron2's default).
    _C.DIGITS.TRAIN_MIX = []
    # Train batches of images with the same resized height and a similar aspect ratio
    # (data/batching.py): less padding per batch, the same augmentations per image.
    _C.DIGITS.SIZE_GROUPING = CN()
    _C.DIGITS.SIZE_GROUPING.ENABLED = False
    # Width of the aspect-ratio bins in log2(width / height): 0.25 puts 2.0 and 2.3 in one bin.
    _C.DIGITS.SIZE_GROUPING.ASPECT_STEP = 0.25
    # Inference options of DigitPredictor (inference/predictor.py); none changes which boxes are found
    # beyond the stated tolerance (tests/test_speed_options.py).
    _C.DIGITS.INFERENCE = CN()
    # Run the backbone in bfloat16 (autocast; heads and box decoding stay float32): "off", "on", or
    # "auto" = on where the CPU has native bf16 (avx512_bf16 / amx_bf16 in /proc/cpuinfo), else off.
    _C.DIGITS.INFERENCE.BACKBONE_BF16 = "off"
    # Train with the backbone under bfloat16 autocast (weights, optimizer, heads and losses stay float32;
    # the evaluations during training run it too): "off", "on", or "auto" = on where the CPU has native
    # bf16, as DIGITS.INFERENCE.BACKBONE_BF16. Changes the numbers a run computes, not the checkpoint format.
    _C.DIGITS.TRAIN_BF16 = "off"
    # > 0: the ROI poolers' sampling ratio at inference (points per bin side; training keeps
    # MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO); 0: as trained.
    _C.DIGITS.INFERENCE.POOLER_SAMPLING_RATIO = 0
    # Images per forward pass in evaluations (train_net.py --eval-only and TEST.EVAL_PERIOD), batched
    # in order of aspect ratio as DigitPredictor batches files; 1: detectron2's one image at a time in
    # dataset order. Batches pad images to the widest of the batch, which moves scores slightly.
    _C.DIGITS.INFERENCE.EVAL_BATCH_SIZE = 8
    # Test-time augmentation / checkpoint ensemble (inference/tta.py), off by default: run the model at
    # every short side of SCALES (empty: INPUT.MIN_SIZE_TEST only; no flips), and every checkpoint of
    # ENSEMBLE_WEIGHTS beside MODEL.WEIGHTS, then merge per class by MERGE ("wbf": weighted box
    # fusion, "nms") at IoU IOU.
    _C.DIGITS.TTA = CN()
    _C.DIGITS.TTA.ENABLED = False
    _C.DIGITS.TTA.SCALES = []
    _C.DIGITS.TTA.MERGE = "wbf"
    _C.DIGITS.TTA.IOU = 0.55
    _C.DIGITS.TTA.ENSEMBLE_WEIGHTS = []
    # A second look at small numbers (inference/second_look.py and the exported runtime): where the digits
    # read at INPUT.MIN_SIZE_TEST are under MAX_DIGIT_HEIGHT px tall there (their median), or, with EMPTY,
    # where the gate (READER.MIN_TOP_SCORE) let nothing be read, read the image again and take that reading.
    # MODE "resize": the whole image, resized from its own pixels to a short side of MIN_SIZE (EMPTY: when
    # nothing is read). MODE "crop": only the region around the digits read (the ungated reading's, with
    # EMPTY), two digit heights to each side and half of one above and below, resized so that those digits
    # are TARGET_HEIGHT px tall. Inference only (evaluation during training reads once). The ready model
    # uses "crop" (digits under 24 px, EMPTY on): against "resize" at 80 (digits under 24 px) it read 0.5 to
    # 2.85 points more of the demo's out-of-style splits and of the independent rulers, at the same cost
    # (recipe log); set in digits_ready.yaml (so for make model and make demo).
    _C.DIGITS.SECOND_LOOK = CN()
    _C.DIGITS.SECOND_LOOK.ENABLED = False
    _C.DIGITS.SECOND_LOOK.MODE = "resize"
    _C.DIGITS.SECOND_LOOK.MIN_SIZE = 80
    _C.DIGITS.SECOND_LOOK.MAX_DIGIT_HEIGHT = 24.0
    _C.DIGITS.SECOND_LOOK.TARGET_HEIGHT = 32.0
    _C.DIGITS.SECOND_LOOK.EMPTY = False
    # Thresholds of the reference design's test mode, applied by `apply_test_mode` (e.g. `--test-mode` of
    # tools/predict.py); validation uses MODEL.ROI_HEADS.SCORE_THRESH_TEST / NMS_THRESH_TEST.
    _C.DIGITS.TEST_MODE = CN()
    _C.DIGITS.TEST_MODE.SCORE_THRESH = 0.7
    _C.DIGITS.TEST_MODE.NMS_THRESH = 0.3
    # Lowest score written to pred.json: COCO AP rewards keeping low-score boxes.
    _C.DIGITS.PRED_JSON_SCORE_THRESH = 0.05
    # Whole-number reader (digit_detectron.modeling.number_reader).
    _C.DIGITS.READER = CN()
    # Score thresholds tried in order; the first that keeps at least one digit gives the number. One
    # threshold of 0.5: on 2,000 out-of-style images it read 1.5-2.5 points more numbers than the
    # ladder (0.7, 0.5, 0.3) for each of 4 models, and thresholds tuned on 400 or 1,000 other images of
    # the same style did not beat it on the rest (recipe log, run 12).
    _C.DIGITS.READER.SCORE_THRESHS = (0.5,)
    # IoU of the class-agnostic NMS that removes a second class on the same digit.
    _C.DIGITS.READER.NMS_THRESH = 0.3
    # A reading with more digits keeps only the MAX_DIGITS highest-scoring ones.
    _C.DIGITS.READER.MAX_DIGITS = 6
    # Keep only the digits on the most confident digit's line (number_reader.on_number_line): one
    # height, one baseline, no wide gap.
    _C.DIGITS.READER.LINE_FILTER = False
    # Read nothing (-1) unless the most confident detection scores at least this: fewer numbers read on
    # walls without digits. tools/tune_reader.py --digit-free measures it; 0 reads whatever passes.
    _C.DIGITS.READER.MIN_TOP_SCORE = 0.0
    # Warm start for from-scratch training (digit_detectron.engine.pretrain): when MODEL.WEIGHTS is empty,
    # pre-train the bottom-up backbone as a digit classifier on crops of the train images, cache it
    # (keyed by backbone config, annotations and these settings) and start the detector from it.
    _C.DIGITS.PRETRAIN = CN()
    _C.DIGITS.PRETRAIN.ENABLED = False
    # Classifier steps, batch size and peak learning rate (AdamW, one-cycle).
    _C.DIGITS.PRETRAIN.STEPS = 300
    _C.DIGITS.PRETRAIN.BATCH_SIZE = 128
    _C.DIGITS.PRETRAIN.LR = 0.002
    # Side of the square crops in pixels (a digit fills ~75% of the height).
    _C.DIGITS.PRETRAIN.CROP_SIZE = 32
    # Use at most this many train images for crops; 0: all.
    _C.DIGITS.PRETRAIN.MAX_IMAGES = 0
    # Crop augmentation: "basic" (inversion, contrast, brightness) or "shapes" (also width, slant,
    # stroke weight, blur, colour and noise: engine/pretrain.py, _augment_shapes).
    _C.DIGITS.PRETRAIN.AUGMENT = "basic"
    # Where pre-trained backbones are cached for later runs.
    _C.DIGITS.PRETRAIN.CACHE_DIR = "output/cache"
    # Instead of the warm start, start the bottom-up backbone from a trained model's (when MODEL.WEIGHTS
    # is empty): "" (the warm start above, if ENABLED), "ready" (the package's ready model,
    # docs/model_card.md) or the path of a bundle or checkpoint whose backbone has this config's layers
    # and shapes. The FPN and the heads start fresh.
    _C.DIGITS.PRETRAIN.FROM = ""
    # Metric the best-checkpoint hook maximises ("" disables the hook).
    _C.DIGITS.BEST_METRIC = "bbox/AP"
    # Draw tools/plot_metrics.py's PNGs into OUTPUT_DIR at the end of training.
    _C.DIGITS.PLOT_AT_END = True
    # Write the evaluation report (evaluation/report.py) of the best checkpoint at the end of training and
    # of the model in tools/train_net.py --eval-only, into OUTPUT_DIR/report/<dataset>/.
    _C.DIGITS.REPORT = True


def apply_test_mode(cfg):
    """Use the test-mode score / NMS thresholds for the ROI heads (cfg must not be frozen)."""
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = cfg.DIGITS.TEST_MODE.SCORE_THRESH
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = cfg.DIGITS.TEST_MODE.NMS_THRESH
    return cfg


# The configs shipped inside the package (the repository's configs/ points here).
PACKAGE_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def resolve_config_file(path):
    """
    ``path`` when it is a file; else the shipped config of that name (``digits_cpu.yaml`` or
    ``configs/digits_cpu.yaml`` from any directory, like detectron2's model-zoo names); else ``path``
    (whose absence the caller reports).
    """
    if os.path.isfile(path):
        return path
    name = path[len("configs/") :] if path.startswith("configs/") else path
    shipped = os.path.join(PACKAGE_CONFIGS, name)
    return shipped if not os.path.isabs(name) and os.path.isfile(shipped) else path


def shipped_configs():
    """Names of the configs shipped with the package."""
    return sorted(f for f in os.listdir(PACKAGE_CONFIGS) if f.endswith(".yaml"))


def get_digit_cfg(config_file=None, opts=(), embedded=None):
    """
    detectron2's default config with the digit keys, merged with ``embedded`` (``(model file, YAML
    text)`` of a bundle's config, see ``get_model_cfg``), then ``config_file`` (a path, or a list of paths
    merged in order, e.g. a model config then tools/tune_reader.py's thresholds; a shipped config may
    be named alone, ``resolve_config_file``), then ``opts``.
    A missing or malformed file, an unknown key or a bad value is a ConfigError naming the file or opts.
    """
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_digit_config(cfg)
    if embedded is not None:
        source, text = embedded
        try:
            cfg.merge_from_other_cfg(cfg.load_cfg(text))
        except (AssertionError, KeyError, ValueError, TypeError, yaml.YAMLError) as e:
            raise ConfigError(f"{source}: embedded config: {_config_problem(e)}") from e
    for path in [config_file] if isinstance(config_file, str) else (config_file or []):
        if not path:
            continue
        path = resolve_config_file(path)
        if not os.path.isfile(path):
            raise ConfigError(
                f"{path}: config file not found (nor a shipped config of that name: {', '.join(shipped_configs())})"
            )
        try:
            cfg.merge_from_file(path)
        except (AssertionError, KeyError, ValueError, TypeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: {_config_problem(e)}") from e
    try:
        cfg.merge_from_list(list(opts))
    except (AssertionError, KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"command-line KEY VALUE opts {list(opts)}: {_config_problem(e)} (options go first)") from e
    try:
        cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cfg.MODEL.WEIGHTS = resolve_weights(cfg.MODEL.WEIGHTS)
    validate_config(cfg)
    register_config_datasets(cfg)
    return cfg


READY_WEIGHTS = "ready"  # MODEL.WEIGHTS / --weights: the package's ready model (docs/model_card.md)


def resolve_weights(weights):
    """
    The model file that MODEL.WEIGHTS (or --weights) names: ``READY_WEIGHTS`` ("ready") is the package's
    ready model, to evaluate it or to train from it (every layer; configs/digits_demo.yaml does);
    anything else is itself. A ConfigError where "ready" is asked for and the package has none.
    """
    if weights != READY_WEIGHTS:
        return weights
    try:
        return ready_model()
    except BundleError as e:
        raise ConfigError(f"MODEL.WEIGHTS {READY_WEIGHTS!r}: {e}") from None


def option_value(opts, key):
    """The value given to ``key`` in a KEY VALUE list (the last one), or None."""
    opts = list(opts)
    values = [opts[i + 1] for i in range(0, len(opts) - 1, 2) if opts[i] == key]
    return values[-1] if values else None


def get_model_cfg(config_file=None, opts=(), weights=None):
    """
    The config of a trained model, for the tools that run one: the config embedded in the bundle
    ``weights`` (or the MODEL.WEIGHTS of ``opts``), then ``config_file`` over it, then ``opts``, with
    MODEL.WEIGHTS set to the bundle. A plain checkpoint (no embedded config) needs ``config_file``.
    """
    opts = list(opts)
    if weights:
        opts += ["MODEL.WEIGHTS", weights]
    weights = resolve_weights(option_value(opts, "MODEL.WEIGHTS"))  # get_digit_cfg resolves the opts' own
    files = [config_file] if isinstance(config_file, str) else [f for f in (config_file or []) if f]
    if not weights and not files:
        raise ConfigError("no model: pass --weights MODEL.pth (a bundle written by training) or --config-file")
    # With a config file, a missing weights file is the checkpointer's to report (after the inputs are checked).
    readable = weights and (not files or os.path.isfile(weights))
    embedded = read_bundle_config(weights) if readable else None
    if embedded is None and not files:
        raise ConfigError(
            f"{weights}: no config embedded in this checkpoint (a plain detectron2 checkpoint, or one "
            "written before bundles): pass the config it was trained with, --config-file FILE"
        )
    return get_digit_cfg(files, opts, embedded=(weights, embedded) if embedded is not None else None)


def model_config(args, extra_opts=()):
    """
    The config of the model that a tool's parsed ``args`` name: ``--weights`` / MODEL.WEIGHTS,
    ``--config-file``, the KEY VALUE ``opts`` and ``--device`` (``utils.cli.add_model_flags``).
    """
    return get_model_cfg(args.config_file, [*args.opts, *extra_opts, *device_opts(args)], weights=args.weights)


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate_config(cfg):
    """
    Check the plugin's values and the detectron2 values it relies on: ranges, choices, positive batch
    sizes. The first bad value is a ConfigError naming the key, e.g.
    ``DIGITS.PRED_JSON_SCORE_THRESH: 5.0 is outside [0, 1]``.
    """

    def number(key, lo=None, hi=None, integer=False, lo_open=False):
        value = _get(cfg, key)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
                raise ConfigError(f"{key}: {value!r} is not {'a whole number' if integer else 'a number'}")
            if v != v or (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
                bounds = (
                    f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                )
                raise ConfigError(f"{key}: {value!r} is outside {bounds}")

    def choice(key, options):
        if _get(cfg, key) not in options:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, options))}, got {_get(cfg, key)!r}")

    for key in (
        "DIGITS.PRED_JSON_SCORE_THRESH", "DIGITS.READER.SCORE_THRESHS", "DIGITS.READER.NMS_THRESH",
        "DIGITS.TEST_MODE.SCORE_THRESH", "DIGITS.TEST_MODE.NMS_THRESH", "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "MODEL.ROI_HEADS.NMS_THRESH_TEST", "INPUT.COLOR_JITTER.PROB", "INPUT.GAUSSIAN_BLUR.PROB",
        "INPUT.ROTATION.PROB", "INPUT.GRAYSCALE_PROB", "INPUT.INVERT_PROB", "INPUT.NOISE.PROB",
        "INPUT.WIDTH_SCALE.PROB",
    ):  # fmt: skip
        number(key, 0, 1)
    if not cfg.DIGITS.READER.SCORE_THRESHS:
        raise ConfigError("DIGITS.READER.SCORE_THRESHS: needs at least one threshold")
    for key in (
        "SOLVER.IMS_PER_BATCH",
        "DIGITS.READER.MAX_DIGITS",
        "DIGITS.PRETRAIN.STEPS",
        "DIGITS.PRETRAIN.BATCH_SIZE",
        "DIGITS.INFERENCE.EVAL_BATCH_SIZE",
    ):
        number(key, 1, integer=True)
    for key in ("SOLVER.EPOCHS", "DIGITS.ITERS_PER_EPOCH", "DATALOADER.NUM_WORKERS", "SOLVER.MAX_ITER"):
        number(key, 0, integer=True)
    if cfg.SOLVER.EPOCHS == 0 and cfg.SOLVER.MAX_ITER < 1:
        raise ConfigError("SOLVER.MAX_ITER: must be at least 1 when SOLVER.EPOCHS is 0")
    number("SOLVER.BASE_LR", 0, lo_open=True)
    number("DIGITS.PRETRAIN.LR", 0, lo_open=True)
    number("INPUT.ROTATION.ANGLE", 0, 90)
    number("INPUT.NOISE.SIGMA", 0)
    scale = cfg.INPUT.WIDTH_SCALE.RANGE
    if len(scale) != 2 or not 0 < float(scale[0]) <= float(scale[1]):
        raise ConfigError(f"INPUT.WIDTH_SCALE.RANGE must be (lo, hi) with 0 < lo <= hi, got {tuple(scale)}")
    number("DIGITS.TRAIN_MIX", 0, lo_open=True)
    choice("SOLVER.OPTIMIZER", ("AdamW", "SGD"))
    choice("MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", IOU_LOSS_TYPES)
    choice("MODEL.ROI_BOX_HEAD.IOU_LOSS.INTO", ("cls", "box_reg"))
    choice("MODEL.ROI_BOX_HEAD.TRAIN_ROI_ALIGN", ("sparse", "torchvision"))
    choice("INPUT.FORMAT", ("BGR", "RGB"))
    choice("DIGITS.INFERENCE.BACKBONE_BF16", ("off", "on", "auto"))
    choice("DIGITS.TRAIN_BF16", ("off", "on", "auto"))
    number("DIGITS.SIZE_GROUPING.ASPECT_STEP", 0, lo_open=True)
    number("DIGITS.INFERENCE.POOLER_SAMPLING_RATIO", 0, integer=True)
    number("MODEL.ROI_HEADS.SOFT_NMS.SIGMA", 0, lo_open=True)
    number("DIGITS.TTA.IOU", 0, 1)
    number("DIGITS.SECOND_LOOK.MIN_SIZE", 1, integer=True)
    if cfg.DIGITS.SECOND_LOOK.ENABLED and cfg.DIGITS.TTA.ENABLED:
        raise ConfigError(
            "DIGITS.SECOND_LOOK.ENABLED: not with DIGITS.TTA.ENABLED (test-time scales resize every look)"
        )
    number("DIGITS.SECOND_LOOK.MAX_DIGIT_HEIGHT", 0, lo_open=True)
    number("DIGITS.SECOND_LOOK.TARGET_HEIGHT", 0, lo_open=True)
    choice("DIGITS.SECOND_LOOK.MODE", ("resize", "crop"))
    number("DIGITS.TTA.SCALES", 1, integer=True)
    choice("DIGITS.TTA.MERGE", ("wbf", "nms"))
    choice("DIGITS.PRETRAIN.AUGMENT", ("basic", "shapes"))
    return cfg


def register_config_datasets(cfg):
    """Register the roots of DIGITS.DATASET_ROOTS ("PREFIX:ROOT"); a malformed entry is a ConfigError."""
    for entry in cfg.DIGITS.DATASET_ROOTS:
        prefix, sep, root = str(entry).partition(":")
        if not sep or not prefix or not root:
            raise ConfigError(f"DIGITS.DATASET_ROOTS: expected 'PREFIX:ROOT' entries, got {entry!r}")
        register_digits(root, prefix)


def _config_problem(error):
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__  # one line (YAML errors span several)
