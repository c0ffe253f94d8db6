"""DigitTrainer: detectron2's DefaultTrainer with the digit data, AdamW, evaluators and hooks."""

import logging
import os
import weakref

import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import DatasetEvaluators
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter
from detectron2.utils.logger import setup_logger

from ..checkpoint import DigitCheckpointer
from ..data import DigitDatasetMapper
from ..data.batching import build_batched_test_loader, build_size_grouped_train_loader
from ..data.sampling import mixed_train_data
from ..evaluation import NumberAccuracyEvaluator
from ..evaluation.coco_recall import COCOEvaluatorWithRecall
from ..evaluation.inference_speed import InferenceSpeedEvaluator
from ..evaluation.report import ReportEvaluator
from ..modeling.number_reader import NumberReader
from ..modeling.speed import bf16_backbone, use_backbone_bf16
from ..utils.threads import data_loader_workers
from .hooks import LATER_WORK_ENV, EpochHook, PlotMetricsHook, RemainingTimeHook, parse_later_work

logger = logging.getLogger("digit_detectron")


def apply_training_options(model, cfg):
    """
    Apply DIGITS.TRAIN_BF16 to a model about to be trained: the backbone under bfloat16 autocast
    (``bf16_backbone``; gradients flow through it), on where "on", or "auto" on a CPU with native
    bf16. Returns the options in effect (a dict, logged).
    """
    device = cfg.MODEL.DEVICE
    options = {"train_bf16": use_backbone_bf16(cfg.DIGITS.TRAIN_BF16, device)}
    if options["train_bf16"] and not getattr(model.backbone, "runs_bf16", False):
        bf16_backbone(model.backbone, "cuda" if str(device).startswith("cuda") else "cpu")
    if cfg.DIGITS.TRAIN_BF16 != "off":
        logger.info(f"training options: {options} (DIGITS.TRAIN_BF16={cfg.DIGITS.TRAIN_BF16})")
    return options


class DigitTrainer(DefaultTrainer):
    """
    DefaultTrainer with: AdamW or SGD (SOLVER.OPTIMIZER); the digit mapper (no flips, colour jitter,
    blur); COCOEvaluator (+ AR) + NumberAccuracyEvaluator + images/s; epoch, best-checkpoint and plot hooks; DDP that
    also runs on CPU (gloo); a clear error for a non-finite loss.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with one change: it offers no hook between build_model and its
        # create_ddp_model(device_ids=[local_rank]), which DDP rejects for a CPU model; here device_ids=None on CPU.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        apply_training_options(model, cfg)  # DIGITS.TRAIN_BF16; not in build_model, which --eval-only uses
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        ddp_kwargs = {"broadcast_buffers": False}
        if cfg.MODEL.DEVICE == "cpu":
            ddp_kwargs["device_ids"] = None
        model = create_ddp_model(model, **ddp_kwargs)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = self.build_checkpointer(cfg, model, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_checkpointer(cls, cfg, model, strict=False, **checkpointables):
        """The checkpointer: lenient for training and fine-tuning, ``strict`` for evaluation."""
        return DigitCheckpointer(model, cfg.OUTPUT_DIR, strict=strict, config=cfg, **checkpointables)

    @classmethod
    def build_optimizer(cls, cfg, model):
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        name = cfg.SOLVER.OPTIMIZER
        if name == "AdamW":
            opt_cls = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
            return opt_cls(
                params,
                lr=cfg.SOLVER.BASE_LR,
                betas=tuple(cfg.SOLVER.BETAS),
                weight_decay=cfg.SOLVER.WEIGHT_DECAY,
                fused=bool(cfg.SOLVER.ADAMW_FUSED),
            )
        if name == "SGD":
            return DefaultTrainer.build_optimizer(cfg, model)
        raise ValueError(f"SOLVER.OPTIMIZER must be 'AdamW' or 'SGD', got {name!r}")

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = DigitDatasetMapper(cfg, is_train=True)
        dataset = sampler = None
        if cfg.DIGITS.TRAIN_MIX:
            dataset, sampler = mixed_train_data(cfg)
        workers = data_loader_workers(cfg.DATALOADER.NUM_WORKERS)
        if cfg.DIGITS.SIZE_GROUPING.ENABLED:
            return build_size_grouped_train_loader(cfg, mapper, dataset, sampler, num_workers=workers)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler, num_workers=workers)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = DigitDatasetMapper(cfg, is_train=False)
        workers = data_loader_workers(cfg.DATALOADER.NUM_WORKERS)
        batch_size = cfg.DIGITS.INFERENCE.EVAL_BATCH_SIZE
        if batch_size == 1:  # detectron2's loader: one image per forward pass, in dataset order
            return build_detection_test_loader(cfg, dataset_name, mapper=mapper, num_workers=workers)
        return build_batched_test_loader(DatasetCatalog.get(dataset_name), mapper, batch_size, workers)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None, report_dir=None):
        """COCO AP (+ AR), number accuracy and images/s; with ``report_dir``, also the report of the
        dataset into ``report_dir/<dataset>/`` (``ReportEvaluator``), from the same inference pass."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluators = [NumberAccuracyEvaluator(dataset_name, cfg), InferenceSpeedEvaluator()]
        if any(record.get("annotations") for record in DatasetCatalog.get(dataset_name)):
            # COCO AP needs boxes to find: a digit-free split (e.g. digits_free) has number accuracy only,
            # the share of its images read as "no number" (-1).
            evaluators.insert(
                0,
                COCOEvaluatorWithRecall(
                    dataset_name, tasks=("bbox",), output_dir=output_folder, allow_cached_coco=False
                ),
            )
        if report_dir:
            reader = NumberReader.from_config(cfg)
            evaluators.append(ReportEvaluator(dataset_name, reader, os.path.join(report_dir, dataset_name)))
        return DatasetEvaluators(evaluators)

    @classmethod
    def test_with_report(cls, cfg, model, report_dir=None):
        """``test`` on cfg.DATASETS.TEST, writing each labelled dataset's report into ``report_dir`` when given."""
        evaluators = [cls.build_evaluator(cfg, name, report_dir=report_dir) for name in cfg.DATASETS.TEST]
        return cls.test(cfg, model, evaluators)

    def build_hooks(self):
        cfg = self.cfg
        hook_list = [h for h in super().build_hooks() if not isinstance(h, hooks.PeriodicWriter)]
        if comm.is_main_process():
            # metrics.json and tensorboard every iteration (so every evaluation and every step of
            # the loss ramp is kept); the console every 20.
            writers = self.build_writers()
            hook_list.append(hooks.PeriodicWriter([w for w in writers if not isinstance(w, CommonMetricPrinter)], 1))
            hook_list.append(hooks.PeriodicWriter([w for w in writers if isinstance(w, CommonMetricPrinter)], 20))
        hook_list.insert(0, EpochHook(cfg.DIGITS.ITERS_PER_EPOCH or cfg.SOLVER.MAX_ITER))
        if cfg.DIGITS.BEST_METRIC and cfg.TEST.EVAL_PERIOD > 0 and comm.is_main_process():
            # After EvalHook, whose results it reads; before the writers.
            index = next(i for i, h in enumerate(hook_list) if isinstance(h, hooks.EvalHook)) + 1
            hook_list.insert(
                index,
                hooks.BestCheckpointer(cfg.TEST.EVAL_PERIOD, self.checkpointer, cfg.DIGITS.BEST_METRIC, "max"),
            )
        later_images, later_s = parse_later_work(os.environ.get(LATER_WORK_ENV))
        if (later_images or later_s) and comm.is_main_process():
            eval_images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TEST)
            hook_list.append(
                RemainingTimeHook(cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_PERIOD, eval_images, later_images, later_s)
            )
        if cfg.DIGITS.PLOT_AT_END:
            hook_list.append(PlotMetricsHook(cfg.OUTPUT_DIR))
        return hook_list

    def run_step(self):
        # Keep this step's loss dict, to name the non-finite terms if detectron2 raises for their sum.
        losses = {}

        def keep_losses(module, inputs, outputs):
            if isinstance(outputs, dict):
                losses.update(outputs)

        handle = self._trainer.model.register_forward_hook(keep_losses)
        try:
            super().run_step()
        except FloatingPointError as e:
            if losses:
                bad = ", ".join(f"{k} = {v.item()}" for k, v in losses.items() if not torch.isfinite(v).all())
                what = f"Non-finite loss at iteration {self.iter}: {bad or f'in another process ({e})'}"
            else:  # raised inside the forward pass (e.g. by the RPN on non-finite boxes), before any loss
                what = f"Non-finite values at iteration {self.iter} in the model's forward pass: {e}"
            last = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else None
            raise FloatingPointError(
                f"{what.rstrip('.')}. Training stopped before the optimizer step; "
                f"last good checkpoint: {last or 'none yet'}"
            ) from None
        finally:
            handle.remove()
