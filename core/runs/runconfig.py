"""What a run is: the composition (component names, loss weights, config overrides), training options and
data, resolved from dataclass defaults < registry.toml recipe < --config FILE.toml < CLI flags < --set.

The resolved RunConfig is written to the run's config.toml and into every checkpoint's metadata, so
`--resume` and `stylize` need no flags.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..components.config import build_config, config_to_dict
from ..components.registry import Registry
from ..errors import CompositionError, ConfigError, did_you_mean
from .overrides import (  # noqa: F401  (re-exported: they were defined here)
    EXTRACTOR_FIELDS,
    ROLE_KIND,
    ROLES,
    _same_component,
    _set_loss_name,
    base_recipe,
    check_layer,
    load_config_file,
    loss_layer,
    merge,
    parse_losses,
    parse_set,
)

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
SINKS = ("tensorboard",)  # train.log's names: where figures go besides metrics.jsonl (core/training/logsinks.py)


@dataclass
class TrainConfig:
    size: int = 128  # side of the training images (and of noise generators' output)
    batch: int = 4  # global batch size (split across processes when distributed)
    steps: int = 200  # total optimisation steps (--resume continues up to this)
    epochs: float = 0.0  # if > 0, overrides steps: epochs over the generator's input set
    lr: float = 1e-3  # generator learning rate (the original design's Adam 1e-3)
    lr_d: float = 0.0  # discriminator learning rate; 0 = same as lr
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas for both optimisers
    # fraction of the steps, at the end, over which both learning rates fall linearly towards 0
    # (pix2pix decays over its second half: 0.5); 0 = constant
    lr_decay: float = 0.0
    d_steps: int = 1  # discriminator updates per generator update, each on its own batch of images and fakes
    # decay of an exponential moving average of the generator's weights (0.999 averages about the last
    # 1000 steps); samples, evaluation, stylize and export then use the average. 0 = off
    ema: float = 0.0
    seed: int = 0  # everything random derives from (seed, step)
    # bf16 = bfloat16 autocast; auto = bf16 where the device has fast bfloat16 (CPUs with avx512_bf16/AMX,
    # CUDA GPUs from Ampere on), else fp32: faster steps at the same losses and samples on such devices
    # (docs/benchmarks.md). Loss terms and gradient penalties compute in float32 inside.
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    # memory format for convolutions: true, false, or "auto" = the faster one measured per device
    # (benchmarks/speed.py --ablation): channels_last on CUDA, contiguous on CPU. "extractor": the feature
    # extractor alone channels_last: faster CPU bf16 steps but a slightly weaker style (docs/benchmarks.md)
    channels_last: bool | Literal["auto", "extractor"] = "auto"
    compile: bool = False  # torch.compile the generator and discriminator
    # CPU: glibc's malloc keeps freed memory for reuse instead of returning it, so steps do not page-fault
    # their tensors back in (core/runtime/cpu_memory.py; docs/benchmarks.md). Process-wide; off = glibc's default
    keep_freed_memory: bool = True
    device: str = "auto"  # auto = cuda when available, else cpu
    sample_every: int = 50  # steps between sample grids (0 = only the final one)
    ckpt_every: int = 100  # steps between kept checkpoints (last.safetensors is written at each of them)
    ckpt_minutes: float = 10.0  # last.safetensors at least this often between them too (0: by steps only)
    log_every: int = 10  # steps between metrics.jsonl lines
    max_bad_steps: int = 5  # consecutive steps with a NaN/Inf loss or gradient before the run stops
    style_size: int = 0  # side for style images when computing style targets (0 = 2 * size, max 512)
    num_samples: int = 8  # images in each sample grid
    eval_every: int = 0  # steps between evaluations (core/evaluation/evaluate.py), logged as eval/... (0 = off)
    eval_metric: str = "style_gram"  # the metric best.safetensors is kept by (see core/ops/metrics.py METRICS)
    eval_holdout: int = 4  # content images held aside for evaluation, not trained on (image generators; at most half)
    log: tuple[str, ...] = ()  # also log to these SINKS ("tensorboard": RUN/tb/); metrics.jsonl is always written

    def __post_init__(self) -> None:
        checks = [("size", self.size >= 8, "at least 8"), ("batch", self.batch >= 1, "at least 1"),
                  ("steps", self.steps >= 1, "at least 1"), ("lr", self.lr > 0, "positive"),
                  ("lr_d", self.lr_d >= 0, "0 (same as lr) or positive"),
                  ("lr_decay", 0 <= self.lr_decay <= 1, "between 0 and 1"),
                  ("d_steps", self.d_steps >= 1, "at least 1"),
                  ("ema", 0 <= self.ema < 1, "0 (off) or a decay in (0, 1), e.g. 0.999"),
                  ("epochs", self.epochs >= 0, "0 or positive"),
                  ("max_bad_steps", self.max_bad_steps >= 1, "at least 1"),
                  ("num_samples", self.num_samples >= 1, "at least 1"),
                  ("eval_every", self.eval_every >= 0, "0 (off) or positive"),
                  ("eval_holdout", self.eval_holdout >= 1, "at least 1"),
                  ("sample_every", self.sample_every >= 0, "0 (only the final grid) or positive"),
                  ("ckpt_every", self.ckpt_every >= 0, "0 (only the final checkpoint) or positive"),
                  ("ckpt_minutes", self.ckpt_minutes >= 0, "0 (checkpoints by steps only) or positive"),
                  ("log_every", self.log_every >= 1, "at least 1"),
                  ("style_size", self.style_size == 0 or self.style_size >= 8, "0 (automatic) or at least 8")]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"train.{name} must be {want}, got {getattr(self, name)!r}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train.betas must be in [0, 1), got {self.betas}")
        unknown = [s for s in self.log if s not in SINKS]
        if unknown:
            raise ValueError(f"train.log: unknown sink {unknown[0]!r}; known: {', '.join(SINKS)} (metrics.jsonl is "
                             f"always written).{did_you_mean(unknown[0], SINKS)}")
        from ..ops.metrics import METRICS

        ranked = [k for k, m in METRICS.items() if m.direction is not None]
        if self.eval_metric not in ranked:
            raise ValueError(f"train.eval_metric must be one of {', '.join(ranked)}, got {self.eval_metric!r}."
                             f"{did_you_mean(self.eval_metric, ranked)}")


@dataclass
class DataConfig:
    content: str = ""  # generator inputs for image-to-image generators (file, folder or glob)
    data: str = ""  # images the discriminator learns as real (noise family: what to generate); "" = style images
    style: str = ""  # style image(s) whose Gram/moment statistics the style losses match
    pairs: str = ""  # paired data: a folder with photo/ + sketch/ (or two sub-folders), matched by file stem
    input: str = ""  # paired data given as two folders: the generator inputs ...
    target: str = ""  # ... and their targets (same file names); use these or `pairs`, not both
    strict: bool = False  # refuse unreadable images instead of skipping them with a warning
    # decoded images are kept in memory up to about this many MB per image set; larger sets are decoded
    # per draw by worker threads, the next step's batch while the current step trains
    cache_mb: float = 4096
    # scale jitter: training images are resized so their shorter side is zoom x size, then randomly cropped
    # to size (and flipped); 1 = no zoom, whole aligned faces as at test time; 0 = automatic (2 for fewer
    # than 8 images, so a painting gives varied crops; else 1.125, pix2pix's 286/256)
    zoom: float = 0.0

    def __post_init__(self) -> None:
        if self.zoom != 0 and self.zoom < 1:
            raise ValueError(f"data.zoom must be 0 (automatic) or >= 1, got {self.zoom}")

    @property
    def paired(self) -> bool:
        """True when the run trains on (input, target) pairs."""
        return bool(self.pairs or self.input or self.target)

    def absolute(self) -> DataConfig:
        """A copy with relative paths and globs made absolute (against the current directory), so that a run's
        config.toml names the same images wherever it is resumed or evaluated from."""
        paths: dict[str, Any] = {k: _absolute(getattr(self, k)) for k in _PATH_FIELDS}
        return dataclasses.replace(self, **paths)

    def resolved(self) -> DataConfig:
        values: dict[str, Any] = {f.name: _expand(getattr(self, f.name)) if isinstance(getattr(self, f.name), str)
                                  else getattr(self, f.name) for f in dataclasses.fields(self)}
        return DataConfig(**values)


_PATH_FIELDS = ("content", "data", "style", "pairs", "input", "target")


def _absolute(spec: str) -> str:
    if not spec or spec.startswith("samples:"):
        return spec
    return os.path.abspath(os.path.expanduser(spec))


def _expand(spec: str) -> str:
    """`samples:style/starry_night.jpg` names the images bundled with stylezoo."""
    if spec.startswith("samples:"):
        return str(SAMPLES / spec.removeprefix("samples:"))
    return spec


@dataclass
class RunConfig:
    """A whole run: composition, per-component overrides, training options and data."""

    recipe: str = "default"
    gen: str = "gen/encdec"
    disc: str = "disc/patch"  # "" = no discriminator (then no adversarial loss)
    feat: str = "feat/vgg16"  # "" = no extractor (then no perceptual losses)
    adv: str = "loss/lsgan"  # adversarial loss; "" = none
    gp: str = "gp/none"
    losses: dict[str, float] = field(default_factory=dict)  # loss term name -> weight
    set: dict[str, dict[str, Any]] = field(default_factory=dict)  # role or loss name -> config overrides
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        d = {r: getattr(self, r) for r in ("recipe", *ROLES)}
        d["losses"] = dict(self.losses)
        d["set"] = {k: dict(v) for k, v in self.set.items()}
        d["train"] = config_to_dict(self.train)
        d["data"] = config_to_dict(self.data)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        check_layer(d, "run")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known - {"description"}
        if unknown:
            k = sorted(unknown)[0]
            raise ConfigError(f"Unknown run key {k!r}.{did_you_mean(k, known)} Valid keys: {', '.join(sorted(known))}.")
        kw = {k: v for k, v in d.items() if k in known}
        kw["train"] = build_config(TrainConfig, d.get("train", {}), owner="train")
        kw["data"] = build_config(DataConfig, d.get("data", {}), owner="data")
        kw["losses"] = {str(k): float(v) for k, v in dict(d.get("losses", {})).items()}
        kw["set"] = {str(k): dict(v) for k, v in dict(d.get("set", {})).items()}
        return cls(**kw)


def resolve(reg: Registry, *, recipe: str | None = None, config_file: str | Path | None = None,
            cli: dict[str, Any] | None = None, sets: list[str] | None = None,
            losses: list[str] | None = None) -> RunConfig:
    """Resolve a run from its layers and validate names, keys, types and the composition before any work."""
    _check_length_given_once(cli or {}, sets or [])
    file_layer = load_config_file(config_file) if config_file else {}
    rname = base_recipe(reg, recipe, file_layer, cli or {}, config_file)

    def full_names(layer: dict[str, Any]) -> dict[str, Any]:
        """The layer with its `set` keys for loss terms in full (`gram` -> `loss/gram`), so that a later
        layer's override of a term replaces an earlier one's whichever form each used."""
        if not isinstance(layer.get("set"), dict):
            return layer
        out: dict[str, Any] = {}
        for r, ov in layer["set"].items():
            k = r if r in ROLES else _set_loss_name(reg, r)
            out[k] = {**out[k], **ov} if k in out and isinstance(ov, dict) else ov
        return {**layer, "set": out}

    layers: dict[str, Any] = {"recipe": rname}
    layers = merge(layers, full_names({k: v for k, v in reg.recipe(rname).items() if k != "description"}))
    if file_layer:
        layers = merge(layers, full_names(file_layer))
    if cli:
        layers = merge(layers, full_names(cli))
    if losses:
        layers = loss_layer(reg, layers, losses)
    if sets:
        layers = merge(layers, full_names(parse_set(sets)))
    # resolve names (short forms allowed) and default loss weights
    for role in ROLES:
        if layers.get(role) == "none" and f"{ROLE_KIND[role]}/none" in reg.names(kind=ROLE_KIND[role]):
            layers[role] = f"{ROLE_KIND[role]}/none"  # `--gp none` is the registered gp/none
        elif layers.get(role) in (None, "none"):
            layers[role] = ""
        if layers.get(role):
            layers[role] = reg.resolve(layers[role], ROLE_KIND[role])
    # --set roles may name a loss by its short name
    sets_: dict[str, Any] = {}
    for role, ov in dict(layers.get("set", {})).items():
        if role not in ROLES:
            role = _set_loss_name(reg, role)
        sets_[role] = {**sets_.get(role, {}), **ov}
    # loss weights: `--set loss/NAME.weight=W` (the last layer) wins over --loss NAME:W and the recipe's
    weights: dict[str, float] = {}
    for name, w in dict(layers.get("losses", {})).items():
        full = reg.resolve(name, "loss")
        ov = sets_.get(full, {})
        if "weight" in ov:
            w = ov.pop("weight")
        elif w is None:
            w = reg.make_config(full, ov).weight
        try:
            weights[full] = float(w)
        except (TypeError, ValueError):
            raise ConfigError(f"--set {full}.weight={w!r}: the weight of a loss must be a number.") from None
    layers["losses"] = weights
    layers["set"] = {r: ov for r, ov in sets_.items() if ov or r in ROLES}
    rc = RunConfig.from_dict(layers)
    rc = dataclasses.replace(rc, data=rc.data.absolute())
    validate(reg, rc)
    # the overrides as their fields' types (config.toml then says channels = 8, not channels = "8")
    rc.set = {role: {k: v for k, v in config_to_dict(component_config(reg, rc, role)).items() if k in ov}
              for role, ov in rc.set.items()}
    return rc


def _check_length_given_once(cli: dict[str, Any], sets: list[str]) -> None:
    """Refuse a run's length given on the command line both in steps and in epochs through --set (`--steps` with
    `--set train.epochs=E` let the epochs win without a word), as `stylezoo run` refuses --steps with --epochs."""
    flags, set_train = dict(cli.get("train") or {}), parse_set(sets).get("train", {})
    given = [f"--set train.{k}" if k in set_train else f"--{k}" for k in ("steps", "epochs")
             if k in set_train or k in flags]
    if set_train.keys() & {"steps", "epochs"} and len(given) == 2:
        raise ConfigError(f"Give the run's length as --steps or as --epochs, not both ({given[0]} and {given[1]} "
                          "were given).")


def checked(reg: Registry, rc: RunConfig) -> RunConfig:
    """A RunConfig built in Python (not by `resolve`) as `resolve` would leave it: names in full
    (`encdec` -> `gen/encdec`, losses and --set keys too) and the composition validated."""
    roles: dict[str, str] = {}
    for role in ROLES:
        name, kind = getattr(rc, role), ROLE_KIND[role]
        if name == "none":
            name = f"{kind}/none" if f"{kind}/none" in reg.names(kind=kind) else ""
        roles[role] = reg.resolve(name, kind) if name else ""
    losses = {reg.resolve(n, "loss"): float(w) for n, w in rc.losses.items()}
    sets: dict[str, dict[str, Any]] = {}
    for role, ov in rc.set.items():
        key = role if role in ROLES else _set_loss_name(reg, role)
        sets[key] = {**sets.get(key, {}), **ov}
    out = dataclasses.replace(rc, gen=roles["gen"], disc=roles["disc"], feat=roles["feat"], adv=roles["adv"],
                              gp=roles["gp"], losses=losses, set=sets)
    validate(reg, out)
    # the overrides as their fields' types, as resolve() leaves them ("8" -> 8)
    out.set = {role: {k: v for k, v in config_to_dict(component_config(reg, out, role)).items() if k in ov}
               if ov and (role not in ROLES or getattr(out, role)) else ov for role, ov in out.set.items()}
    return out


def with_steps(train: TrainConfig, steps: int) -> TrainConfig:
    """`train` with a new length in steps (`--steps`, which beats epochs); a bad value is a ConfigError."""
    try:
        return dataclasses.replace(train, steps=steps, epochs=0.0)
    except ValueError as e:
        raise ConfigError(f"--steps {steps}: {e}.") from None


def component_config(reg: Registry, rc: RunConfig, role_or_loss: str) -> Any:
    """The resolved config of one component of the run (size and weights filled in from the run)."""
    name = getattr(rc, role_or_loss) if role_or_loss in ROLES else role_or_loss
    entry = reg.get(name)
    ov = dict(rc.set.get(role_or_loss, {}))
    fields = {f.name for f in dataclasses.fields(entry.config)}
    if "size" in fields and "size" not in ov and role_or_loss in ("gen", "disc"):
        ov["size"] = rc.train.size
    if role_or_loss in rc.losses and "weight" in fields:
        ov["weight"] = rc.losses[role_or_loss]
    return build_config(entry.config, ov, owner=name)


def validate(reg: Registry, rc: RunConfig) -> None:
    """Refuse incompatible compositions and bad configs before any work is done."""
    for role in rc.set:
        if role not in ROLES and role not in rc.losses:
            raise ConfigError(f"--set {role}.…: {role!r} is not part of this run (roles: {', '.join(ROLES)}, "
                              f"losses: {', '.join(rc.losses) or 'none'}).")
    for role in ROLES:
        if getattr(rc, role):
            component_config(reg, rc, role)
        elif role in rc.set and rc.set[role]:
            raise ConfigError(f"--set {role}.…: this run has no {role}.")
    for name in rc.losses:
        e = reg.get(name, "loss")
        if e.card.get("role") == "adversarial" or getattr(e.factory, "adversarial", False):
            raise CompositionError(f"{name} is an adversarial loss: pass it as --adv {e.short}, not --loss.")
        component_config(reg, rc, name)
    if rc.adv:
        e = reg.get(rc.adv)
        if not (e.card.get("role") == "adversarial" or getattr(e.factory, "adversarial", False)):
            raise CompositionError(f"--adv {rc.adv} is not an adversarial loss. Run `stylezoo list --kind loss`.")
        if not rc.disc:
            raise CompositionError(f"--adv {rc.adv} needs a discriminator: add --disc patch (or --adv none).")
    elif rc.disc:
        raise CompositionError(f"--disc {rc.disc} needs an adversarial loss: add --adv lsgan (or --disc none).")
    elif not rc.losses:
        raise CompositionError(f"Nothing would train {rc.gen}: this run has no adversarial loss and no loss terms; "
                               "add --loss NAME, or --disc and --adv.")
    # `--gp none` (no penalty component) is held to gp/none's card: a WGAN critic needs some penalty
    gp = rc.gp or ("gp/none" if rc.adv and "gp/none" in reg.names(kind="gp") else "")
    for name in [gp, *rc.losses]:
        if not name or (name == "gp/none" and not rc.adv):
            continue
        compat = reg.get(name).card.get("compatible")
        if compat and not rc.adv and name.startswith("gp/"):
            raise CompositionError(f"{name} penalises the discriminator; this run has none (add --disc and --adv).")
        if compat and rc.adv and rc.adv not in compat:
            if name == "gp/none":
                fits = [reg.get(n).short for n in reg.names(kind="gp") if n != name
                        and rc.adv in (reg.get(n).card.get("compatible") or (rc.adv,))]
                raise CompositionError(f"{rc.adv} needs a gradient penalty, not gp/none: "
                                       f"add --gp {' or --gp '.join(fits)}.")
            raise CompositionError(f"{name} is not valid with {rc.adv}; it works with {', '.join(compat)}.")
    family = reg.get(rc.gen).card.get("family") or getattr(reg.get(rc.gen).factory, "family", None)
    paired = validate_pairs(reg, rc, family)
    for name in rc.losses:
        needs: frozenset[str] = getattr(reg.get(name).factory, "needs", frozenset())
        if any(n.startswith("feats") for n in needs) and not rc.feat:
            raise CompositionError(f"{name} needs a feature extractor: add --feat vgg16.")
        if "style" in needs and not (rc.data.style or rc.data.data or paired):
            raise CompositionError(f"{name} needs style images: add --style FILE_OR_DIR.")
    if family == "image" and not (rc.data.content or paired):
        raise CompositionError(f"{rc.gen} restyles images: give them with --content DIR.")
    gen_entry = reg.get(rc.gen)
    conditional = getattr(gen_entry.factory, "needs_style", False) or \
        "num_labels" in {f.name for f in dataclasses.fields(gen_entry.config)}
    if conditional and not rc.data.style:  # reference-guided (gen/adain) or label-conditioned (gen/cin)
        raise CompositionError(f"{rc.gen} learns from style images: give them with --style DIR.")
    if family == "noise" and rc.adv and not (rc.data.data or rc.data.content):
        raise CompositionError(f"{rc.gen} learns from real images: give them with --data DIR.")


def validate_pairs(reg: Registry, rc: RunConfig, family: str | None) -> bool:
    """Check the paired-data options against the composition.

    True when the run is paired or its composition asks for pairs (a loss that reads the target, a
    conditional discriminator). Then the pairs themselves are checked when the run starts, so recipes
    such as `portrait-sketch` resolve without data and `--pairs DIR` is given at run time.
    """
    d = rc.data
    if d.pairs and (d.input or d.target):
        raise ConfigError("Give paired data either as --pairs DIR or as --input DIR --target DIR, not both.")
    if bool(d.input) != bool(d.target):
        missing = "--target" if d.input else "--input"
        raise ConfigError(f"Paired data needs both --input and --target: add {missing} DIR (files matched by name).")
    cond = int(getattr(component_config(reg, rc, "disc"), "cond_channels", 0) or 0) if rc.disc else 0
    wants = cond > 0 or any("target" in getattr(reg.get(n).factory, "needs", frozenset()) for n in rc.losses)
    if (d.paired or wants) and family == "noise":
        raise CompositionError(f"{rc.gen} generates from noise; paired data and paired losses need an image "
                               "generator (e.g. --gen unet).")
    if cond and cond != 3:
        raise CompositionError(f"{rc.disc}: cond_channels={cond}, but its condition is the RGB input image: "
                               "set disc.cond_channels=3 (or 0 for an unconditional discriminator).")
    return d.paired or wants
