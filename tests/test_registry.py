"""The registry: lookup, wildcards, plugin isolation and failures, config overrides, entry points."""

from __future__ import annotations

import importlib.metadata as md
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import torch

import stylezoo
from stylezoo.core.components import registry as registry_mod
from stylezoo.core.components.config import build_config
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import StepContext
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import (
    ConfigError,
    DuplicateComponentError,
    StylezooError,
    UnknownComponentError,
    UsageError,
)

# ------------------------------------------------------------------------------------------ lookup


def test_plugins_load_lazily_on_first_use(bare_registry, fake_component):
    FakeModule, FakeConfig = fake_component
    calls = []
    mod = types.ModuleType("lazy")

    @hookimpl
    def register_components(register):
        calls.append(1)
        register("gen/lazy", FakeModule, config=FakeConfig)

    mod.register_components = register_components
    reg = bare_registry(mod)
    assert calls == [] and reg.plugins == []
    assert reg.names() == ["gen/lazy"]
    assert reg.names("gen/*") == ["gen/lazy"]
    assert calls == [1]  # loaded once, not per lookup


def test_short_names_resolve_when_kind_is_given(bare_registry, make_plugin):
    reg = bare_registry(make_plugin("acme", ["gen/twin", "disc/twin", "loss/solo"]))
    assert reg.resolve("twin", kind="gen") == "gen/twin"
    assert reg.resolve("twin", kind="disc") == "disc/twin"
    assert reg.resolve("solo") == "loss/solo"  # unambiguous without a kind
    assert reg.get("gen/twin").plugin == "acme"
    with pytest.raises(UnknownComponentError, match="ambiguous.*disc/twin.*gen/twin"):
        reg.resolve("twin")
    with pytest.raises(UnknownComponentError, match="not a discriminator"):
        reg.resolve("gen/twin", kind="disc")


def test_wildcards_match_full_and_short_names(bare_registry, make_plugin):
    reg = bare_registry(make_plugin("acme", ["feat/vgg16", "feat/vgg19", "feat/timm", "gen/vggish", "gen/x"]))
    assert reg.names("vgg*") == ["feat/vgg16", "feat/vgg19", "gen/vggish"]
    assert reg.names("vgg*", kind="feat") == ["feat/vgg16", "feat/vgg19"]
    assert reg.names("gen/*") == ["gen/vggish", "gen/x"]
    assert reg.names("*") == sorted(reg.entries)
    assert reg.names("nothing*") == []


def test_real_registry_wildcards(registry):
    assert registry.names("gen/*") == [n for n in sorted(registry.entries) if n.startswith("gen/")]
    assert registry.names("vgg*") == ["feat/vgg16", "feat/vgg19"]
    discs = registry.names("*gan*", kind="disc")
    assert "disc/dcgan" in discs and all(n.startswith("disc/") and "gan" in n for n in discs)
    assert stylezoo.list_components("loss/*") == registry.names("loss/*")
    with pytest.raises(UsageError, match="Unknown kind 'generator'.*gen"):  # not a silent []
        stylezoo.list_components(kind="generator")


def test_unknown_name_suggests_and_points_at_the_listing(bare_registry, make_plugin):
    reg = bare_registry(make_plugin("acme", ["gen/dcgan", "gen/encdec", "loss/gram"]))
    with pytest.raises(UnknownComponentError) as exc:
        reg.get("gen/dcgn")
    msg = str(exc.value)
    assert "Did you mean 'gen/dcgan'" in msg and "stylezoo list" in msg
    assert exc.value.exit_code == 2 and "\n" not in msg
    with pytest.raises(UnknownComponentError, match=r"Did you mean 'gen/dcgan'.*stylezoo list --kind gen"):
        reg.resolve("dcgn", kind="gen")
    with pytest.raises(UnknownComponentError, match="stylezoo list") as exc:
        reg.get("gen/zzzzzzzz")
    assert "Did you mean" not in str(exc.value)


def test_did_you_mean_compares_names_after_their_kind() -> None:
    from stylezoo.core.errors import did_you_mean

    # every gen/ name shares 'gen/': compared whole, 'gen/cin' looked close to 'gen/dcgn'
    assert did_you_mean("gen/dcgn", ["gen/dcgan", "gen/cin", "gen/adain", "gen/encdec"]) == " Did you mean 'gen/dcgan'?"
    assert did_you_mean("fid", ["fid_effl0", "kid_effl0"]) == " Did you mean 'fid_effl0'?"  # a typed prefix
    assert did_you_mean("vgg", ["feat/vgg16", "feat/vgg19", "feat/efficientnet-lite0"]) == \
        " Did you mean 'feat/vgg16' or 'feat/vgg19'?"
    assert did_you_mean("nosuchfield", ["channels", "out_channels", "n_res"]) == ""
    # a shared 'loss/' alone is not closeness: nothing here is near 'patch'
    assert did_you_mean("loss/patch", ["loss/tv", "loss/bce", "loss/wgan", "loss/gram"]) == ""
    # short names one letter apart are close ('r3' and 'r1' have a ratio of 0.5)
    assert did_you_mean("gp/r3", ["gp/r1", "gp/wgan-gp", "gp/dragan", "gp/none"]) == " Did you mean 'gp/r1'?"


def test_a_typed_kind_is_never_answered_with_another_kinds_names() -> None:
    """`build("gen/nonexist")` suggested gp/none; `--gp r3` suggested nothing."""
    reg = Registry(entry_points=False)
    with pytest.raises(UnknownComponentError) as e:
        reg.get("gen/nonexist")
    assert "Did you mean" not in str(e.value) and "stylezoo list --kind gen" in str(e.value)
    with pytest.raises(UnknownComponentError, match=r"Did you mean 'gp/r1'\?"):
        reg.resolve("r3", kind="gp")
    with pytest.raises(UnknownComponentError, match=r"Did you mean 'gen/dcgan'\?"):
        reg.get("gen/dcgn")


def test_a_real_component_in_the_wrong_role_is_named_for_what_it_is(bare_registry, make_plugin):
    reg = bare_registry(make_plugin("acme", ["gen/dcgan", "disc/dcgan", "disc/patch", "loss/gram"]))
    with pytest.raises(UnknownComponentError) as exc:
        reg.resolve("patch", kind="loss")
    assert str(exc.value) == ("'patch' is a discriminator (disc/patch), not a loss term. "
                              "Run `stylezoo list --kind loss` to see the loss terms.")
    with pytest.raises(UnknownComponentError, match=r"'dcgan' is a discriminator \(disc/dcgan\) and a generator "
                                                    r"\(gen/dcgan\), not a loss term"):
        reg.resolve("dcgan", kind="loss")


def test_unknown_name_mentions_plugins_that_failed(bare_registry, make_plugin):
    reg = bare_registry(make_plugin("ok", ["gen/a"]), make_plugin("broken", ["gen/b"], fail_after=0))
    with pytest.raises(UnknownComponentError, match=r"failed to load: broken.*stylezoo plugins"):
        reg.get("gen/b")


def test_invalid_names_fail_the_plugin(bare_registry, make_plugin):
    reg = bare_registry(make_plugin("badname", ["generator/x"]), make_plugin("ok", ["gen/x"]))
    (bad,) = reg.failures
    assert bad.name == "badname" and "Invalid component name 'generator/x'" in bad.error
    assert reg.names() == ["gen/x"]


# ------------------------------------------------------------------------------- plugin isolation


def test_duplicate_name_fails_the_second_plugin_naming_both(bare_registry, make_plugin, fake_component):
    first = make_plugin("acme", ["gen/shared"])
    second = make_plugin("copycat", ["gen/own", "gen/shared"])
    reg = bare_registry(first, second)
    (failed,) = reg.failures
    assert failed.name == "copycat" and failed.components == ()
    assert failed.error.startswith("DuplicateComponentError")
    assert "'acme'" in failed.error and "'copycat'" in failed.error and "gen/shared" in failed.error
    # the first keeps working; the second's earlier registration (gen/own) is not kept
    assert reg.names() == ["gen/shared"]
    assert reg.get("gen/shared").plugin == "acme"
    assert isinstance(reg.build("gen/shared"), fake_component[0])
    assert not reg.pm.is_registered(second) and reg.pm.is_registered(first)


def test_register_raises_duplicate_error_naming_both_plugins(bare_registry, make_plugin, fake_component):
    FakeModule, FakeConfig = fake_component
    seen: list[BaseException] = []
    polite = types.ModuleType("polite")

    @hookimpl
    def register_components(register):
        try:
            register("gen/shared", FakeModule, config=FakeConfig)
        except DuplicateComponentError as e:  # a plugin may catch it and register under another name
            seen.append(e)
        register("gen/polite", FakeModule, config=FakeConfig)

    polite.register_components = register_components
    reg = bare_registry(make_plugin("acme", ["gen/shared"]), polite)
    assert reg.failures == []
    (err,) = seen
    assert isinstance(err, StylezooError)
    assert "'acme'" in str(err) and "'polite'" in str(err) and "STYLEZOO_PLUGINS" in str(err)
    assert reg.names() == ["gen/polite", "gen/shared"]


def test_same_name_twice_in_one_plugin_is_refused(bare_registry, make_plugin):
    reg = bare_registry(make_plugin("stutter", ["loss/a", "loss/a"]))
    (failed,) = reg.failures
    assert "DuplicateComponentError" in failed.error and reg.names() == []
    assert "registered twice by plugin 'stutter'" in failed.error and "Uninstall" not in failed.error


@pytest.mark.parametrize("bad", ["loss/My TV", "loss/a:b", "loss/a.b", "loss/a,b", "loss/ab ", "loss/é", "loss/MYTV",
                                 "loss/-x"])
def test_names_the_cli_could_not_select_fail_the_plugin(bare_registry, make_plugin, bad):
    # loss/a:b cannot be given to --loss (NAME:WEIGHT), loss/a.b not to --set (NAME.FIELD), ...
    reg = bare_registry(make_plugin("odd", [bad]), make_plugin("ok", ["loss/ok_name-2"]))
    (failed,) = reg.failures
    assert failed.name == "odd" and "lower-case letters" in failed.error and repr(bad) in failed.error
    assert reg.names() == ["loss/ok_name-2"]


def test_a_config_that_cannot_give_defaults_fails_the_plugin(bare_registry, make_plugin):
    import dataclasses

    @dataclasses.dataclass
    class NoDefault:
        channels: int
        scale: float = 1.0

    class NotADataclass:
        scale = 1.0

    reg = bare_registry(make_plugin("nodef", ["gen/a"], config=NoDefault),
                        make_plugin("plain", ["gen/b"], config=NotADataclass), make_plugin("ok", ["gen/c"]))
    errors = {p.name: p.error for p in reg.failures}
    assert "channels" in errors["nodef"] and "no default" in errors["nodef"]
    assert "not a dataclass" in errors["plain"] and reg.names() == ["gen/c"]


def test_a_factory_that_builds_no_module_is_a_clear_error(bare_registry, fake_component):
    from stylezoo.core.errors import PluginError

    _, cfg = fake_component
    plug = types.ModuleType("numbers")

    @hookimpl
    def register_components(register):
        register("loss/number", lambda c: 3, config=cfg)
        register("loss/notcallable", None, config=cfg)

    plug.register_components = register_components
    reg = bare_registry(plug)
    (failed,) = reg.failures  # the non-callable factory fails the plugin at registration
    assert "not callable" in failed.error
    plug2 = types.ModuleType("numbers2")

    @hookimpl
    def register_components2(register):
        register("loss/number", lambda c: 3, config=cfg)

    plug2.register_components = register_components2
    with pytest.raises(PluginError, match=r"loss/number \(plugin 'numbers2'\) built a int, not a torch.nn.Module"):
        bare_registry(plug2).build("loss/number")


def test_a_wrong_hook_signature_is_reported_on_one_line_with_its_reason(bare_registry):
    plug = types.ModuleType("wrongsig")

    @hookimpl
    def register_components(reg):  # the hookspec's argument is `register`
        pass

    plug.register_components = register_components
    (failed,) = bare_registry(plug).failures
    assert "\n" not in failed.error and "'reg'" in failed.error and "can not be found" in failed.error


def test_plugin_raising_while_registering_keeps_nothing(bare_registry, make_plugin, images):
    broken = make_plugin("halfway", ["gen/one", "gen/two", "gen/three"], fail_after=2)
    good = make_plugin("good", ["disc/fine"])
    reg = bare_registry(broken, good)
    (failed,) = reg.failures
    assert failed.name == "halfway" and "RuntimeError: halfway broke while registering" == failed.error
    assert reg.names() == ["disc/fine"]  # gen/one and gen/two were staged, then dropped
    assert [p.name for p in reg.plugins if not p.error] == ["good"]
    assert reg.build("disc/fine")(images()).shape == (2, 3, 32, 32)


def test_plugin_failing_at_import_is_reported(tmp_path, monkeypatch, make_plugin):
    (tmp_path / "szt_broken_at_import.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry(builtins=("szt_broken_at_import", "szt_not_a_module_anywhere"), entry_points=False,
                   plugins=[make_plugin("good", ["gen/ok"])], catalog={"components": {}, "recipes": {}})
    failures = {p.name: p for p in reg.failures}
    assert set(failures) == {"szt_broken_at_import", "szt_not_a_module_anywhere"}
    assert failures["szt_broken_at_import"].error == "RuntimeError: boom at import"
    assert failures["szt_not_a_module_anywhere"].error.startswith("ModuleNotFoundError")
    assert failures["szt_broken_at_import"].builtin and failures["szt_broken_at_import"].dist == "stylezoo"
    assert reg.names() == ["gen/ok"]


def test_plugin_without_the_hook_is_reported(bare_registry):
    reg = bare_registry(types.ModuleType("hookless"))
    (failed,) = reg.failures
    assert failed.name == "hookless" and "no register_components hook" in failed.error


class _FakeEntryPoint:
    """Stands in for an importlib.metadata.EntryPoint of a broken third-party distribution."""

    def __init__(self, name: str, dist: str) -> None:
        self.name, self.value, self.group = name, f"{name}_mod", "stylezoo"
        self.dist = types.SimpleNamespace(name=dist)

    def load(self) -> object:
        raise ImportError(f"cannot import name 'Thing' from '{self.value}'")


def test_broken_entry_point_names_plugin_and_distribution(monkeypatch, make_plugin):
    real = md.entry_points

    def entry_points(**kw):
        return [*real(**kw), _FakeEntryPoint("acme", "acme-styles")] if kw.get("group") == "stylezoo" else real(**kw)

    monkeypatch.setattr(registry_mod.md, "entry_points", entry_points)
    reg = Registry(builtins=(), plugins=[make_plugin("good", ["gen/ok"])], catalog={"components": {}, "recipes": {}})
    failures = {p.name: p for p in reg.failures}
    assert set(failures) == {"acme"}
    assert failures["acme"].dist == "acme-styles" and "cannot import name 'Thing'" in failures["acme"].error
    assert "gen/ok" in reg.names() and "gen/pixelshuffle" in reg.names()  # the real extras still load


# --------------------------------------------------------------------------------- config overrides


def test_config_overrides_are_validated(bare_registry, make_plugin, fake_component):
    FakeModule, FakeConfig = fake_component
    reg = bare_registry(make_plugin("acme", ["gen/a"]))
    assert reg.build("gen/a", {"width": 8, "scale": "2.5"}).cfg == FakeConfig(width=8, scale=2.5)
    assert reg.build("gen/a").stylezoo_name == "gen/a"
    with pytest.raises(ConfigError, match=r"Unknown config key 'gen/a\.widht'\. Did you mean 'width'"):
        reg.make_config("gen/a", {"widht": 3})
    with pytest.raises(ConfigError, match=r"gen/a\.width: expected an integer, got 'wide'"):
        reg.make_config("gen/a", {"width": "wide"})
    with pytest.raises(ConfigError, match=r"gen/a\.width: expected an integer, got 2\.5"):
        reg.make_config("gen/a", {"width": 2.5})
    with pytest.raises(ConfigError, match=r"gen/a: scale must be > 0, got -1\.0"):  # __post_init__ ValueError
        reg.build("gen/a", {"scale": -1})
    assert issubclass(ConfigError, UsageError) and ConfigError.exit_code == 2


@dataclass
class CoerceConfig:
    n: int = 1
    lr: float = 1e-3
    flag: bool = False
    layers: tuple[str, ...] = ("relu1_1",)
    weights: tuple[float, ...] = ()
    pair: tuple[int, int] = (1, 2)
    seed: int | None = 0
    label: str | None = "x"
    mode: Literal["content", "target"] = "content"
    size: Literal[32, 64] = 32
    per_layer: dict[str, float] = field(default_factory=dict)


@pytest.mark.parametrize(("key", "text", "expected"), [
    ("n", "3", 3), ("n", "1_000", 1000), ("n", 4.0, 4),
    ("lr", "2e-4", 2e-4), ("lr", "1", 1.0), ("lr", 3, 3.0),
    ("flag", "true", True), ("flag", "yes", True), ("flag", "0", False), ("flag", "off", False),
    ("layers", "relu1_1,relu2_1", ("relu1_1", "relu2_1")), ("layers", "relu4_2", ("relu4_2",)),
    ("layers", "[relu3_1, relu4_1]", ("relu3_1", "relu4_1")), ("layers", '["a", "b"]', ("a", "b")),
    ("layers", ["x", "y"], ("x", "y")), ("weights", "1,0.5", (1.0, 0.5)), ("weights", "", ()),
    ("pair", "3,4", (3, 4)), ("seed", "none", None), ("seed", None, None), ("seed", "7", 7),
    ("label", "null", None), ("label", "abc", "abc"), ("mode", "target", "target"), ("size", "64", 64),
    ("per_layer", "{relu1_1 = 1.0, relu2_1 = 0.5}", {"relu1_1": 1.0, "relu2_1": 0.5}),
])
def test_cli_strings_are_coerced_to_field_types(key, text, expected):
    value = getattr(build_config(CoerceConfig, {key: text}), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("key", "text", "fragment"), [
    ("n", "three", "expected an integer"), ("n", True, "expected an integer"),
    ("lr", "fast", "expected a number"), ("flag", "maybe", "expected true or false"),
    ("pair", "1,2,3", "expected 2 values, got 3"), ("seed", "soon", "not a valid"),
    ("mode", "style", "not one of 'content', 'target'"), ("size", "48", "not one of 32, 64"),
    ("per_layer", "7", "expected a table"), ("label", 5, "not a valid"),
])
def test_bad_cli_values_name_the_field(key, text, fragment):
    with pytest.raises(ConfigError, match=rf"^own\.{key}: .*{fragment}"):
        build_config(CoerceConfig, {key: text}, owner="own")


# ------------------------------------------------------------------------------------ entry points


def test_stylezoo_plugins_env_limits_entry_points(monkeypatch):
    catalog = {"components": {}, "recipes": {}}
    monkeypatch.setenv("STYLEZOO_PLUGINS", "someone-else")
    names = Registry(catalog=catalog).names()
    assert "gen/pixelshuffle" not in names and "loss/tv" in names  # built-ins always load
    monkeypatch.setenv("STYLEZOO_PLUGINS", "")
    reg = Registry(catalog=catalog)
    assert reg.names("gen/pixelshuffle") == [] and reg.failures == []
    (extras,) = [p for p in reg.plugins if p.name == "extras"]
    assert extras.skipped and not extras.components  # listed by `stylezoo plugins` as not loaded
    monkeypatch.setenv("STYLEZOO_PLUGINS", " someone-else , extras ")
    reg = Registry(catalog=catalog)
    assert "gen/pixelshuffle" in reg.names()
    (typo,) = reg.failures  # a name that matches no entry point is said, not silently ignored
    assert typo.name == "someone-else" and "no installed plugin has that entry point name" in typo.error
    assert "extras" in typo.error


def test_a_checkpoint_needing_a_plugin_left_out_by_stylezoo_plugins_says_so(monkeypatch):
    from stylezoo.core.files.checkpoint import missing_component

    catalog = {"components": {}, "recipes": {}}
    monkeypatch.setenv("STYLEZOO_PLUGINS", "")
    err = missing_component(Path("run/last.safetensors"), "gen/pixelshuffle", "stylezoo-extras",
                            Registry(catalog=catalog))
    assert "STYLEZOO_PLUGINS" in str(err) and "pip install" not in str(err)
    monkeypatch.delenv("STYLEZOO_PLUGINS")
    err = missing_component(Path("x"), "gen/other", "stylezoo-acme", Registry(catalog=catalog))
    assert "pip install stylezoo-acme" in str(err)


def test_installed_extras_plugin_is_discovered(registry):
    version = md.version("stylezoo-extras")
    assert registry.plugins == []  # nothing loads before the first lookup
    _ = registry.entries
    (info,) = [p for p in registry.plugins if p.name == "extras"]
    assert (info.dist, info.version, info.builtin, info.error) == ("stylezoo-extras", version, False, None)
    assert info.module == "stylezoo_extras"
    assert set(info.components) == {"gen/pixelshuffle", "loss/laplacian"}
    entry = registry.get("pixelshuffle", kind="gen")
    assert (entry.plugin, entry.dist, entry.version) == ("extras", "stylezoo-extras", version)
    assert entry.card["family"] == "image" and "PixelShuffle" in entry.description


def test_extras_components_build_and_run(registry, images):
    gen = registry.build("gen/pixelshuffle", {"channels": "8", "blocks": 1})
    assert gen.family == "image" and gen.size_multiple == 4
    content = images(2, 32)
    fake = gen(content)
    assert fake.shape == content.shape and fake.abs().max() <= 1
    loss = registry.build("loss/laplacian")
    assert loss.step == "gen" and loss.needs == {"content"}
    value = loss(StepContext(fake=fake, content=content, paired=True))
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    value.backward()
    assert all(p.grad is not None for p in gen.parameters() if p.requires_grad)
    same = loss(StepContext(fake=content, content=content))
    assert same.item() == 0.0
    with pytest.raises(ValueError, match="multiples of 4"):
        gen(images(1, 30))
    with pytest.raises(ConfigError, match="scales must be in 1..6"):
        registry.build("loss/laplacian", {"scales": 0})


# ------------------------------------------------------------------------ plugins that break the rules
class _Mode(__import__("enum").Enum):
    FAST = "fast"


@dataclass
class _Inner:
    k: int = 1


@dataclass
class _EnumConfig:
    mode: _Mode = _Mode.FAST


@dataclass
class _NestedConfig:
    inner: _Inner = field(default_factory=_Inner)


@dataclass
class _UnresolvedConfig:
    where: NotImportedAtRunTime = None  # type: ignore[name-defined]  # noqa: F821  (as under TYPE_CHECKING)


@dataclass
class _NoWeightConfig:
    scale: float = 1.0


@pytest.mark.parametrize("name,config,fragment", [
    ("gen/enum", _EnumConfig, "config field 'mode' of _EnumConfig is a _Mode, which --set, config.toml and checkpoints "
                              "cannot carry"),
    ("gen/nested", _NestedConfig, "config field 'inner' of _NestedConfig is a _Inner"),
    ("gen/unresolved", _UnresolvedConfig, "the type hints of _UnresolvedConfig do not resolve (NameError"),
    ("loss/noweight", _NoWeightConfig, "a loss term's config needs a `weight: float` field"),
])
def test_a_config_the_engine_cannot_carry_is_refused_when_the_plugin_loads(bare_registry, make_plugin, name, config,
                                                                          fragment):
    """Each of these used to register, then fail later with a traceback (at the first checkpoint, or --loss)."""
    reg = bare_registry(make_plugin("acme", [name], config=config), make_plugin("fine", ["gen/ok"]))
    assert reg.names() == ["gen/ok"]  # the broken plugin is left out; the others load
    (failed,) = reg.failures
    assert failed.name == "acme" and fragment in failed.error and "\n" not in failed.error


def test_a_third_party_factory_that_raises_is_one_plugin_error(bare_registry):
    from stylezoo.core.errors import PluginError

    mod = types.ModuleType("needsdep")

    def factory(cfg):
        raise ModuleNotFoundError("No module named 'some_missing_optional_dep'")

    @hookimpl
    def register_components(register):
        register("gen/needsdep", factory, config=_NoWeightConfig)

    mod.register_components = register_components
    reg = bare_registry(mod)
    with pytest.raises(PluginError) as exc:
        reg.build("gen/needsdep")
    assert str(exc.value) == ("gen/needsdep (plugin 'needsdep') failed to build: ModuleNotFoundError: No module named "
                              "'some_missing_optional_dep'")
    assert isinstance(exc.value.__cause__, ModuleNotFoundError)


def test_an_entry_point_named_like_a_built_in_plugin_still_loads(monkeypatch, make_plugin):
    real = md.entry_points
    mod = make_plugin("vgg", ["gen/uniquegen"])

    class _EP(_FakeEntryPoint):
        def load(self) -> object:
            return mod

    def entry_points(**kw):
        return [*real(**kw), _EP("vgg", "szb-plug")] if kw.get("group") == "stylezoo" else real(**kw)

    monkeypatch.setattr(registry_mod.md, "entry_points", entry_points)
    reg = Registry(catalog={"components": {}, "recipes": {}})
    assert not reg.failures
    assert "gen/uniquegen" in reg.names() and "feat/vgg16" in reg.names()
    assert reg.get("gen/uniquegen").dist == "szb-plug"
