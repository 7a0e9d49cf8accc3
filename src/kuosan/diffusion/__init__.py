"""σ-space diffusion math (Karras et al. 2022, "EDM").

The forward process is ``x_σ = x0 + σ·n``. Everything here is plain tensor math and imports nothing
else from kuosan: the forward process and its VP form, σ ladders for sampling, preconditioning that
turns a raw network into a denoiser ``D(x, sigma, **cond) -> x0_hat``, guidance wrappers, the
training loss and Stein's unbiased risk estimate.
"""

from kuosan.diffusion.forward import (
    add_noise,
    alpha_bar_to_sigma,
    sigma_to_alpha_bar,
    sigma_to_vp,
    vp_to_sigma,
)
from kuosan.diffusion.guidance import ClassifierFreeGuidance
from kuosan.diffusion.ladders import (
    cosine_sigmas,
    ddpm_alphas_cumprod,
    karras_sigmas,
    knee_sigmas,
    loglinear_sigmas,
    vp_sigmas,
)
from kuosan.diffusion.loss import EDMLoss, sure, sure_backward
from kuosan.diffusion.precond import Denoiser, EDMDenoiser, VPEpsDenoiser, as_sigma_batch

__all__ = [
    "add_noise",
    "alpha_bar_to_sigma",
    "sigma_to_alpha_bar",
    "sigma_to_vp",
    "vp_to_sigma",
    "ClassifierFreeGuidance",
    "cosine_sigmas",
    "ddpm_alphas_cumprod",
    "karras_sigmas",
    "knee_sigmas",
    "loglinear_sigmas",
    "vp_sigmas",
    "EDMLoss",
    "sure",
    "sure_backward",
    "Denoiser",
    "EDMDenoiser",
    "VPEpsDenoiser",
    "as_sigma_batch",
]
