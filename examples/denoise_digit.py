"""The README's classic example: noise an image at a known σ, denoise it with the model, save side by side.

    python examples/denoise_digit.py [MODEL]     (default MODEL: runs/digits)
"""

import sys

import torch

import kuosan
from kuosan.data import load_image, pil_to_tensor, save_grid

model = kuosan.load(sys.argv[1] if len(sys.argv) > 1 else "runs/digits")
clean = pil_to_tensor(load_image("docs/digit.png", channels=1))[None]  # [1, 1, H, W] in [-1, 1]
sigma = 2 * 50 / 255                     # σ = 50 in 0–255 pixel units → model units (images span 2.0)
noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    denoised = model(noisy, sigma)       # one call: the minimum-MSE estimate E[x0 | noisy]


def psnr(a, b):
    return 10 * torch.log10(4 / (a.clamp(-1, 1) - b).pow(2).mean()).item()


print(f"noisy {psnr(noisy, clean):.2f} dB → denoised {psnr(denoised, clean):.2f} dB")
save_grid(torch.cat([clean, noisy, denoised]), "docs/denoise.png", nrow=3, scale=4)
