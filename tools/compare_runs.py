#!/usr/bin/env python
"""
Two evaluation reports side by side (``OUTPUT_DIR/report/<dataset>/`` of ``train_net.py --eval-only``)::

    python tools/compare_runs.py output/run_a/report/digits_valid output/run_b/report/digits_valid

Prints accuracy, the error kinds (count and share), AP / AP50 per digit and by digit height for A and
B, with B - A.
"""

from tabulate import tabulate

from digit_detectron.evaluation.report import load_report
from digit_detectron.utils.cli import argument_parser, run_tool


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("a", help="report folder or report.json (A)")
    parser.add_argument("b", help="report folder or report.json (B)")
    return parser


def _row(name, a, b, fmt="{:.1f}"):
    diff = b - a if a is not None and b is not None else None
    cell = lambda v: "-" if v is None else fmt.format(v)  # noqa: E731
    return [name, cell(a), cell(b), "-" if diff is None else ("+" if diff >= 0 else "") + fmt.format(diff)]


def compare(a, b):
    """The side-by-side text of two report dicts."""
    rows = [
        _row("accuracy %", a["accuracy"] * 100, b["accuracy"] * 100),
        _row("images", a["images"], b["images"], "{:d}"),
    ]
    for kind in a["error_kinds"]:
        ka, kb = a["error_kinds"][kind], b["error_kinds"].get(kind, {"count": 0})
        rows.append(_row(f"  {kind} (count)", ka["count"], kb["count"], "{:d}"))
    for digit, ap in a["ap_per_class"].items():
        rows.append(_row(f'AP "{digit}"', ap["AP"], b["ap_per_class"].get(digit, {}).get("AP")))
    for band, ap in a["ap_by_height"].items():
        rows.append(_row(f"AP50 height {band}", ap["AP50"], b["ap_by_height"].get(band, {}).get("AP50")))
    headers = ["", f"A: {a.get('title') or 'A'}", f"B: {b.get('title') or 'B'}", "B - A"]
    return tabulate(rows, headers=headers, tablefmt="github")


def main(argv=None):
    args = get_parser().parse_args(argv)
    text = compare(load_report(args.a), load_report(args.b))
    print(text)
    return text


if __name__ == "__main__":
    run_tool(main)
