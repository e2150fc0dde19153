"""The component registry: loads plugins through pluggy (lazily, each in isolation) and builds components.

Names are `kind/short` (`gen/dcgan`, `loss/gram`, `gp/r1`); where the kind is known, the short form works.
Registering a name twice is an error that names both plugins; a plugin that fails to import or raises
while registering is recorded in `failures` and the rest of the zoo still works.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import importlib.metadata as md
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pluggy
import tomllib
from torch import nn

from ..errors import (
    DuplicateComponentError,
    PluginError,
    StylezooError,
    UnknownComponentError,
    UsageError,
    did_you_mean,
)
from .config import build_config, check_field_types
from .hookspecs import PROJECT, Spec
from .kinds import KINDS

ENTRY_POINT_GROUP = "stylezoo"
# The built-in plugins, loaded by module name like any plugin (core never imports them). To add one: write
# its module in plugins/ (one file per model family) with a `register_components` hook, list it here and
# describe its components in registry.toml.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "stylezoo.plugins.dcgan",
    "stylezoo.plugins.encdec",
    "stylezoo.plugins.unet",
    "stylezoo.plugins.adain",
    "stylezoo.plugins.wct",
    "stylezoo.plugins.cin",
    "stylezoo.plugins.patchgan",
    "stylezoo.plugins.vgg",
    "stylezoo.plugins.timm_features",
    "stylezoo.plugins.efficientnet",
    "stylezoo.plugins.adversarial",
    "stylezoo.plugins.perceptual",
    "stylezoo.plugins.pixel",
    "stylezoo.plugins.penalties",
)
REGISTRY_TOML = Path(__file__).resolve().parents[2] / "registry.toml"
LIST_HINT = "Run `stylezoo list` to see what exists."


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, how to build it, its config class and its card."""

    name: str
    factory: Callable[[Any], Any]
    config: type
    plugin: str
    dist: str | None = None
    version: str | None = None
    card: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def short(self) -> str:
        return self.name.split("/", 1)[1]

    @property
    def description(self) -> str:
        return str(self.card.get("description", ""))


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    dist: str | None
    version: str | None
    builtin: bool
    components: tuple[str, ...] = ()
    error: str | None = None
    skipped: bool = False  # installed, but left out by STYLEZOO_PLUGINS


_SHORT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def check_name(name: str) -> None:
    """Refuse a name the CLI could not select: `kind/name`, name in lower-case letters, digits, '-' and '_'."""
    kind, sep, short = name.partition("/")
    if not sep or kind not in KINDS or not short or "/" in short:
        raise UsageError(f"Invalid component name {name!r}: use kind/name with kind one of {', '.join(KINDS)}.")
    if not _SHORT_NAME.fullmatch(short):
        raise UsageError(f"Invalid component name {name!r}: after '{kind}/' use lower-case letters, digits, '-' and "
                         "'_' (a ':', '.', ',' or space would clash with --loss NAME:WEIGHT and --set NAME.FIELD).")


def check_config_class(name: str, config: Any) -> None:
    """A component's config must be a dataclass whose every field has a default (the component's defaults)."""
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise UsageError(f"{name}: its config {config!r} is not a dataclass; register a @dataclass whose fields "
                         "hold the component's defaults.")
    missing = [f.name for f in dataclasses.fields(config)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UsageError(f"{name}: config field(s) {', '.join(missing)} of {config.__name__} have no default; every "
                         "field needs one (the component's defaults, shown by `stylezoo info`).")
    try:
        check_field_types(name, config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if name.startswith("loss/") and "weight" not in {f.name for f in dataclasses.fields(config)}:
        raise UsageError(f"{name}: a loss term's config needs a `weight: float` field (its default weight in the "
                         "total loss; --loss NAME:W sets it).")


def load_registry_toml(path: Path = REGISTRY_TOML) -> dict[str, Any]:
    """The catalog data: component cards under [components."kind/name"] and [recipes.NAME]."""
    if not path.exists():
        return {"components": {}, "recipes": {}}
    with path.open("rb") as f:
        data = tomllib.load(f)
    data.setdefault("components", {})
    data.setdefault("recipes", {})
    return data


class Registry:
    """Components from every loaded plugin. Plugins load on first use, not at construction."""

    def __init__(
        self,
        builtins: Iterable[str] | None = None,
        *,
        entry_points: bool = True,
        plugins: Iterable[object] = (),
        catalog: Mapping[str, Any] | None = None,
    ) -> None:
        self._builtin_modules = tuple(BUILTIN_PLUGINS if builtins is None else builtins)
        self._use_entry_points = entry_points
        self._extra = list(plugins)
        self._catalog = dict(catalog) if catalog is not None else None
        self._entries: dict[str, Entry] | None = None
        self.plugins: list[PluginInfo] = []
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(Spec)

    # -- loading ---------------------------------------------------------------------------------------
    @cached_property
    def catalog(self) -> dict[str, Any]:
        return dict(self._catalog) if self._catalog is not None else load_registry_toml()

    @property
    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = {}
            self._load_all()
        return self._entries

    def left_out(self, dist: str | None) -> str | None:
        """Why an installed plugin package `dist` is not loaded (STYLEZOO_PLUGINS), or None."""
        _ = self.entries
        if dist and any(p.skipped and p.dist == dist for p in self.plugins):
            return f"it is installed but STYLEZOO_PLUGINS={os.environ.get('STYLEZOO_PLUGINS', '')!r} leaves it out"
        return None

    @property
    def failures(self) -> list[PluginInfo]:
        _ = self.entries
        return [p for p in self.plugins if p.error]

    def _load_all(self) -> None:
        for modname in self._builtin_modules:
            self._load(modname.rsplit(".", 1)[-1], lambda m=modname: importlib.import_module(m), modname,
                       "stylezoo", True)
        for obj in self._extra:
            name = getattr(obj, "__name__", type(obj).__name__)
            self._load(name, lambda o=obj: o, name, None, False)
        if self._use_entry_points:
            allowed = os.environ.get("STYLEZOO_PLUGINS")
            allow = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()}
            eps = list(md.entry_points(group=ENTRY_POINT_GROUP))
            for ep in eps:
                dist = ep.dist.name if ep.dist else None
                if allow is not None and ep.name not in allow:
                    self.plugins.append(PluginInfo(ep.name, ep.value, dist, _dist_version(dist), False, skipped=True))
                    continue
                self._load(ep.name, ep.load, ep.value, dist, False)
            for name in sorted((allow or set()) - {ep.name for ep in eps}):  # a typo would silently load nothing
                installed = ", ".join(sorted(ep.name for ep in eps)) or "none"
                self.plugins.append(PluginInfo(name, "-", None, None, False, error=(
                    f"STYLEZOO_PLUGINS names {name!r}, but no installed plugin has that entry point name "
                    f"(installed: {installed})")))

    def _load(self, name: str, loader: Callable[..., object], module: str, dist: str | None, builtin: bool) -> None:
        """Import one plugin and run its hook in isolation; record success or failure."""
        version = _dist_version(dist)
        staged: dict[str, Entry] = {}

        def register(cname: str, factory: Any, *, config: type, **card: Any) -> None:
            check_name(cname)
            check_config_class(cname, config)
            if not callable(factory):
                raise UsageError(f"{cname}: its factory {factory!r} is not callable; register a function or class "
                                 "that takes the config and returns an nn.Module.")
            if cname in staged:
                raise DuplicateComponentError(f"{cname!r} is registered twice by plugin {name!r}: register each name "
                                              "once.")
            for taken in (self._entries, staged):
                if taken is not None and cname in taken:
                    other = taken[cname]
                    raise DuplicateComponentError(
                        f"{cname!r} is registered twice: by plugin {other.plugin!r}"
                        f"{f' ({other.dist})' if other.dist else ''} and by plugin {name!r}"
                        f"{f' ({dist})' if dist else ''}. Uninstall one, or limit plugins with STYLEZOO_PLUGINS."
                    )
            merged = {**dict(self.catalog["components"].get(cname, {})), **card}
            staged[cname] = Entry(cname, factory, config, name, dist, version, merged)

        try:
            obj = loader()
            if self.pm.is_registered(obj):
                raise UsageError(f"plugin {name!r} is already registered")
            # pluggy names must be unique; two packages may pick the same entry point name (or a built-in's)
            pm_name = name if self.pm.get_plugin(name) is None else f"{dist or module}:{name}"
            if self.pm.get_plugin(pm_name) is not None:
                raise UsageError(f"another plugin is already registered as {name!r} from {dist or module}")
            self.pm.register(obj, name=pm_name)
            try:
                # call only this plugin's implementation so one plugin's failure is its own; through pluggy,
                # which passes each implementation only the hook arguments it names (a hook argument added
                # in a later stylezoo does not break plugins written before it)
                hook = self.pm.hook.register_components
                if not any(i.plugin is obj for i in hook.get_hookimpls()):
                    raise UsageError(f"plugin {name!r} has no register_components hook")
                others = [p for p in self.pm.get_plugins() if p is not obj]
                self.pm.subset_hook_caller("register_components", remove_plugins=others)(register=register)
            except BaseException:
                self.pm.unregister(obj)
                raise
        except Exception as e:  # a broken plugin never takes the zoo down
            why = " ".join(str(e).split())[:500]  # one line: pluggy's validation errors span several
            self.plugins.append(PluginInfo(name, module, dist, version, builtin, error=f"{type(e).__name__}: {why}"))
            return
        assert self._entries is not None
        self._entries.update(staged)
        self.plugins.append(PluginInfo(name, module, dist, version, builtin, tuple(staged)))

    # -- lookup ------------------------------------------------------------------------------------------
    def resolve(self, name: str, kind: str | None = None) -> str:
        """The full `kind/name` for `name`, accepting the short form when `kind` is given or unambiguous."""
        entries = self.entries
        if name in entries:
            if kind and entries[name].kind != kind:
                raise UnknownComponentError(
                    f"{name!r} is a {KINDS[entries[name].kind]}, not a {KINDS[kind]}. "
                    f"Run `stylezoo list --kind {kind}` to see the {KINDS[kind]}s."
                )
            return name
        if "/" not in name:
            if kind:
                full = f"{kind}/{name}"
                if full in entries:
                    return full
                other = sorted(n for n in entries if n.split("/", 1)[1] == name)
                if other:  # a real component in the wrong role: say what it is
                    what_it_is = " and ".join(f"a {KINDS[entries[o].kind]} ({o})" for o in other)
                    raise UnknownComponentError(
                        f"{name!r} is {what_it_is}, not a {KINDS[kind]}. "
                        f"Run `stylezoo list --kind {kind}` to see the {KINDS[kind]}s.")
            else:
                hits = [n for n in entries if n.split("/", 1)[1] == name]
                if len(hits) == 1:
                    return hits[0]
                if len(hits) > 1:
                    raise UnknownComponentError(
                        f"{name!r} is ambiguous: {', '.join(sorted(hits))}. Use the full kind/name."
                    )
        typed_kind = name.split("/", 1)[0] if "/" in name and name.split("/", 1)[0] in KINDS else None
        near = kind or typed_kind  # suggest names of the kind asked for (or typed) first, then any
        target = name if "/" in name or not kind else f"{kind}/{name}"
        hint = did_you_mean(target, [n for n in entries if near and n.startswith(near + "/")])
        if not hint and not near:  # a typed kind (gen/...) is never answered with another kind's names
            hint = did_you_mean(target, entries)
        what = KINDS[kind] if kind else "component"
        listing = f"Run `stylezoo list --kind {near}`" if near else "Run `stylezoo list`"
        failed = [p.name for p in self.failures]
        extra = f" (plugins that failed to load: {', '.join(failed)}; see `stylezoo plugins`)" if failed else ""
        raise UnknownComponentError(f"Unknown {what} {name!r}.{hint} {listing} to see what exists{extra}.")

    def get(self, name: str, kind: str | None = None) -> Entry:
        return self.entries[self.resolve(name, kind)]

    def names(self, pattern: str = "*", kind: str | None = None) -> list[str]:
        """Registered names matching a shell-style wildcard (matched against both full and short names)."""
        if kind is not None and kind not in KINDS:
            raise UsageError(f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}.{did_you_mean(kind, list(KINDS))}")
        out = []
        for n, e in sorted(self.entries.items()):
            if kind and e.kind != kind:
                continue
            if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(e.short, pattern):
                out.append(n)
        return out

    def recipes(self) -> dict[str, dict[str, Any]]:
        return dict(self.catalog.get("recipes", {}))

    def recipe(self, name: str) -> dict[str, Any]:
        recipes = self.recipes()
        if name not in recipes:
            raise UnknownComponentError(
                f"Unknown recipe {name!r}.{did_you_mean(name, recipes)} Run `stylezoo list --kind recipe` to see them."
            )
        return dict(recipes[name])

    # -- building ----------------------------------------------------------------------------------------
    def make_config(self, name: str, overrides: Mapping[str, Any] | None = None, kind: str | None = None) -> Any:
        entry = self.get(name, kind)
        return build_config(entry.config, overrides, owner=entry.name)

    def build(self, name: str, overrides: Mapping[str, Any] | None = None, *, kind: str | None = None,
              config: Any = None) -> Any:
        """Build a component from its name and config overrides (or a ready config)."""
        entry = self.get(name, kind)
        cfg = config if config is not None else build_config(entry.config, overrides, owner=entry.name)
        try:
            module = entry.factory(cfg)
        except StylezooError:
            raise
        except Exception as e:
            if entry.dist == "stylezoo":  # the built-ins' own failures are bugs: keep their tracebacks
                raise
            why = " ".join(str(e).split())[:300]
            raise PluginError(f"{entry.name} (plugin {entry.plugin!r}{f', {entry.dist}' if entry.dist else ''}) "
                              f"failed to build: {type(e).__name__}: {why}") from e
        if not isinstance(module, nn.Module):
            raise PluginError(f"{entry.name} (plugin {entry.plugin!r}) built a {type(module).__name__}, not a "
                              "torch.nn.Module; its factory must return the module.")
        setattr(module, "stylezoo_name", entry.name)  # so checkpoints and logs can name it
        return module


def _dist_version(dist: str | None) -> str | None:
    if not dist:
        return None
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry with built-ins and installed entry-point plugins."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def reset_default_registry() -> None:
    global _default
    _default = None
