"""The wrapped layer: a frozen ``nn.Linear`` / GPT-2 ``Conv1D`` plus named structured adapters.

One :class:`AdaptedLayer` holds any number of adapters by name (``adapters["default"]``, as
PEFT's ``lora_A[adapter_name]``); the active one applies, the others wait. An adapter is placed
in one of two ways (``AdapterConfig.placement``): ``"delta"`` adds ``scale·ΔW x`` to the layer's
output (LoRA-style, mergeable), ``"adapter"`` follows the layer with SURM's residual adapter
``h ← h + scale·gelu(S h) + b``.

GPT-2's ``transformers.pytorch_utils.Conv1D`` is a linear layer whose weight is stored
transposed, as ``(d_in, d_out)``, and applied as ``x @ W``. The adapters always work in the
``(d_out, d_in)`` convention of ``nn.Linear`` and of ``to_dense()``, so the only place the layout
matters is where ΔW meets the stored weight: shapes are read from the transposed weight and
:meth:`AdaptedLayer.merge` adds ``ΔWᵀ`` to a ``Conv1D``'s weight.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..families import StructuredMatrix

ADAPTABLE_TYPES = (nn.Linear, Conv1D)
#: The name an adapter gets when none is given, as in PEFT.
DEFAULT_ADAPTER = "default"


def layer_shape(layer: nn.Module) -> tuple[int, int]:
    """``(d_out, d_in)`` of a linear layer, whatever its weight layout."""
    d0, d1 = layer.weight.shape
    return (d1, d0) if isinstance(layer, Conv1D) else (d0, d1)


class AdaptedLayer(nn.Module):
    """A frozen ``base_layer`` with named structured adapters on its device and dtype.

    Per adapter name: the structured map in ``adapters`` (ΔW, or S for the residual placement),
    its input dropout in ``dropouts``, the residual placement's bias in ``adapter_biases``, its placement
    and scale. ``active_adapter`` names the one that applies (a layer may lack it: a different
    adapter targets other layers; then the layer is its base layer). ``enabled=False`` turns the
    adapters off (:func:`surm_core.disable_adapter`), ``merged_adapter`` names the adapter whose
    ``scale·ΔW`` is folded into the base weight.

    The properties ``adapter``, ``dropout``, ``scale``, ``placement`` and ``adapter_bias`` read the
    active adapter's parts.
    """

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.adapters = nn.ModuleDict()
        self.dropouts = nn.ModuleDict()
        self.adapter_biases = nn.ParameterDict()
        self.placements: dict[str, str] = {}
        self.scales: dict[str, float] = {}
        self.active_adapter: str | None = None
        self.enabled = True
        self.merged_adapter: str | None = None
        self.train(base_layer.training)  # new modules start in training mode; follow the model's

    def add_adapter(self, name: str, adapter: StructuredMatrix, bias: nn.Parameter | None, placement: str,
                    scale: float, dropout: float) -> None:
        """Hold ``adapter`` (and, for ``placement="adapter"``, its ``bias``) under ``name``."""
        self.adapters[name] = adapter
        self.dropouts[name] = nn.Dropout(dropout).train(self.training)
        if bias is not None:
            self.adapter_biases[name] = bias
        self.placements[name] = placement
        self.scales[name] = scale

    @property
    def adapter(self) -> StructuredMatrix:
        return self.adapters[self.active_adapter]

    @property
    def dropout(self) -> nn.Dropout:
        return self.dropouts[self.active_adapter]

    @property
    def adapter_bias(self) -> nn.Parameter:
        return self.adapter_biases[self.active_adapter]

    @property
    def scale(self) -> float:
        return self.scales[self.active_adapter]

    @property
    def placement(self) -> str:
        return self.placements[self.active_adapter]

    @property
    def merged(self) -> bool:
        return self.merged_adapter is not None

    def adapter_parameters(self, name: str | None = None) -> dict[str, nn.Parameter]:
        """The tensors of adapter ``name`` (default: the active one) by name relative to this layer
        (``adapters.default.c``, ``adapter_biases.default``); empty when this layer lacks it."""
        name = self.active_adapter if name is None else name
        if name not in self.adapters:
            return {}
        out = {f"adapters.{name}.{k}": p for k, p in self.adapters[name].named_parameters()}
        if name in self.adapter_biases:
            out[f"adapter_biases.{name}"] = self.adapter_biases[name]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        name = self.active_adapter
        if not self.enabled or name not in self.adapters or self.merged_adapter == name:
            return y
        scale, adapter, dropout = self.scales[name], self.adapters[name], self.dropouts[name]
        if self.placements[name] == "delta":  # y = W0 x + b0 + scale·ΔW dropout(x)
            return y + (scale * adapter(dropout(x))).to(y.dtype)
        # SURM's adapter after the layer, h + scale·gelu(S dropout(h)) + b. GELU because its slope
        # at 0 is 1/2: from the zero start (S = 0, b = 0) gradients reach S, which ReLU's flat zero
        # would block. The map is not linear in h, so it cannot be merged.
        out = scale * nn.functional.gelu(adapter(dropout(y))) + self.adapter_biases[name]
        return y + out.to(y.dtype)

    def delta_weight(self, name: str) -> torch.Tensor:
        """``scale·ΔW`` of adapter ``name`` in the stored weight's layout (transposed for ``Conv1D``)."""
        delta = self.scales[name] * self.adapters[name].to_dense()
        return delta.T if isinstance(self.base_layer, Conv1D) else delta

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the active adapter's ``scale·ΔW`` into the base weight."""
        name = self.active_adapter
        self.base_layer.weight.add_(self.delta_weight(name).to(self.base_layer.weight.dtype))
        self.merged_adapter = name

    @torch.no_grad()
    def unmerge(self) -> None:
        self.base_layer.weight.sub_(self.delta_weight(self.merged_adapter).to(self.base_layer.weight.dtype))
        self.merged_adapter = None

    def extra_repr(self) -> str:
        return f"active_adapter={self.active_adapter!r}, scales={self.scales}"


class DeltaLayer(AdaptedLayer):
    """A layer with one ``"delta"`` adapter named ``"default"``: ``y = W0 x + b0 + scale·ΔW dropout(x)``,
    to use a structured map as an adapter of one layer without :func:`surm_core.inject`.

    >>> layer = DeltaLayer(nn.Linear(4, 4), make("circulant", 4, 4), scale=1.0, dropout=0.0)  # doctest: +SKIP
    """

    def __init__(self, base_layer: nn.Module, adapter: StructuredMatrix, scale: float, dropout: float):
        super().__init__(base_layer)
        w = base_layer.weight
        self.add_adapter(DEFAULT_ADAPTER, adapter.to(device=w.device, dtype=w.dtype), None, "delta", scale, dropout)
        self.active_adapter = DEFAULT_ADAPTER
