"""Trained models shipped in the package: `[models.NAME]` tables of registry.toml, files under models/.

A shipped model is an ordinary stylezoo checkpoint (only the generator, fp16 where it fits: loading casts to
the module's dtype), described as data: its file (relative to the package), sha256, generator, and what it
needs: a `style_label` (several names may share one label-conditioned file) or `takes_style = true` (a
reference-guided model: `--style REF`). The sha256 is checked once per process before the first load.
`benchmarks/train_zoo.py` trains the files and writes their tables' numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..components.registry import REGISTRY_TOML, Registry, default_registry
from ..errors import CheckpointError, UnknownComponentError, did_you_mean
from .stylizer import Stylizer

PACKAGE_ROOT = REGISTRY_TOML.parent  # the repository root is the package: models/ lies beside registry.toml
MODELS_HINT = "Run `stylezoo models` to see them."
REINSTALL = "reinstall stylezoo (pip install --force-reinstall stylezoo)"
_verified: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) of files whose sha256 matched


@dataclass(frozen=True)
class ShippedModel:
    """One `[models.NAME]` table of registry.toml."""

    name: str
    description: str
    file: str  # relative to the package root, e.g. "models/multi-style.safetensors"
    sha256: str
    gen: str  # the generator the file holds, e.g. "gen/cin"
    licence: str  # of the weights
    style_label: str | None = None  # label-conditioned files: the label this name stands for
    takes_style: bool = False  # reference-guided files: a style image is required (--style REF)
    recipe: str = ""  # the recipe it was trained with
    training_data: str = ""
    steps: int = 0
    train_s: float = 0.0
    device: str = ""  # where it trained
    held_out: str = ""  # what the scores were measured on
    scores: dict[str, float] = field(default_factory=dict)  # style_ratio, content_ssim, ...

    @property
    def style(self) -> str:
        """What the model paints in, for tables: its label, or "any (--style REF)"."""
        return "any (--style REF)" if self.takes_style else (self.style_label or "-")

    def card(self) -> dict[str, Any]:
        """The table as JSON-able data (`stylezoo models --json`)."""
        return {"name": self.name, "description": self.description, "gen": self.gen, "style": self.style,
                "style_label": self.style_label, "takes_style": self.takes_style, "file": self.file,
                "sha256": self.sha256, "licence": self.licence, "recipe": self.recipe,
                "training_data": self.training_data, "steps": self.steps, "train_s": self.train_s,
                "device": self.device, "held_out": self.held_out, "scores": dict(self.scores)}


def shipped_models(catalog: Mapping[str, Any] | None = None) -> dict[str, ShippedModel]:
    """Every shipped model registry.toml describes (or the given catalog mapping), by name."""
    if catalog is None:
        catalog = default_registry().catalog
    known = {f for f in ShippedModel.__dataclass_fields__ if f != "name"}
    out = {}
    for name, t in dict(catalog.get("models", {})).items():  # in registry.toml's order
        table = {k: v for k, v in dict(t).items() if k in known}
        table["scores"] = {k: float(v) for k, v in dict(table.get("scores", {})).items()}
        out[name] = ShippedModel(name=name, **table)
    return out


def list_models(pattern: str = "*", catalog: Mapping[str, Any] | None = None) -> list[str]:
    """Names of the shipped models matching a wildcard (`stylezoo models`, `stylezoo list --kind model`)."""
    import fnmatch

    return [n for n in shipped_models(catalog) if fnmatch.fnmatchcase(n, pattern)]


def get_model(name: str, catalog: Mapping[str, Any] | None = None) -> ShippedModel:
    """The shipped model `name`; an unknown name is a UsageError with a did-you-mean."""
    models = shipped_models(catalog)
    if name not in models:
        raise UnknownComponentError(f"Unknown model {name!r}.{did_you_mean(name, models)} {MODELS_HINT}")
    return models[name]


def model_path(model: ShippedModel, root: Path | None = None) -> Path:
    """The model's file in the package, its sha256 checked (once per process while the file is unchanged)."""
    base = (root or PACKAGE_ROOT).resolve()
    path = (base / model.file).resolve()
    if base not in path.parents:
        raise CheckpointError(f"registry.toml gives model {model.name!r} the file {model.file!r}, outside the "
                              f"package; {REINSTALL}.")
    if not path.is_file():
        raise CheckpointError(f"The file of model {model.name!r} ({model.file}) is missing from the installed "
                              f"package; {REINSTALL}.")
    stat = path.stat()
    if _verified.get(path) != (stat.st_size, stat.st_mtime_ns):
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != model.sha256:
            raise CheckpointError(f"The file of model {model.name!r} ({model.file}) is corrupt or was changed "
                                  f"(sha256 {digest[:12]}..., registry.toml records {model.sha256[:12]}...); "
                                  f"{REINSTALL}.")
        _verified[path] = (stat.st_size, stat.st_mtime_ns)
    return path


def load_model(name: str, device: str | torch.device = "auto", precision: str = "auto", *, backend: str = "auto",
               registry: Registry | None = None, root: Path | None = None) -> Stylizer:
    """A shipped model by name, ready to apply: `load_model("starry-night")("photo.jpg").save("out.png")`.

    Label-conditioned models come with their style label set; a reference-guided model (`takes_style`)
    needs `set_style(REF)` before it stylizes. `root`: where the files lie (default: the package)."""
    reg = registry or default_registry()
    model = get_model(name, reg.catalog)
    st = Stylizer.load(model_path(model, root), device=device, precision=precision, backend=backend, registry=reg)
    if st.name != model.gen:
        raise CheckpointError(f"The file of model {name!r} ({model.file}) holds {st.name}, but registry.toml says "
                              f"{model.gen}; {REINSTALL}.")
    st.model = name
    if model.takes_style:
        st.requires_style = True
    elif model.style_label is not None:
        st.set_labels(model.style_label)
    return st


__all__ = ["ShippedModel", "shipped_models", "list_models", "get_model", "model_path", "load_model", "PACKAGE_ROOT",
           "MODELS_HINT"]
