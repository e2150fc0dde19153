"""`stylezoo list`, `stylezoo info`, `stylezoo plugins`: browse the zoo."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..components.config import describe_fields
from ..components.kinds import KINDS
from ..errors import UsageError

out = Console(highlight=False)


def _registry():  # noqa: ANN202 - imported lazily so `stylezoo --help` stays fast
    from ..components.registry import default_registry

    return default_registry()


def list_cmd(
    pattern: Annotated[str, typer.Argument(help="Wildcard on full or short names, e.g. 'vgg*' or 'gen/*'.")] = "*",
    kind: Annotated[str | None, typer.Option("--kind", "-k", help=f"One of {', '.join(KINDS)}, recipe, model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered components, recipes and shipped models (`stylezoo models` has their details). A pattern
    that matches nothing is an error (exit 2); with --json it prints []."""
    import fnmatch

    if kind is not None and kind not in KINDS and kind not in ("recipe", "model"):
        raise UsageError(f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}, recipe, model.")
    reg = _registry()
    rows = []
    if kind not in ("recipe", "model"):
        for name in reg.names(pattern, kind):
            e = reg.get(name)
            rows.append({"name": name, "kind": e.kind, "description": e.description, "plugin": e.plugin,
                         "dist": e.dist, "version": e.version})
    if kind in (None, "recipe"):
        for rname, r in sorted(reg.recipes().items()):
            if fnmatch.fnmatchcase(rname, pattern) or fnmatch.fnmatchcase(f"recipe/{rname}", pattern):
                rows.append({"name": rname, "kind": "recipe", "description": r.get("description", ""),
                             "plugin": "registry.toml", "dist": "stylezoo", "version": None})
    if kind in (None, "model"):
        from ..use.shipped import shipped_models

        for mname, m in shipped_models(reg.catalog).items():
            if fnmatch.fnmatchcase(mname, pattern) or fnmatch.fnmatchcase(f"model/{mname}", pattern):
                rows.append({"name": mname, "kind": "model", "description": f"{m.description} ({m.gen}, {m.style})",
                             "plugin": "registry.toml", "dist": "stylezoo", "version": None})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        what, see = (f"{kind}", f"stylezoo list --kind {kind}") if kind else ("component or recipe", "stylezoo list")
        failed = f" ({len(reg.failures)} plugin(s) failed to load: see `stylezoo plugins`)" if reg.failures else ""
        raise UsageError(f"No {what} matches {pattern!r}{failed}. Run `{see}` to see them all.")
    titles = {"recipe": "stylezoo recipes", "model": "stylezoo models"}
    table = Table(title=titles.get(kind or "", "stylezoo components"))
    for col in ("name", "kind", "description", "plugin"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(escape(str(r[c])) for c in ("name", "kind", "description", "plugin")))
    out.print(table)
    failed = reg.failures
    if failed:
        names = ", ".join(p.name + (f" ({p.dist})" if p.dist and not p.builtin else "") for p in failed)
        Console(stderr=True, highlight=False).print(
            f"[yellow]{len(failed)} plugin(s) failed to load: {escape(names)}. See `stylezoo plugins`.[/]"
        )


def _print_table(out: Console, title: str, table: dict[str, Any], as_json: bool) -> None:
    """One catalog table as JSON, or a bold title (rich markup, its names escaped) and a line per key."""
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    out.print(f"[bold]{title}")
    for k, v in table.items():
        out.print(escape(f"  {k}: {v}"))


def info_cmd(
    name: Annotated[str, typer.Argument(help="Component (kind/name or short name) or recipe name.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a component's config fields, defaults, compatibility, plugin and weights (or a recipe, or a shipped
    model's table)."""
    reg = _registry()
    recipes = reg.recipes()
    from ..use.shipped import get_model, shipped_models

    if name.startswith("model/") or (name in shipped_models(reg.catalog) and name not in recipes):
        card = get_model(name.removeprefix("model/"), reg.catalog).card()
        title = f"model {escape(card['name'])}[/] (stylezoo stylize PHOTO --model {escape(card['name'])})"
        return _print_table(out, title, card, as_json)
    if name in recipes or name.startswith("recipe/"):
        recipe = reg.recipe(name.removeprefix("recipe/"))
        return _print_table(out, f"recipe {escape(name.removeprefix('recipe/'))}[/]", recipe, as_json)
    e = reg.get(name)
    fields = describe_fields(e.config)
    card = {k: v for k, v in e.card.items() if k not in ("description", "compatible", "weights")}
    compatible = [str(c) for c in e.card.get("compatible", ())]
    # the other side of `compatible`: the components that name this one (e.g. penalties for an adversarial loss)
    used_with = sorted(n for n, o in reg.entries.items() if e.name in tuple(o.card.get("compatible", ())))
    weights = e.card.get("weights")
    if weights is None:
        weights = next((d for f, _, d, _ in fields if f == "weights"), None)
    weight_sets = sorted(n for n, t in reg.catalog.get("weights", {}).items() if t.get("component") == e.name)
    adversarial = e.card.get("role") == "adversarial" or getattr(e.factory, "adversarial", False)
    role = "adv" if adversarial else e.name if e.kind == "loss" else e.kind
    if as_json:
        typer.echo(json.dumps({
            "name": e.name, "kind": e.kind, "description": e.description, "plugin": e.plugin,
            "dist": e.dist, "version": e.version,
            "config": [{"name": f, "type": t, "default": d, "help": h} for f, t, d, h in fields],
            "compatible": compatible, "used_with": used_with, "weights": weights, "weight_sets": weight_sets,
            "card": card,
        }, indent=2, default=str))
        return
    out.print(f"[bold]{escape(e.name)}[/] - {KINDS[e.kind]}: {escape(e.description)}")
    out.print(escape(f"provided by: plugin {e.plugin!r}"
                     + (f" from {e.dist} {e.version or ''}".rstrip() if e.dist else "")))
    if compatible:
        out.print(escape(f"compatible with: {', '.join(compatible)}"))
    if used_with:
        out.print(escape(f"works with: {', '.join(used_with)}"))
    if weights is not None:
        out.print(escape(f"weights: {weights}"))
    for ws in weight_sets:
        out.print(escape(f"weight set: {ws} (install offline with `stylezoo weights pull {ws}`)"))
    for key, val in card.items():
        out.print(escape(f"{key}: {val}"))
    table = Table(title=f"config ({e.config.__name__})")
    for col in ("field", "type", "default", "meaning"):
        table.add_column(col, overflow="fold")
    for f, t, d, h in fields:
        table.add_row(escape(f), escape(t), escape(repr(d)), escape(h))
    if fields:
        out.print(table)
        out.print(escape(f"Override from the CLI with --set {role}.FIELD=VALUE."))
    else:
        out.print("config: no fields")


def plugins_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Loaded plugins, their components and versions, and those that failed and why."""
    reg = _registry()
    _ = reg.entries
    rows = [
        {"name": p.name, "module": p.module, "dist": p.dist, "version": p.version, "builtin": p.builtin,
         "hooks": ["register_components"] if not p.error else [], "components": list(p.components), "error": p.error,
         "skipped": p.skipped}
        for p in reg.plugins
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="stylezoo plugins")
    for col in ("plugin", "distribution", "components", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        dist = f"{r['dist'] or '-'} {r['version'] or ''}".strip()
        status = ("[red]failed: " + escape(r["error"]) + "[/]" if r["error"]
                  else "[yellow]not loaded: not in STYLEZOO_PLUGINS[/]" if r["skipped"] else "[green]ok[/]")
        table.add_row(escape(r["name"]), escape(dist), escape(", ".join(r["components"])), status)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
    app.command("info")(info_cmd)
    app.command("plugins")(plugins_cmd)
