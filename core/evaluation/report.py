"""A run's `report.html`: one self-contained page to look at (no server, no external JS/CSS or images).

It shows the composition and config, loss and metric curves (matplotlib PNGs embedded as data URIs), the
sample grids over time, the final samples beside their inputs and the eval table (training evaluations from
metrics.jsonl and `stylezoo eval` results from eval.jsonl). Everything is read from the run directory, so
`stylezoo report RUN_DIR` rebuilds it at any time. A tiny inline script marks `<body data-images-ok="N">`
once every image has decoded, for headless-browser checks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import tomllib

from ..errors import CheckpointError, UsageError
from ..files import checkpoint as ckpt
from ..files.images import grid_step
from ..ops.metrics import METRICS

REPORT = "report.html"
MAX_GRIDS = 8  # sample grids over time shown (evenly spaced, plus the final one)
MIN_WIDTH = 260  # smaller images are shown enlarged

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f6f4;color:#1d1d1f}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-bottom:18px}
table{border-collapse:collapse;background:#fff;margin:6px 0 14px;font-size:13.5px}
th,td{border:1px solid #ddd;padding:4px 9px;text-align:left;vertical-align:top}th{background:#efefec;white-space:nowrap}
h3{font-size:15px;margin:16px 0 4px}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.best{font-weight:700;background:#e6f4e6}
img{max-width:100%;height:auto;image-rendering:pixelated;background:#fff;border:1px solid #ddd}
figure{margin:0 0 14px}figcaption{color:#555;font-size:13px}
.grids{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
pre{background:#fff;border:1px solid #ddd;padding:10px;overflow:auto;font-size:12.5px}
.cols{display:flex;gap:24px;flex-wrap:wrap}.empty{color:#777;font-style:italic}
"""

# Sets <body data-images-ok="N" data-images-total="M"> once the page has loaded: N images decoded.
CHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-ok', String(ok));
  document.body.setAttribute('data-images-total', String(imgs.length));
});
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(png: bytes, alt: str) -> str:
    """An embedded PNG; small grids (32-64 px samples) are shown enlarged by a whole factor, pixels kept."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        w, h = im.size
    k = max(1, min(8, MIN_WIDTH // max(w, 1)))
    return f'<img src="{data_uri(png)}" alt="{esc(alt)}" width="{w * k}" height="{h * k}">'


def figure(png: bytes, caption: str) -> str:
    return f"<figure>{img_tag(png, caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else esc(v)


# -- reading the run ---------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file; a torn last line (a run killed mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def eval_groups(metrics_rows: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]],
                best_meta: dict[str, Any] | None) -> list[tuple[str, list[tuple[str, dict[str, float]]]]]:
    """Comparable evaluations, grouped: (title, [(label, {metric: value})]). Training's best and last
    evaluation (held-aside images) form one group; `stylezoo eval` records one group per set of inputs."""
    groups: list[tuple[str, list[tuple[str, dict[str, float]]]]] = []
    rows: list[tuple[str, dict[str, float]]] = []
    if best_meta and isinstance(best_meta.get("eval"), dict):
        rows.append((f"best by {best_meta.get('eval_metric', '?')}: step {best_meta.get('step', '?')} "
                     "(best.safetensors)", dict(best_meta["eval"])))
    trained = [r for r in metrics_rows if any(k.startswith("eval/") for k in r)]
    if trained:
        last = trained[-1]
        rows.append((f"last evaluation: step {last.get('step', '?')}",
                     {k[5:]: v for k, v in last.items() if k.startswith("eval/")}))
    if rows:
        groups.append(("during training, on the held-aside images", rows))
    by_inputs: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for e in evals:
        # scores are comparable only on the same inputs, style label included; the weights are named per row
        keys = ("content", "style", "style_label", "reference", "data", "size")
        title = "stylezoo eval, " + ", ".join(
            f"{k.replace('_', ' ')} {' + '.join(map(str, e[k])) if isinstance(e[k], list) else e[k]}"
            for k in keys if e.get(k) not in (None, "", []))
        label = f"{Path(str(e.get('checkpoint', '?'))).name}: step {e.get('step', '?')}, {e.get('n', '?')} images"
        if e.get("weights"):
            label += f", {'weight average' if e['weights'] == 'ema' else 'raw weights'}"
        by_inputs.setdefault(title, []).append((label, dict(e.get("metrics", {}))))
    return groups + list(by_inputs.items())


def eval_table(rows: Sequence[tuple[str, dict[str, float]]]) -> str:
    """One table of comparable evaluations; the best value of each ranked metric in bold."""
    names = [m for m in METRICS if any(m in r for _, r in rows)]
    names += sorted({k for _, r in rows for k in r} - set(names))
    best: dict[str, float] = {}
    for m in names:
        d = METRICS[m].direction if m in METRICS else None
        vals = [r[m] for _, r in rows if isinstance(r.get(m), (int, float))]
        if d and len(vals) > 1:
            best[m] = min(vals) if d == "min" else max(vals)
    arrow = {"min": " ↓", "max": " ↑"}
    head = "".join(f'<th title="{esc(METRICS[m].description if m in METRICS else "")}">{esc(m)}'
                   f'{arrow.get(METRICS[m].direction or "", "") if m in METRICS else ""}</th>' for m in names)
    body = []
    for label, r in rows:
        cells = []
        for m in names:
            v = r.get(m)
            cls = "num best" if m in best and v == best[m] else "num"
            cells.append(f'<td class="{cls}">{fmt(v) if v is not None else ""}</td>')
        body.append(f"<tr><td>{esc(label)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>checkpoint</th>{head}</tr>{''.join(body)}</table>"


def eval_section(groups: Sequence[tuple[str, Sequence[tuple[str, dict[str, float]]]]]) -> str:
    if not groups:
        return ('<p class="empty">No evaluation yet: train with <code>--set train.eval_every=N</code> or run '
                "<code>stylezoo eval RUN_DIR --content DIR --style FILE</code>, then <code>stylezoo report</code>."
                "</p>")
    parts = [f"<h3>{esc(title)}</h3>{eval_table(rows)}" for title, rows in groups]
    names = [m for m in METRICS if any(m in r for _, rows in groups for _, r in rows)]
    legend = "".join(f"<li><b>{esc(m)}</b>: {esc(METRICS[m].description)}</li>" for m in names)
    parts.append("<p>↓ lower is better, ↑ higher is better; within each table the best value of a column is in "
                 f"bold (values from different image sets are not comparable).</p><ul>{legend}</ul>")
    return "".join(parts)


# -- plots -----------------------------------------------------------------------------------------------------------
def loss_plot(metrics_path: Path) -> bytes | None:
    """The engine's loss curves (core/training/engine.py plot_losses) as PNG bytes; its loss.png when up to date."""
    from ..runs.rundir import plot_losses

    png = metrics_path.parent / "loss.png"
    if png.is_file() and metrics_path.is_file() and png.stat().st_mtime >= metrics_path.stat().st_mtime:
        return png.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        out = plot_losses(metrics_path, Path(tmp) / "loss.png")
        return out.read_bytes() if out is not None else None


def metric_plot(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """One small panel per eval/ metric over the training steps, the best point marked."""
    keys = [k for k in (f"eval/{m}" for m in METRICS) if any(k in r for r in rows) and not k.endswith("_std")]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(keys))
    nrows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.9 * nrows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        pts = [(r["step"], r[k]) for r in rows if k in r and isinstance(r[k], (int, float))]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", ms=3, lw=1.4, color="#2a6fb0")
        d = METRICS[k[5:]].direction
        if ys and d:
            i = ys.index(min(ys) if d == "min" else max(ys))
            ax.plot([xs[i]], [ys[i]], marker="*", ms=12, color="#d0541c", label=f"best {ys[i]:.4g}")
            ax.legend(fontsize=8)
        ax.set_title(f"{k[5:]} ({'lower' if d == 'min' else 'higher'} is better)", fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# -- sections --------------------------------------------------------------------------------------------------
def speed_line(rows: Sequence[dict[str, Any]]) -> str:
    """Median throughput of the logged steps after the first (which carries set-up and compilation)."""
    steps = [r for r in rows if "time/step_s" in r and r.get("step", 0) > 1]
    if not steps:
        return '<p class="empty">No timed steps logged after the first.</p>'

    def med(key: str) -> float:
        vals = sorted(float(r.get(key, 0.0)) for r in steps)
        return vals[len(vals) // 2]

    step, wait = med("time/step_s"), med("time/data_s")
    return (f"<p>Median of {len(steps)} logged steps: <b>{med('time/images_per_s'):.1f} images/s</b>, "
            f"{step * 1e3:.0f} ms per step, of which {wait * 1e3:.1f} ms waiting for images "
            f"({100 * wait / step if step else 0:.0f}%).</p>")


def kv_table(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v) if isinstance(v, (list, dict)) else v)}</td></tr>"
                   for k, v in d.items())
    return f"<table>{rows}</table>"


def composition_section(cfg: dict[str, Any], meta: dict[str, Any] | None) -> str:
    configs = (meta or {}).get("configs", {})
    rows = []
    for role in ("gen", "disc", "feat", "adv", "gp"):
        name = cfg.get(role)
        if name:
            c = configs.get(role, cfg.get("set", {}).get(role, {}))
            rows.append(f"<tr><th>{role}</th><td>{esc(name)}</td><td><code>{esc(json.dumps(c))}</code></td></tr>")
    for name, w in dict(cfg.get("losses", {})).items():
        c = configs.get(name, cfg.get("set", {}).get(name, {}))
        rows.append(f"<tr><th>loss</th><td>{esc(name)} × {fmt(float(w))}</td><td><code>{esc(json.dumps(c))}</code>"
                    "</td></tr>")
    parts = [f"<table><tr><th>role</th><th>component</th><th>config</th></tr>{''.join(rows)}</table>",
             '<div class="cols"><div><h3>training</h3>', kv_table(dict(cfg.get("train", {}))), "</div>",
             "<div><h3>data</h3>", kv_table({k: v for k, v in dict(cfg.get("data", {})).items() if v != ""}), "</div>"]
    if meta and meta.get("versions"):
        parts += ["<div><h3>versions</h3>", kv_table(dict(meta["versions"])), "</div>"]
    parts.append("</div>")
    return "".join(parts)


def step_of(path: Path) -> int:
    m = re.search(r"(\d+)", path.stem)
    return int(m.group(1)) if m else -1


def pick_grids(files: Sequence[Path], k: int = MAX_GRIDS) -> list[Path]:
    """At most `k` files, evenly spaced, always the last."""
    files = sorted(files, key=step_of)
    if len(files) <= k:
        return list(files)
    idx = sorted({round(i * (len(files) - 1) / (k - 1)) for i in range(k)})
    return [files[i] for i in idx]


def samples_section(run: Path, family: str, step: int) -> tuple[str, str]:
    """(grids over time, final samples beside their inputs) as HTML."""
    sd = run / "samples"
    grids = pick_grids(list(sd.glob("step-*.png")))
    over = [(step_of(p), figure(p.read_bytes(), f"step {step_of(p)}")) for p in grids]
    final = sd / "final.png"
    # final.png says which step it shows: after an interrupted resume it is older than the checkpoint's `step`
    fstep = grid_step(final) if final.is_file() else None
    when = "" if fstep is None else f" (step {fstep})" if fstep == step else \
        f" (step {fstep}, older than the checkpoint's step {step}: the run was stopped before it ended)"
    shown = {s for s, _ in over}  # a grid already shows final.png's step (runs before the step chunk: `step`)
    if final.is_file() and (fstep if fstep is not None else step) not in shown:
        over.append((step if fstep is None else fstep, figure(final.read_bytes(), f"final{when}")))
    over.sort(key=lambda sf: sf[0])
    figs = "".join(f for _, f in over)
    over_time = f'<div class="grids">{figs}</div>' if over else '<p class="empty">No sample grids.</p>'
    side = []
    if final.is_file():
        what = "top row: inputs, row below: outputs (then targets, for paired data)" if family == "image" else "samples"
        side.append(figure(final.read_bytes(), f"final samples on training inputs{when} — {what}"))
    held = sd / "eval.png"
    if held.is_file():
        what = "top row: held-aside inputs, bottom row: outputs" if family == "image" else "evaluation samples"
        side.append(figure(held.read_bytes(), f"last evaluation — {what}"))
    return over_time, "".join(side) or '<p class="empty">No final samples.</p>'


# -- the page --------------------------------------------------------------------------------------------------
def build_report(run: str | Path) -> str:
    """The report of a run directory as one HTML string."""
    run = Path(run)
    cfg_path = run / "config.toml"
    if not cfg_path.is_file():
        raise UsageError(f"{run} is not a run directory (no config.toml). Give the folder `stylezoo run` wrote.")
    cfg = tomllib.loads(cfg_path.read_text())
    meta = _meta(run / "last.safetensors")
    best_meta = _meta(run / "best.safetensors")
    rows = read_jsonl(run / "metrics.jsonl")
    evals = read_jsonl(run / "eval.jsonl")
    family = (meta or {}).get("family", "image")
    step = (meta or {}).get("step", rows[-1].get("step", 0) if rows else 0)
    losses = loss_plot(run / "metrics.jsonl") if rows else None
    mplot = metric_plot(rows)
    grids, finals = samples_section(run, family, int(step))
    title = f"stylezoo run {run.resolve().name}"
    sub = (f"recipe <b>{esc(cfg.get('recipe', '?'))}</b> · {esc(cfg.get('gen', '?'))} · step {esc(step)} of "
           f"{esc(cfg.get('train', {}).get('steps', '?'))}")
    body = [
        f"<h1>{esc(title)}</h1><div class='sub'>{sub}</div>",
        "<h2>Evaluation</h2>", eval_section(eval_groups(rows, evals, best_meta)),
        "<h2>Final samples beside their inputs</h2>", finals,
        "<h2>Loss curves</h2>", figure(losses, "losses per step (symlog scale)") if losses
        else '<p class="empty">No losses logged.</p>',
        "<h2>Metric curves</h2>", figure(mplot, "evaluation metrics during training") if mplot
        else '<p class="empty">No evaluation during training (set train.eval_every to get curves).</p>',
        "<h2>Sample grids over time</h2>", grids,
        "<h2>Speed</h2>", speed_line(rows),
        "<h2>Composition and config</h2>", composition_section(cfg, meta),
        "<h3>config.toml</h3>", f"<pre>{esc(cfg_path.read_text())}</pre>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{CSS}</style><script>{CHECK_JS}</script></head><body><main>{''.join(body)}</main></body></html>\n")


def _meta(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return ckpt.read_meta(path)
    except CheckpointError:
        return None


def write_report(run: str | Path) -> Path:
    """Write (or rebuild) `RUN/report.html`, atomically; returns its path."""
    run = Path(run)
    text = build_report(run)
    out = run / REPORT
    ckpt.atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out


def image_sources(page: str) -> Iterable[str]:
    """Every <img src> of a page (the report embeds them all as data: URIs)."""
    return re.findall(r'<img [^>]*src="([^"]*)"', page)


__all__ = ["build_report", "write_report", "image_sources", "eval_groups", "eval_section", "pick_grids", "read_jsonl",
           "REPORT"]
