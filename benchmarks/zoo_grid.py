"""The README's picture of the shipped models: each bundled photo, then each shipped model's restyling of it.

    python -m stylezoo.benchmarks.zoo_grid [--out docs/models.jpg] [--size 192] [--any-style great_wave.jpg]
                                           [--any-size 512]

Only bundled images (data/samples/) go in: the picture is committed. The any-style model is shown with
`--any-style` (a bundled painting) as its reference, restyling the photos at `--any-size` (then shrunk to the
cell): gen/wct's coarsest layer (relu4_1, 1/8 of the side) keeps the content at 512 px and wipes it at 192.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from stylezoo import list_models, load_model, model_info
from stylezoo.core.files.images import load_tensor, tensor_to_pil

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/models.jpg"))
    p.add_argument("--size", type=int, default=192, help="side of each cell (centre crops)")
    p.add_argument("--any-style", default="great_wave.jpg", help="bundled painting given to the any-style model")
    p.add_argument("--any-size", type=int, default=512, help="side the any-style model restyles at (512)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    photos = sorted(f for f in (SAMPLES / "content").iterdir() if f.suffix in (".jpg", ".png"))
    x = torch.stack([load_tensor(f, args.size) for f in photos])
    names = list_models()
    cols: list[tuple[str, torch.Tensor]] = [("photo", x)]
    for name in names:
        st = load_model(name, device="cpu")
        label, y = name, None
        if model_info(name).takes_style:
            st.set_style([str(SAMPLES / "style" / args.any_style)])
            label = f"any + {Path(args.any_style).stem}"
            big = torch.stack([load_tensor(f, args.any_size) for f in photos])
            y = F.interpolate(torch.cat([st.forward(b[None]) for b in big]), size=args.size, mode="area")
        cols.append((label, (st.forward(x) if y is None else y).float().clamp(-1, 1)))
    s, head = args.size, 22
    grid = Image.new("RGB", (s * len(cols), head + s * len(photos)), "white")
    draw = ImageDraw.Draw(grid)
    for j, (label, imgs) in enumerate(cols):
        draw.text((j * s + 6, 5), label, fill="black")
        for i, img in enumerate(imgs):
            grid.paste(tensor_to_pil(img), (j * s, head + i * s))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, quality=88)
    print(f"wrote {args.out} ({len(photos)} photos x {len(cols) - 1} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
