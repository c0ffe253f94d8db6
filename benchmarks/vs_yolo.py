#!/usr/bin/env python
"""
Predict images/s of digit-detectron against Ultralytics YOLO11n on the same image files, same threads,
one process each, in one run::

    PYTHONPATH=/path/to/ultralytics/site python benchmarks/vs_yolo.py --weights output/demo/train/model_best.pth \\
        --onnx out/model.onnx --onnx-int8 out/model_int8.onnx --images datasets/digits/test_wide \\
        --output output/vs_yolo [--avx2]

Rows: digit-detectron's PyTorch ``DigitPredictor.predict_files`` (decode, resize, model, post-processing,
the shipped inference options), the same with bf16 off, ``predict --weights model.onnx``'s loop
(``predict_files_exported``: ONNX Runtime, ``threads`` images at once with one thread each, decode and
resize in the workers) for ``--onnx`` and ``--onnx-int8``, and YOLO11n through Ultralytics' own predict
loop (decode, letterbox, network, NMS) at ``imgsz`` 128 with untrained weights (``yolo11n.yaml``: no
download; almost no box reaches its NMS): once in one process on ``threads`` threads, as the issue asks,
and once as ``threads`` processes of one thread each on their share of the files, side by side (the
way ONNX Runtime is run here; images/s = all images / from the first start to the last end of the timed
loops). ``--avx2`` runs every row with the kernels of an AVX2-only CPU: where the CPU can trap CPUID
("cpuid_fault" in /proc/cpuinfo), each child runs under ``benchmarks/avx2_cpu/run_as_avx2.sh``, which hides
AVX-512, VNNI, AMX and bf16 from every library, ONNX Runtime included; elsewhere only PyTorch's and
oneDNN's switches are set (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``, ``DIGITS_BF16=off``),
ONNX Runtime keeps its native kernels and its rows are marked so. Ultralytics
is not a dependency of this project: install it into a folder of its own and put that folder on
PYTHONPATH. Writes vs_yolo.json / .md.
"""

import glob
import json
import os
import subprocess
import sys

from digit_detectron.analysis.benchmark import machine_info, write_table
from digit_detectron.utils.cli import argument_parser, run_tool

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DIGITS_BF16": "off"}
AVX2_WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "avx2_cpu", "run_as_avx2.sh")
PREFIX = []  # set by main: the wrapper every child runs under (``--avx2`` where CPUID can be trapped)


def can_trap_cpuid():
    """Whether this CPU and kernel can make CPUID trap (what ``run_as_avx2.sh`` needs)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " cpuid_fault" in line for line in f)
    except OSError:
        return False


DIGITS_CHILD = r"""
import json, sys, time
from digit_detectron.inference.predictor import DigitPredictor
from digit_detectron.config import get_model_cfg
weights, files, batch, extra = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
cfg = get_model_cfg(None, ["MODEL.DEVICE", "cpu", *extra], weights=weights)
predictor = DigitPredictor(cfg)
predictor.predict_files(files[:32], batch_size=batch, progress=False)  # warm-up
start = time.perf_counter()
predictor.predict_files(files, batch_size=batch, progress=False)
print(json.dumps({"images": len(files), "seconds": time.perf_counter() - start}))
"""

ONNX_CHILD = r"""
import json, sys, time
from digit_detectron.export.runtime import ExportedModel
from digit_detectron.inference.predictor import predict_files_exported
model = ExportedModel(sys.argv[1], threads=int(sys.argv[3]))
files = json.loads(sys.argv[2])
predict_files_exported(model, files[:32], progress=False)
start = time.perf_counter()
run = predict_files_exported(model, files, progress=False)
assert not run.failures, run.failures
print(json.dumps({"images": len(files), "seconds": time.perf_counter() - start}))
"""

YOLO_CHILD = r"""
import json, sys, time, torch
from ultralytics import YOLO
files, threads = json.loads(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
model = YOLO("yolo11n.yaml")
for f in files[:32]:
    model.predict(f, imgsz=128, device="cpu", verbose=False)
if len(sys.argv) > 3:  # one of several processes: start together, report the wall-clock span
    while time.time() < float(sys.argv[3]):
        time.sleep(0.001)
start, t0 = time.perf_counter(), time.time()
for f in files:
    model.predict(f, imgsz=128, device="cpu", verbose=False)
print(json.dumps({"images": len(files), "seconds": time.perf_counter() - start, "start": t0, "end": time.time()}))
"""


def yolo_processes(files, processes, env):
    """images/s of ``processes`` YOLO11n processes of one thread each on their share of ``files``, side by side."""
    import time

    shares = [files[i::processes] for i in range(processes)]
    go = time.time() + 20  # after every process has imported torch and built its model
    procs = [
        subprocess.Popen(
            [*PREFIX, sys.executable, "-c", YOLO_CHILD, json.dumps(share), "1", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env, OMP_NUM_THREADS="1"),
        )
        for share in shares
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark child failed: {err.strip().splitlines()[-1:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sum(r["images"] for r in results) / span


def cpu_name():
    """The CPU model (``machine_info``) and its widest vector ISA, from /proc/cpuinfo's flags."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    isa = (
        "AVX-512 bf16"
        if "avx512_bf16" in flags
        else "AVX-512"
        if "avx512f" in flags
        else "AVX2"
        if "avx2" in flags
        else "?"
    )
    return f"{machine_info()['cpu']} ({isa})"


def child(code, argv, env):
    proc = subprocess.run([*PREFIX, sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["images"] / result["seconds"]


def get_parser():
    parser = argument_parser(__doc__)
    parser.add_argument("--weights", required=True, help="digit-detectron model bundle")
    parser.add_argument("--images", required=True, help="folder of images (e.g. a split in the real test framing)")
    parser.add_argument("--onnx", default=None, help="also time this exported model.onnx")
    parser.add_argument("--onnx-int8", default=None, help="also time this int8 model (export --int8)")
    parser.add_argument("--num", type=int, default=500, help="images timed (after 32 of warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--avx2", action="store_true", help="run as an AVX2-only CPU does (see above)")
    parser.add_argument("--no-yolo", action="store_true", help="skip YOLO11n (Ultralytics not installed)")
    parser.add_argument("--output", required=True)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.images, "*.png")) + glob.glob(os.path.join(args.images, "*.jpg")))
    files = files[: args.num]
    if not files:
        raise FileNotFoundError(f"{args.images}: no .png / .jpg images")
    threads = os.environ.get("OMP_NUM_THREADS") or "2"
    env = dict(os.environ, OMP_NUM_THREADS=threads, **(AVX2_ENV if args.avx2 else {}))
    masked = args.avx2 and can_trap_cpuid()
    PREFIX[:] = [AVX2_WRAPPER] if masked else []
    listing = json.dumps(files)
    rows = []
    batch = str(args.batch_size)
    rows.append(("digit-detectron predict (shipped options)", child(DIGITS_CHILD, [args.weights, listing, batch], env)))
    if not args.avx2:
        off = [args.weights, listing, batch, "DIGITS.INFERENCE.BACKBONE_BF16", "off"]
        rows.append(("digit-detectron predict, float32", child(DIGITS_CHILD, off, env)))
    ort_note = ", native ISA: ONNX Runtime has no AVX2 switch" if args.avx2 and not masked else ""
    for label, path in (("float32", args.onnx), ("int8", args.onnx_int8)):
        if path:
            name = f"predict --weights model.onnx ({label}, ONNX Runtime, {threads} images at once{ort_note})"
            rows.append((name, child(ONNX_CHILD, [path, listing, threads], env)))
    if not args.no_yolo:
        rows.append(
            (
                f"YOLO11n, imgsz 128, Ultralytics predict, 1 process x {threads} threads (untrained)",
                child(YOLO_CHILD, [listing, threads], env),
            )
        )
        rows.append(
            (
                f"YOLO11n, the same, {threads} processes x 1 thread side by side",
                yolo_processes(files, int(threads), env),
            )
        )
    machine = cpu_name() + (
        ", run with AVX2 kernels (CPUID without AVX-512 / VNNI / AMX / bf16: benchmarks/avx2_cpu)"
        if masked
        else ", run as AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, bf16 off)"
        if args.avx2
        else ""
    )
    os.makedirs(args.output, exist_ok=True)
    result = {"machine": machine, "threads": int(threads), "images": len(files), "folder": args.images, "rows": rows}
    lines = [
        f"{machine}; {threads} threads; {len(files)} images of {args.images}",
        "",
        "| predictor | images/s |",
        "|---|---|",
    ]
    lines += [f"| {name} | {ips:.1f} |" for name, ips in rows]
    write_table(args.output, "vs_yolo", result, "\n".join(lines))
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    run_tool(main)
