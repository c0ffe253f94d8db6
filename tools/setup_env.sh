#!/usr/bin/env bash
# Create .venv and install digit_detectron with all its dependencies (pyproject.toml ranges, the exact
# versions of constraints.txt). Idempotent: a second run with
# nothing to do only checks a stamp and prints which detectron2 is in use.
#
# detectron2 has no official PyPI wheel. Unless a detectron2 is already importable in the venv (e.g. a
# CUDA build you installed), this runs `digit-detectron setup-detectron2`
# (digit_detectron/tools/setup_detectron2.py): the pure-Python package of the PyPI distribution
# sal-detectron2==0.7.2 (a 2024 snapshot of detectron2's main branch), whose wheel is tagged cp310 and
# bundles a _C extension for Python 3.10 only, repacked without _C and pip-installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
D2_DIST=sal-detectron2==0.7.2
STAMP="$VENV/.digit-detectron-setup"
want=$(cat pyproject.toml constraints.txt tools/setup_env.sh digit_detectron/tools/setup_detectron2.py | sha256sum | cut -d" " -f1)

d2_line() {
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as md, os, detectron2
dist = None
for name in ("detectron2", "sal-detectron2"):
    try:
        dist = f"{name} {md.version(name)}"
        break
    except md.PackageNotFoundError:
        pass
try:
    from detectron2 import _C  # noqa: F401
    ops = "compiled ops (_C) present"
except ImportError:
    ops = "pure Python, no _C (NMS/RoIAlign from torchvision)"
print(f"detectron2 {detectron2.__version__} in use from {os.path.dirname(detectron2.__file__)} "
      f"[{dist or 'no dist-info'}; {ops}]")
PY
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import detectron2, digit_detectron" 2>/dev/null; then
  echo "setup: up to date ($VENV)"
  d2_line
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip>=23"
"${PIP[@]}" install -q -c constraints.txt torch torchvision  # the exact versions CI tests
"${PIP[@]}" install -q -c constraints.txt -e ".[dev]"

if "$VENV/bin/python" -c "import detectron2" 2>/dev/null; then
  echo "setup: keeping the detectron2 already importable in $VENV"
else
  echo "setup: installing detectron2 from $D2_DIST (pure-Python package, bundled Python 3.10 _C dropped)"
  # The package's own installer: the pinned wheel's SHA-256 checked, repacked without _C, pip-installed.
  "$VENV/bin/python" -m digit_detectron.tools.setup_detectron2
fi
"$VENV/bin/python" -c "import detectron2.model_zoo, detectron2.modeling, digit_detectron" \
  || { echo "setup: detectron2 or digit_detectron failed to import" >&2; exit 1; }
echo "$want" > "$STAMP"
d2_line
