#!/usr/bin/env python
"""
The import contract of the ``digit_detectron`` package, checked in ``make lint``: each layer imports only
the layers below it (and itself), and first-party imports sit at the top of a module::

    utils < data < modeling < checkpoint < config < evaluation < engine < export < inference < analysis
        < tools

``digit_detectron/__init__.py`` and ``command.py`` (the package's front door and the console command) may
import any layer. A function-local first-party import is allowed only where a cycle is impossible to avoid
otherwise, marked on its line with ``# local import: <reason>``. Reads the source files (nothing is
imported); prints one line per breach and exits 1, or prints a summary and exits 0.

    python tools/check_layers.py [PACKAGE_DIR]
"""

import ast
import os
import sys

LAYERS = (
    "utils",
    "data",
    "modeling",
    "checkpoint",
    "config",
    "evaluation",
    "engine",
    "export",
    "inference",
    "analysis",
    "tools",
)
FRONT = ("__init__", "command")  # may import every layer
LOCAL_MARK = "# local import:"


def module_name(package_dir, path):
    """``digit_detectron.data.image_io`` for ``<package_dir>/data/image_io.py`` (a package for __init__)."""
    rel = os.path.relpath(path, os.path.dirname(package_dir))[:-3].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def layer_of(module):
    """The layer a dotted module name belongs to (its first part below the package), or None for the front."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in FRONT:
        return None
    return parts[1]


def imported_modules(node, module, is_package):
    """First-party modules an import node names, resolved from relative form."""
    package = module.split(".")[0]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if node.module is None:  # from . import x, y: each name may be a module
            return [f"{target}.{a.name}" for a in node.names]
        return [target] if target.split(".")[0] == package else []
    return [a.name for a in node.names if a.name.split(".")[0] == package]


def check(package_dir):
    """The breaches of the contract under ``package_dir``, one line each (file:line: what)."""
    package_dir = os.path.abspath(package_dir)
    problems, checked = [], 0
    for folder, _, files in sorted(os.walk(package_dir)):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            source = open(path, encoding="utf-8").read()
            lines = source.splitlines()
            tree = ast.parse(source, path)
            module = module_name(package_dir, path)
            own = layer_of(module)
            # Module level: the top statements and those in their if / try blocks (e.g. imports guarded by
            # whether detectron2 is installed); anything under a function or class is local.
            top = set()
            pending = list(tree.body)
            while pending:
                n = pending.pop()
                top.add(id(n))
                if isinstance(n, (ast.If, ast.Try)):
                    pending += [*n.body, *n.orelse, *getattr(n, "finalbody", [])]
                    pending += [c for h in getattr(n, "handlers", []) for c in h.body]
            rel = os.path.relpath(path, os.path.dirname(package_dir))
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                targets = imported_modules(node, module, name == "__init__.py")
                if not targets:
                    continue
                checked += 1
                if id(node) not in top and LOCAL_MARK not in lines[node.lineno - 1]:
                    problems.append(
                        f"{rel}:{node.lineno}: first-party import inside a function; move it to the top "
                        f"(or mark the line '{LOCAL_MARK} <why a cycle needs it>')"
                    )
                for target in targets:
                    theirs = layer_of(target)
                    if own is None or theirs is None or theirs == own or theirs not in LAYERS:
                        continue
                    if own in LAYERS and LAYERS.index(theirs) > LAYERS.index(own):
                        problems.append(
                            f"{rel}:{node.lineno}: layer '{own}' imports '{target}' of the higher layer '{theirs}'"
                        )
                if own is not None and own not in LAYERS:
                    problems.append(f"{rel}: module of no layer '{own}' (add it to LAYERS in tools/check_layers.py)")
    return sorted(set(problems)), checked


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package_dir = argv[0] if argv else os.path.join(here, "digit_detectron")
    problems, checked = check(package_dir)
    for line in problems:
        print(line)
    if problems:
        print(f"import contract: {len(problems)} breach(es); the layers, lowest first: {' < '.join(LAYERS)}")
        return 1
    print(f"import contract: {checked} first-party imports follow {' < '.join(LAYERS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
