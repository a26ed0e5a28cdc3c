"""Draw pairs from a trained 4-channel denoiser and write them as an image grid.

fusionlab sample --denoiser runs/x/denoiser/denoiser --n 8 --out grid.png

Each tile shows one generated pair as IR | RGB. If the IR half and the RGB half of a tile show
the same scene (same horizon, objects in the same places), the denoiser learned the joint
distribution of the two modalities, which is what stage 4's diffusion features rely on.
"""

from __future__ import annotations

HELP = "generate IR|RGB sample pairs from a trained denoiser into a PNG grid"


def _size(text: str) -> tuple[int, int]:
    import argparse

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' is not WxH, e.g. 64x64") from None
    return h, w


def add_arguments(parser) -> None:
    parser.add_argument("--denoiser", required=True, metavar="DIR",
                        help="the denoiser/ folder written by the denoiser stage")
    parser.add_argument("--n", type=int, default=8, help="number of pairs (default 8)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--size", type=_size, default=(64, 64), metavar="WxH", help="sample size (default 64x64)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM sampling steps (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same samples)")
    parser.add_argument("--columns", type=int, default=4, help="tiles per row (default 4)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def main(args) -> int:
    import torch

    from fusionlab.data.io import write_image
    from fusionlab.errors import ConfigError
    from fusionlab.models.denoiser import generate_samples, load_denoiser, sample_grid

    if args.n < 1 or args.steps < 1:
        raise ConfigError("--n and --steps must be at least 1")
    unet, scheduler = load_denoiser(args.denoiser)
    unet.to(torch.device(args.device))
    x = generate_samples(unet, scheduler, n=args.n, size=args.size, steps=args.steps, seed=args.seed, progress=True)
    path = write_image(args.out, sample_grid(x.cpu(), columns=args.columns))
    print(f"wrote {args.n} IR|RGB samples to {path}")
    return 0
