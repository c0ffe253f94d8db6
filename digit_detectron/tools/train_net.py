#!/usr/bin/env python
"""
Train or evaluate a digit detector, the detectron2 way (both end with the evaluation report of the
model, the best checkpoint after training, in OUTPUT_DIR/report/<dataset>/; DIGITS.REPORT False or
--no-report skips it)::

    python tools/train_net.py --config-file configs/digits_cpu.yaml [KEY VALUE ...]
    python tools/train_net.py --eval-only --weights out/model_best.pth   # a bundle: its own config
    python tools/train_net.py --config-file configs/digits_cpu.yaml --eval-only MODEL.WEIGHTS out/model_best.pth
    python tools/train_net.py --config-file configs/digits_cpu.yaml --resume
    python tools/train_net.py --config-file configs/digits_cpu.yaml --num-gpus 2   # 2 processes (gloo on CPU)
"""

import logging
import os

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm

from digit_detectron import get_digit_cfg
from digit_detectron.config import get_model_cfg, resolve_config_file
from digit_detectron.data.preflight import preflight
from digit_detectron.engine import DigitTrainer, resolve_schedule
from digit_detectron.engine.pretrain import maybe_pretrain
from digit_detectron.inference.second_look import wrap_for_second_look
from digit_detectron.inference.speed import apply_inference_options
from digit_detectron.inference.tta import wrap_for_tta
from digit_detectron.utils.cli import add_common_flags, add_device_flag, device_opts, run_tool, setup_logging
from digit_detectron.utils.io import atomic_write_json
from digit_detectron.utils.lock import OutputLock
from digit_detectron.utils.threads import apply_thread_policy


def get_parser():
    parser = add_common_flags(default_argument_parser(__doc__))
    parser.add_argument(
        "--weights",
        default=None,
        help="--eval-only: the model bundle (.pth written by training); no config file needed",
    )
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="skip the report at the end (as DIGITS.REPORT False, which the checkpoints' config would keep)",
    )
    return add_device_flag(parser)


def setup(args):
    opts = [*args.opts, *device_opts(args)]
    if args.eval_only:
        cfg = get_model_cfg(args.config_file or None, opts, weights=args.weights)
    else:
        cfg = get_digit_cfg(args.config_file, opts)
    setup_logging(cfg.OUTPUT_DIR, comm.get_rank())
    if not args.eval_only and comm.is_main_process():
        # One training per OUTPUT_DIR; a lock left by a killed run is taken over.
        OutputLock(cfg.OUTPUT_DIR).acquire()
    if comm.is_main_process():  # once, not in every process of a --num-gpus run
        preflight(cfg.DATASETS.TEST if args.eval_only else [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST])
    if not args.eval_only:
        resolve_schedule(cfg)
        maybe_pretrain(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def evaluation_model(cfg, resume=False):
    """
    The model of cfg.MODEL.WEIGHTS (``resume``: OUTPUT_DIR's last checkpoint) as evaluation runs it: loaded
    strictly, with the DIGITS.INFERENCE options, TTA and the second look.
    """
    model = DigitTrainer.build_model(cfg)
    # Strict: an evaluation of re-initialised heads would be a silent wrong result.
    DigitTrainer.build_checkpointer(cfg, model, strict=True).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    apply_inference_options(model.eval(), cfg)  # what DigitPredictor runs (DIGITS.INFERENCE, DIGITS.TTA)
    return wrap_for_second_look(wrap_for_tta(model, cfg), cfg)


def train(args):
    """One process's work: evaluate (--eval-only) or train; launched once per process."""
    if comm.get_world_size() > 1:  # one of --num-gpus N processes: its share of this machine's cores
        apply_thread_policy(args.threads, processes=comm.get_local_size())
    cfg = setup(args)
    report_dir = os.path.join(cfg.OUTPUT_DIR, "report") if cfg.DIGITS.REPORT and not args.no_report else None
    if args.eval_only:
        # One inference pass gives the metrics and the report (ReportEvaluator).
        results = DigitTrainer.test_with_report(cfg, evaluation_model(cfg, args.resume), report_dir)
        if comm.is_main_process():  # every dataset's metrics, for scripts (e.g. tools/demo.py's summary)
            by_dataset = results if len(cfg.DATASETS.TEST) > 1 else {cfg.DATASETS.TEST[0]: results}
            atomic_write_json(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), by_dataset, indent=2, default=float)
        return results
    trainer = DigitTrainer(cfg)
    if args.resume and not os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        logging.getLogger("digit_detectron").warning(
            f"--resume: {cfg.OUTPUT_DIR} holds no checkpoint to resume (no last_checkpoint file); "
            f"training starts from MODEL.WEIGHTS {cfg.MODEL.WEIGHTS or '(none: random initialisation)'}"
        )
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    best = os.path.join(cfg.OUTPUT_DIR, "model_best.pth")
    if report_dir and cfg.DATASETS.TEST:
        # The report of the model training keeps (the best, else the last), from its own evaluation pass.
        report_cfg = cfg.clone()
        report_cfg.defrost()
        report_cfg.MODEL.WEIGHTS = best if os.path.isfile(best) else os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        if os.path.isfile(report_cfg.MODEL.WEIGHTS):
            DigitTrainer.test_with_report(report_cfg, evaluation_model(report_cfg), report_dir)
    return results


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.config_file:  # a shipped config by name; detectron2's default_setup copies the file
        args.config_file = resolve_config_file(args.config_file)
    print("Command Line Args:", args)
    if args.num_gpus * args.num_machines > 1 and not args.eval_only:
        # The backbone warm start runs in one process; here it has every thread, not one process's share.
        cfg = get_digit_cfg(args.config_file, [*args.opts, *device_opts(args)])
        setup_logging(cfg.OUTPUT_DIR)
        maybe_pretrain(cfg)
    return launch(
        train,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    run_tool(main)
