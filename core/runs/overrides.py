"""The layers a run's configuration is resolved from, before it becomes a RunConfig: recipes and config files
(TOML tables), flags, `--set ROLE.FIELD=VALUE` and `--loss NAME:WEIGHT`. Later layers win (`merge`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import tomllib

from ..components.config import MAX_DEPTH, nesting
from ..components.registry import Registry
from ..errors import ConfigError, UnknownComponentError, did_you_mean

log = logging.getLogger("stylezoo")

ROLES = ("gen", "disc", "feat", "adv", "gp")
# loss-term fields that name an extractor's layers: a lower layer's values go when the extractor changes
EXTRACTOR_FIELDS = ("layers", "layer_weights")
ROLE_KIND = {"gen": "gen", "disc": "disc", "feat": "feat", "adv": "loss", "gp": "gp"}


def merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Merge a recipe/config-file/CLI layer into a run dict (tables merge key by key; losses replace)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    # a layer's losses first, its components next, then its own overrides (which the components' reset keeps)
    for k in sorted(layer, key=lambda k: (k != "losses", k == "set")):
        v = layer[k]
        if k == "losses" and isinstance(v, dict):
            # new terms replace the old: the lower layers' overrides of terms no longer in the run go too
            keep = {n.split("/", 1)[-1] for n in v}
            out["set"] = {r: o for r, o in out.get("set", {}).items() if r in ROLES or r.split("/", 1)[-1] in keep}
            out[k] = v
        elif k in ("train", "data"):
            out[k] = {**out.get(k, {}), **v}
            if k == "train" and "steps" in v and "epochs" not in v:
                out[k]["epochs"] = 0.0  # a run's length given in steps beats a lower layer's epochs
        elif k == "set":
            s = {r: dict(o) for r, o in out.get("set", {}).items()}
            for role, ov in v.items():
                s[role] = {**s.get(role, {}), **ov}
            out["set"] = s
        else:
            if k in ROLES and not _same_component(k, v, out.get(k)):
                # a different component for a role: the lower layers' overrides were for the old one
                out.get("set", {}).pop(k, None)
                if k == "feat":  # and the loss terms' layers named the old extractor's layers
                    out["set"] = {r: {f: x for f, x in o.items() if r in ROLES or f not in EXTRACTOR_FIELDS}
                                  for r, o in out.get("set", {}).items()}
            out[k] = v
    return out


def base_recipe(reg: Registry, recipe: str | None, file_layer: dict[str, Any], cli: dict[str, Any],
                config_file: str | Path | None = None) -> str:
    """The recipe a run builds on: `--recipe`, else the config file's `recipe`, else the recipe that the card
    of the generator picked (`--gen adain`: `recipe = "adain"`) names, with a note saying so; else "default"."""
    file_recipe = file_layer.get("recipe")  # a run's own config.toml names the recipe it builds on
    if recipe and file_recipe and file_recipe != recipe:
        raise ConfigError(f"--recipe {recipe} and the config file's recipe = {file_recipe!r} ({config_file}) "
                          "disagree: drop --recipe, or change the file.")
    if recipe or file_recipe:
        return str(recipe or file_recipe)
    gen = cli.get("gen") or file_layer.get("gen")
    if not isinstance(gen, str) or not gen or gen == "none":
        return "default"
    full = reg.resolve(gen, "gen")
    own = reg.get(full).card.get("recipe")
    if not own:
        return "default"
    if str(own) not in reg.recipes():
        raise ConfigError(f"{full}'s card names the recipe {own!r}, which is not one (`stylezoo list --kind recipe`): "
                          "give --recipe NAME.")
    log.info("--gen %s: building on its recipe %s (its losses, discriminator and training options); choose another "
             "with --recipe NAME (`stylezoo list --kind recipe`)", gen, own)
    return str(own)


def _same_component(role: str, a: Any, b: Any) -> bool:
    """`encdec` and `gen/encdec` in the gen role are the same component (the CLI takes the short form)."""

    def full(name: Any) -> Any:
        if isinstance(name, str) and name and "/" not in name:
            return f"{ROLE_KIND[role]}/{name}"
        return name

    return bool(full(a) == full(b))


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set gen.channels=128 --set train.lr=2e-4 --set loss/gram.layers=relu1_1,relu2_1` as a run layer."""
    layer: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise ConfigError(f"--set {item!r}: use ROLE.FIELD=VALUE, e.g. --set gen.channels=64 or "
                              "--set train.lr=2e-4.")
        role, fname = key.rsplit(".", 1) if key.startswith("loss/") else key.split(".", 1)
        role = role.strip()
        if role in ("train", "data"):
            layer.setdefault(role, {})[fname] = value
        else:
            layer.setdefault("set", {}).setdefault(role, {})[fname] = value
    return layer


def parse_losses(items: list[str]) -> dict[str, float | None]:
    """`--loss gram:1e5 --loss content` as {name: weight or None for the term's default}."""
    out: dict[str, float | None] = {}
    for item in items:
        name, colon, w = item.partition(":")
        if colon:
            try:
                out[name] = float(w)
            except ValueError:
                raise ConfigError(f"--loss {item!r}: the weight after ':' must be a number.") from None
        else:
            out[name] = None
    return out


def loss_layer(reg: Registry, layers: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """`layers` with `--loss` applied: the terms given replace the lower layers' (`--loss none`: no terms at all,
    adversarial loss only, as a config file's `losses = {}`), and the lower layers' overrides of terms no longer
    in the run go, as do the weights of terms given one here (--loss gram:5 beats a lower layer's gram.weight)."""
    parsed = parse_losses(items)
    if "none" in parsed:
        if len(parsed) > 1 or parsed["none"] is not None:
            raise ConfigError("--loss none drops every loss term of the recipe (adversarial loss only): give it "
                              "alone, without a weight, or give the terms you want instead.")
        parsed = {}
    kept = {reg.resolve(k, "loss") for k in parsed}
    weighted = {reg.resolve(k, "loss") for k, w in parsed.items() if w is not None}
    sets = {r: ov if r in ROLES or _set_loss_name(reg, r) not in weighted
            else {f: v for f, v in ov.items() if f != "weight"}
            for r, ov in dict(layers.get("set", {})).items()
            if r in ROLES or _set_loss_name(reg, r) in kept}
    return {**layers, "losses": dict(parsed), "set": sets}


def _set_loss_name(reg: Registry, role: str) -> str:
    """The full name of a loss term named in `--set ROLE.FIELD=...`, or an error listing what ROLE can be."""
    try:
        return reg.resolve(role, "loss")
    except UnknownComponentError:
        losses = reg.names(kind="loss")
        raise ConfigError(f"--set {role}.…: {role!r} is neither a role ({', '.join(ROLES)}, train, data) nor a loss "
                          f"term.{did_you_mean(role, [*ROLES, 'train', 'data', *losses])} "
                          "Run `stylezoo list --kind loss` to see the loss terms.") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--config {p} is a folder: give a TOML file (a run's config.toml, for instance).")
    if not p.is_file():
        raise ConfigError(f"--config {p}: no such file.")
    try:
        with p.open("rb") as f:
            layer = tomllib.load(f)
    except UnicodeDecodeError:
        raise ConfigError(f"--config {p}: not a text file (TOML is UTF-8 text, like a run's config.toml).") from None
    except (tomllib.TOMLDecodeError, ValueError) as e:  # ValueError: an integer of thousands of digits
        raise ConfigError(f"--config {p}: not valid TOML ({' '.join(str(e).split())[:200]}).") from None
    except RecursionError:
        raise ConfigError(f"--config {p}: nested too deeply to be a stylezoo config (at most {MAX_DEPTH} "
                          "levels).") from None
    if nesting(layer) > MAX_DEPTH:
        raise ConfigError(f"--config {p}: nested too deeply to be a stylezoo config (at most {MAX_DEPTH} levels).")
    check_layer(layer, f"--config {p}")
    return layer


def check_layer(layer: dict[str, Any], where: str) -> None:
    """Refuse values of the wrong shape in a run layer (a config file, a checkpoint's run) in one line."""
    for k in ("recipe", *ROLES):
        if k in layer and not isinstance(layer[k], str):
            raise ConfigError(f"{where}: {k} must be a name in quotes, got {layer[k]!r}.")
    for k in ("train", "data", "losses", "set"):
        if k in layer and not isinstance(layer[k], dict):
            raise ConfigError(f"{where}: {k} must be a table ([{k}] with KEY = VALUE lines), got {layer[k]!r}.")
    for name, w in layer.get("losses", {}).items():
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise ConfigError(f"{where}: the weight of loss {name!r} must be a number, got {w!r}.")
    for role, ov in layer.get("set", {}).items():
        if not isinstance(ov, dict):
            raise ConfigError(f"{where}: set.{role} must be a table of FIELD = VALUE, got {ov!r}.")
