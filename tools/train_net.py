#!/usr/bin/env python
"""
Train or evaluate a digit detector, the detectron2 way::

    python tools/train_net.py --config-file configs/digits_cpu.yaml [KEY VALUE ...]
    python tools/train_net.py --config-file configs/digits_cpu.yaml --eval-only MODEL.WEIGHTS out/model_best.pth
    python tools/train_net.py --config-file configs/digits_cpu.yaml --resume
    python tools/train_net.py --config-file configs/digits_cpu.yaml --num-gpus 2   # 2 processes (gloo on CPU)
"""
import sys

from detectron2.data.detection_utils import SizeMismatchError
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from digit_detectron import get_digit_cfg
from digit_detectron.checkpoint import CheckpointError
from digit_detectron.data import DatasetError, ImageReadError
from digit_detectron.engine import DigitTrainer, resolve_schedule
from digit_detectron.engine.pretrain import maybe_pretrain


def setup(args):
    cfg = get_digit_cfg(args.config_file, args.opts)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="digit_detectron")
    if not args.eval_only:
        resolve_schedule(cfg)
        maybe_pretrain(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = DigitTrainer.build_model(cfg)
        DigitTrainer.build_checkpointer(cfg, model).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return DigitTrainer.test(cfg, model)
    trainer = DigitTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (DatasetError, ImageReadError, SizeMismatchError, CheckpointError) as e:
        sys.exit(f"error: {e}")  # bad input: the message names the file; no library traceback
