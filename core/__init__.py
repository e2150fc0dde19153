"""The engine side of stylezoo, in layers (ARCHITECTURE.md): ops, components, runtime, files, runs, use,
evaluation, training, cli.

Until 0.2 the modules' old flat names (`stylezoo.core.engine`, `stylezoo.core.kinds`, ...) still import, as
aliases of their new modules, with a DeprecationWarning naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

# old flat module -> its module now
MOVED = {
    "layers": "ops.layers", "metrics": "ops.metrics", "kinds": "components.kinds", "hookspecs": "components.hookspecs",
    "config": "components.config", "registry": "components.registry", "devices": "runtime.devices",
    "cpu_memory": "runtime.cpu_memory", "distributed": "runtime.distributed", "images": "files.images",
    "data": "files.data", "checkpoint": "files.checkpoint", "weights": "files.weights", "runconfig": "runs.runconfig",
    "rundir": "runs.rundir", "inference": "use.stylizer", "outputs": "use.outputs", "export": "use.export",
    "transfer": "use.transfer", "evaluate": "evaluation.evaluate", "report": "evaluation.report",
    "engine": "training.engine", "assembly": "training.assembly", "conditioning": "training.conditioning",
    "trainstate": "training.trainstate", "ema": "training.ema",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `stylezoo.core.OLD` and hands back the module it moved to (the same module object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        head, _, old = fullname.rpartition(".")
        if head != __name__ or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"{__name__}.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old name goes in stylezoo 0.2", DeprecationWarning,
                      stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its new name


if not any(isinstance(f, _Alias) for f in sys.meta_path):
    sys.meta_path.append(_Alias())
