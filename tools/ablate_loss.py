#!/usr/bin/env python
"""
Train the same config with each IoU-loss type (same data, same seed), then write a table and a
figure comparing AP, AP50, AP75, APs/APm/APl, AR100 and number accuracy per evaluation::

    python tools/ablate_loss.py --config-file configs/digits_cpu.yaml --output-dir output/ablation \\
        SOLVER.EPOCHS 10 MODEL.ROI_BOX_HEAD.IOU_LOSS.START_EPOCH 3

Finished runs are kept; an interrupted run resumes from its last checkpoint.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from digit_detectron.analysis.experiments import summarize_ablation, train_runs  # noqa: E402

TRAIN_NET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output-dir", default="output/ablate_loss")
    parser.add_argument("--types", nargs="+", default=["none", "diou", "ciou"], help="IOU_LOSS.TYPE values")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs for every run")
    args = parser.parse_args()

    runs = {
        loss_type: (args.config_file, [*args.opts, "MODEL.ROI_BOX_HEAD.IOU_LOSS.TYPE", loss_type, "SEED", str(args.seed)])
        for loss_type in args.types
    }
    metrics = train_runs(runs, args.output_dir, TRAIN_NET)
    md, png = summarize_ablation(metrics, args.output_dir, title=f"IoU loss ablation ({os.path.basename(args.config_file)})")
    with open(md) as f:
        print(f.read())
    print(f"Table: {md}\nFigure: {png}")


if __name__ == "__main__":
    main()
