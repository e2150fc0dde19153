"""Checkpoints and weights: safetensors only, with the composition and configs in the metadata.

A checkpoint is one `.safetensors` file. Tensor keys are prefixed by their owner (`gen.`, `disc.`,
`opt_g.`, `opt_d.`, ...); metadata key `stylezoo` holds JSON with the composition, each component's
resolved config, the step and the versions involved, so a checkpoint loads with no flags.
Writes go to a temporary file that is fsynced and renamed: a crash never leaves a half-written file
under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..components.config import MAX_DEPTH, nesting
from ..errors import CheckpointError

META_KEY = "stylezoo"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".ckpt", ".bin"}
EXPORT_SUFFIXES = {".onnx", ".ts", ".torchscript"}  # what `stylezoo export` writes (and .pt, checked inside)


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then fsync and rename onto `path`; on any error the old file stays.

    The temporary file is `.NAME.PID-XXXXXXXX.tmp` beside `path`; after a successful write, such files
    left by killed processes (their PID no longer runs) are removed. A full disk raises CheckpointError.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise (no_space_error(path) if e.errno in NO_SPACE else _as_error_of(path, e)) from None
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode open() would
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in NO_SPACE:
            raise no_space_error(path) from None
        if tmp in {os.fsdecode(f) for f in (e.filename, e.filename2) if isinstance(f, (str, bytes, os.PathLike))}:
            # the temporary file is ours, not a name the user knows
            raise _as_error_of(path, e) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    remove_stale_tmp(path.parent, path.suffix)


NO_SPACE = {errno.ENOSPC, errno.EDQUOT}  # disk full, quota exceeded


def _as_error_of(path: Path, e: OSError) -> OSError:
    """An error about an atomic write's temporary file as one about `path` (the CLI prints the path given)."""
    return OSError(e.errno, f"Cannot be written ({e.strerror or type(e).__name__})", str(path))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def no_space_error(path: Path) -> CheckpointError:
    """The error for a full disk while writing `path` (atomic writes leave the previous file intact)."""
    return CheckpointError(
        f"No space left on the device while writing {path}; the previous file is intact. "
        "Free some disk space or write to another --out."
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_tmp(folder: Path, suffix: str = "") -> list[Path]:
    """Remove temporary files of `atomic_write`s (for files ending in `suffix`) whose process was killed."""
    pattern = re.compile(r"^\..+" + re.escape(suffix) + r"\.(\d+)-[a-z0-9_]{8}\.tmp$")
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                (folder / name).unlink()
                removed.append(folder / name)
            except OSError:
                pass
    return removed


def save(path: str | Path, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write `tensors` and the JSON-able `meta` to a safetensors file, atomically."""
    path = Path(path)
    plain: dict[str, Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:  # safetensors refuses shared memory: a frozen part both the generator and its average hold
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        plain[k] = t
    header = {META_KEY: json.dumps({"format": FORMAT_VERSION, **meta}, sort_keys=True)}

    def write(tmp: Path) -> None:
        try:
            save_file(plain, str(tmp), metadata=header)
        except SafetensorError as e:  # its own error type for the OS's: a full disk is said as one
            text = str(e)
            if any(s in text for s in ("No space left", "StorageFull", "code: 28,", "code: 122,", "Disk quota")):
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp)) from None
            raise

    atomic_write(path, write)
    return path


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian) and then the JSON header."""
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def refuse_export(path: Path) -> None:
    """Refuse an exported model (ONNX, TorchScript) where a checkpoint is wanted, saying what to give instead."""
    exported = path.suffix.lower() in EXPORT_SUFFIXES or (
        path.with_name(path.name + ".parity.json").is_file() and not _looks_like_safetensors(path))
    if not exported and path.suffix.lower() == ".pt" and path.is_file() and zipfile.is_zipfile(path):
        with contextlib.suppress(OSError, zipfile.BadZipFile):
            with zipfile.ZipFile(path) as z:
                exported = any("/code/" in n for n in z.namelist())  # TorchScript archives hold their code
    if exported:
        raise CheckpointError(
            f"{path} is an exported model (what `stylezoo export` writes, ONNX or TorchScript), not a checkpoint: "
            "give the run folder or the .safetensors checkpoint it was exported from. The exported file itself "
            "runs with onnxruntime or torch.jit.load.")


def refuse_pickle(path: Path) -> None:
    refuse_export(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} looks like a pickled PyTorch file: stylezoo loads only .safetensors files, because "
            "unpickling runs arbitrary code. Convert a file you trust with "
            "`safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors')`."
        )


def read_meta(path: str | Path) -> dict[str, Any]:
    """The `stylezoo` metadata of a checkpoint, without reading its tensors."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e}). Is it truncated or corrupt?") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a stylezoo checkpoint (no '{META_KEY}' metadata).")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, ValueError, RecursionError):  # ValueError: thousands of digits; nesting
        raise CheckpointError(f"{path}: its stylezoo metadata is not valid JSON within stylezoo's limits (numbers "
                              "and nesting); the file is corrupt or edited.") from None
    if nesting(meta) > MAX_DEPTH:
        raise CheckpointError(f"{path}: its stylezoo metadata nests deeper than {MAX_DEPTH} levels; the file is "
                              "corrupt or edited.")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its stylezoo metadata is not a table; the file is corrupt.")
    problem = meta_problem(meta)
    if problem and problem.startswith("it is in checkpoint format"):
        raise CheckpointError(f"{path}: {problem}.")
    if problem:
        raise CheckpointError(f"{path}: its stylezoo metadata is corrupt ({problem}); use another checkpoint.")
    return meta


def _is_table_of_tables(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, dict) for x in v.values())


def meta_problem(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with the shape of a checkpoint's metadata (the keys stylezoo reads), or None."""
    fmt = meta.get("format", FORMAT_VERSION)
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION:
        return (f"it is in checkpoint format {fmt}, which a newer stylezoo wrote; this one reads format "
                f"{FORMAT_VERSION}: upgrade stylezoo (pip install -U stylezoo)")
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        return f"format is {fmt!r}, not a format version"
    step = meta.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"step is {step!r}, not a count"
    comp = meta.get("composition", {})
    if not isinstance(comp, dict) or not all(isinstance(v, str) for k, v in comp.items() if k != "losses") \
            or not isinstance(comp.get("losses", []), list) \
            or not all(isinstance(v, str) for v in comp.get("losses", [])):
        return "composition is not a table of component names"
    for key in ("configs", "optim"):
        if not _is_table_of_tables(meta.get(key, {})):
            return f"{key} is not a table of tables"
    for name, info in meta.get("optim", {}).items():
        if not isinstance(info.get("param_groups", []), list) \
                or not all(isinstance(g, dict) for g in info.get("param_groups", [])) \
                or not _is_table_of_tables(info.get("scalars", {})):
            return f"optim.{name} is not an optimizer state"
    run = meta.get("run", {})
    if not isinstance(run, dict) \
            or not all(isinstance(run.get(k, {}), dict) for k in ("train", "data", "losses", "set")) \
            or not _is_table_of_tables(run.get("set", {})):
        return "run is not a run configuration"
    if not isinstance(meta.get("versions", {}), dict) or not isinstance(meta.get("plugins", {}), dict):
        return "versions or plugins is not a table"
    if not isinstance(meta.get("family", ""), str):
        return "family is not a name"
    return None


_DIST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")  # PEP 508 names


def plugin_hint(meta: Mapping[str, Any], name: str) -> str | None:
    """The distribution that provided component `name` when the checkpoint was written, if known."""
    dist = meta.get("plugins", {}).get(name)
    if not (isinstance(dist, str) and dist and dist != "stylezoo"):
        others = [d for d in meta.get("versions", {}) if d not in ("stylezoo", "torch")]
        dist = others[0] if len(others) == 1 else None
    # only a well-formed distribution name becomes an install hint: never a URL, spaces or shell text
    return dist if isinstance(dist, str) and _DIST_NAME.fullmatch(dist) else None


def require_components(meta: Mapping[str, Any], registry: Any, path: Path) -> None:
    """Refuse a checkpoint naming components no installed plugin provides, saying which plugin to install."""
    from ..errors import UnknownComponentError

    comp, run = meta.get("composition", {}), meta.get("run", {})
    names = [v for k, v in [*comp.items(), *run.items()]
             if k in ("gen", "disc", "feat", "adv", "gp") and v and isinstance(v, str)]  # RunConfig checks the rest
    for name in dict.fromkeys([*names, *comp.get("losses", []), *run.get("losses", {})]):
        try:
            registry.get(name)
        except UnknownComponentError:
            raise missing_component(path, name, plugin_hint(meta, name), registry) from None


def missing_component(path: Path, name: str, dist: str | None, registry: Any) -> CheckpointError:
    """The error for a checkpoint naming a component that no loaded plugin provides, with what to do."""
    why = registry.left_out(dist) if dist and hasattr(registry, "left_out") else None
    if why:
        todo = f"; the plugin package {dist!r} provides it, but {why}"
    else:
        todo = f"; install the plugin package {dist!r} (pip install {dist})" if dist else ""
    return CheckpointError(f"{path} needs the component {name!r}, which no loaded plugin provides{todo}. "
                           "Run `stylezoo plugins` to see what is loaded.")


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint: (tensors, stylezoo metadata). Never unpickles anything."""
    path = _existing(path)
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} could not be read ({e}); it is truncated or corrupt.") from None
    if torch.device(device).type != "cpu":  # a device that fails here is not the file's fault
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def _existing(path: str | Path) -> Path:
    path = Path(path)
    refuse_pickle(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.")
    return path



# safetensors' dtype names (the header's) and torch's
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def tensor_shapes(path: str | Path) -> dict[str, Tensor]:
    """A checkpoint's tensors as meta tensors (their shapes and types, no data), read from the file's header."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta",
                                   dtype=_DTYPES.get(f.get_slice(k).get_dtype(), torch.float32)) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} could not be read ({e}); it is truncated or corrupt.") from None


from .states import (  # noqa: E402,F401  (re-exported: checkpoint's callers read them from here)
    build_checked,
    check_buildable,
    check_module_state,
    check_optimizer_state,
    load_module_state,
    load_optimizer_state,
    match_param_layout,
    optimizer_state,
    prefixed,
    section,
)
