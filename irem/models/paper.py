"""The IREM network (paper section 2.2): Gaussian Fourier features gamma(P) = [cos(2 pi B P),
sin(2 pi B P)] (B in R^{L x 3}, entries N(0, sigma^2)) and an MLP of ``depth`` layers of ``width``,
each but the last followed by BatchNorm and ReLU, the encoding also entering layers 7 and 13."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import skip_init


class FourierFeatures(nn.Module):
    """Random Gaussian Fourier feature mapping R^3 -> R^{2L} (Tancik et al. 2020)."""

    def __init__(self, fourier_dim: int = 256, sigma: float = 1.0, seed: int = 0):
        """Draw B (``fourier_dim`` = 2L output features) from ``seed``."""
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        b = torch.randn(fourier_dim // 2, 3, generator=gen, dtype=torch.float32) * sigma
        self.register_buffer("B", b)
        self.out_dim = fourier_dim

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        # Phases in float32 even under autocast (bf16 would round them), then one cast to the
        # autocast type, so that the skips concatenate one type.
        device = p.device.type
        with torch.autocast(device, enabled=False):
            proj = (2.0 * math.pi) * (p.float() @ self.B.T)
            enc = torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)
        if torch.is_autocast_enabled(device):
            return enc.to(torch.get_autocast_dtype(device))
        return enc


class IREM(nn.Module):
    """Fourier features followed by the paper's MLP with BatchNorm, ReLU and skip concatenations."""

    def __init__(
        self,
        fourier_dim: int = 256,
        sigma: float = 1.0,
        width: int = 256,
        depth: int = 18,
        skips: tuple[int, ...] = (6, 12),
        seed: int = 0,
    ):
        """Build the network (``skips``: 0-based indices of the layers whose input gets the
        encoding concatenated); B and all weights are drawn from ``seed``."""
        super().__init__()
        self.encoding = FourierFeatures(fourier_dim, sigma, seed)
        self.skips = tuple(skips)
        with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
            torch.manual_seed(int(seed))
            sizes = [fourier_dim] + [width] * (depth - 1)
            inputs = [n + fourier_dim * (i in self.skips) for i, n in enumerate(sizes)]
            self.linears = nn.ModuleList(map(nn.Linear, inputs, sizes[1:] + [1]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(width) for _ in range(depth - 1))

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Intensity at normalised coordinates ``p`` of shape ``(n, 3)``; returns ``(n,)``."""
        x = enc = self.encoding(p)
        last = len(self.linears) - 1
        for i, linear in enumerate(self.linears):
            if i in self.skips:
                x = torch.cat([x, enc], dim=-1)
            x = linear(x)
            if i < last:
                x = torch.relu_(self.norms[i](x))
        return x.squeeze(-1)


class FoldedIREM(nn.Module):
    """An eval-mode IREM for inference, each BatchNorm folded into the Linear before it:
    ``BN(W x + b) = (s W) x + s (b - mean) + beta`` with ``s = g / sqrt(var + eps)``."""

    def __init__(self, model: IREM):
        super().__init__()
        self.encoding = model.encoding
        self.skips = model.skips
        linears = []
        with torch.no_grad():
            for i, lin in enumerate(model.linears):
                w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
                if i < len(model.norms):
                    bn = model.norms[i]
                    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    w, b = w * s[:, None], (b - bn.running_mean) * s + bn.bias
                # skip_init: no draw from the global random generator
                folded = skip_init(nn.Linear, lin.in_features, lin.out_features, device=w.device)
                folded.weight.copy_(w)
                folded.bias.copy_(b)
                linears.append(folded)
        self.linears = nn.ModuleList(linears).requires_grad_(False)
        self.norms = nn.ModuleList(nn.Identity() for _ in model.norms)
        self.eval()

    forward = IREM.forward  # the same layers, with identities where the BatchNorms were


def for_inference(model: nn.Module) -> nn.Module:
    """The fastest equivalent module for evaluation: IREM with folded BatchNorm, others as is."""
    return FoldedIREM(model) if isinstance(model, IREM) else model.eval()
