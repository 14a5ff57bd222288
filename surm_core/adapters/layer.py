"""The wrapped layers: a frozen ``nn.Linear`` / GPT-2 ``Conv1D`` plus a structured adapter.

GPT-2's ``transformers.pytorch_utils.Conv1D`` is a linear layer whose weight is stored
transposed, as ``(d_in, d_out)``, and applied as ``x @ W``. The adapters always work in the
``(d_out, d_in)`` convention of ``nn.Linear`` and of ``to_dense()``, so the only place the layout
matters is where ΔW meets the stored weight: shapes are read from the transposed weight and
:meth:`DeltaLayer.merge` adds ``ΔWᵀ`` to a ``Conv1D``'s weight.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..families import StructuredMatrix

ADAPTABLE_TYPES = (nn.Linear, Conv1D)


def layer_shape(layer: nn.Module) -> tuple[int, int]:
    """``(d_out, d_in)`` of a linear layer, whatever its weight layout."""
    d0, d1 = layer.weight.shape
    return (d1, d0) if isinstance(layer, Conv1D) else (d0, d1)


class AdaptedLayer(nn.Module):
    """A frozen ``base_layer`` with a trainable structured ``adapter`` on the same device and dtype.

    Every parameter outside ``base_layer`` is an adapter tensor (what gets trained and saved).
    """

    def __init__(self, base_layer: nn.Module, adapter: StructuredMatrix, scale: float, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter.to(device=base_layer.weight.device, dtype=base_layer.weight.dtype)
        self.scale = scale
        self.dropout = nn.Dropout(dropout)
        self.train(base_layer.training)  # new modules start in training mode; follow the model's

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's tensors by name relative to this layer (``adapter.c``, …)."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("base_layer.")}

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class DeltaLayer(AdaptedLayer):
    """``y = W0 x + b0 + scale·ΔW dropout(x)``; :meth:`merge` folds ``scale·ΔW`` into ``W0``."""

    placement = "delta"

    def __init__(self, base_layer, adapter, scale, dropout):
        super().__init__(base_layer, adapter, scale, dropout)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        return y + (self.scale * self.adapter(self.dropout(x))).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """``scale·ΔW`` in the stored weight's layout (transposed for ``Conv1D``)."""
        delta = self.scale * self.adapter.to_dense()
        return delta.T if isinstance(self.base_layer, Conv1D) else delta

    @torch.no_grad()
    def merge(self) -> None:
        self.base_layer.weight.add_(self.delta_weight().to(self.base_layer.weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        self.base_layer.weight.sub_(self.delta_weight().to(self.base_layer.weight.dtype))
        self.merged = False


class ResidualAdapterLayer(AdaptedLayer):
    """SURM's adapter after the layer: ``h ← h + scale·gelu(S dropout(h)) + b``, S square.

    GELU because its slope at 0 is 1/2: from the zero start (S = 0, b = 0) gradients reach S,
    which ReLU's flat zero would block. The map is not linear in h, so it cannot be merged.
    """

    placement = "adapter"
    merged = False

    def __init__(self, base_layer, adapter, scale, dropout):
        super().__init__(base_layer, adapter, scale, dropout)
        w = base_layer.weight
        self.adapter_bias = nn.Parameter(torch.zeros(adapter.d_out, device=w.device, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        out = self.scale * nn.functional.gelu(self.adapter(self.dropout(h))) + self.adapter_bias
        return h + out.to(h.dtype)
