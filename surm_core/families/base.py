"""The contract every structured family follows.

A family is a ``torch.nn.Module`` that *is* a linear map ``ΔW ∈ R^{d_out × d_in}``:

* ``forward(x)`` maps ``(..., d_in) -> (..., d_out)`` with the family's fast algorithm and never
  builds the dense matrix;
* ``to_dense()`` builds the exact ``(d_out, d_in)`` matrix independently of ``forward`` (by
  gathering parameters into place), so the two can check each other;
* ``num_params`` is the number of trainable elements, ``hparams`` the hyperparameters that,
  together with ``shape``, rebuild the module.

To add a family: subclass :class:`StructuredMatrix`, implement ``__init__`` (create parameters,
call ``self._init_params``), ``forward``, ``to_dense``, and the three classmethods used by budget
fitting (``count``, ``rank_bound``, ``candidates``); then register it in ``families/__init__.py``.
"""
from __future__ import annotations

import math
import operator
from typing import NamedTuple

import torch
from torch import nn


def check_size(name: str, value) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` unless it is a positive integer."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def check_hparam_names(family: str, given: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for family '{family}'; "
            f"it takes {list(allowed) if allowed else 'none'}"
        )


class View(NamedTuple):
    """An array a family shows beside its dense matrix: a parameter as a reader sees it (the
    views with ``derived=False`` are all ``num_params`` numbers, each once), or a quantity
    derived from the parameters (a spectrum)."""

    title: str
    values: torch.Tensor  # 1-D: a vector; 2-D: a matrix
    derived: bool = False


class StructuredMatrix(nn.Module):
    """Base class of all families; see the module docstring for the contract."""

    family: str = ""
    #: Names of parameters set to zero by ``init="zero"``; the others keep a random value so
    #: that the zero map still has nonzero gradients (the adapter start of LoRA/MoRe/SURM).
    zero_params: tuple[str, ...] = ()

    def __init__(self, d_out: int, d_in: int, hparams: dict):
        super().__init__()
        self.d_out = check_size("d_out", d_out)
        self.d_in = check_size("d_in", d_in)
        self.hparams = dict(hparams)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.d_out, self.d_in)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self.hparams.items())
        return f"d_out={self.d_out}, d_in={self.d_in}" + (f", {hp}" if hp else "")

    # -- initialisation ---------------------------------------------------------------------
    def _init_params(self, init: str, seed: int | None) -> None:
        """Fill parameters: ``"random"`` draws every one, ``"zero"`` zeroes ``zero_params``.

        Random values are N(0, 1/fan) with ``fan`` the number of terms each output sums, so a
        random member has entries of order ``1/sqrt(d_in)`` whatever the family.
        """
        if init not in ("zero", "random"):
            raise ValueError(f"init must be 'zero' or 'random', got {init!r}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for name, p in self.named_parameters():
                if init == "zero" and name in self.zero_params:
                    p.zero_()
                else:
                    std = self._init_std(name)
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)

    def _init_std(self, name: str) -> float:
        return 1.0 / math.sqrt(self.d_in)

    # -- the map ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise ValueError(
                f"{self.family} map of shape {self.shape} expects inputs with last dimension "
                f"{self.d_in}, got {tuple(x.shape)}"
            )

    # -- what the explorer shows ---------------------------------------------------------------
    def parameter_views(self) -> list[View]:
        """The parameters as a reader sees them ("these numbers make that matrix"): by default
        each parameter under its own name, flattened to a matrix. Families override this."""
        return [View(name, p.detach().reshape(p.shape[0], -1) if p.ndim > 2 else p.detach())
                for name, p in self.named_parameters()]

    def layout_note(self) -> str:
        """How the shown map is laid out when that changes what its structure means ("" if not)."""
        return ""

    # -- budget fitting ---------------------------------------------------------------------
    @classmethod
    def count(cls, d_out: int, d_in: int, **hparams) -> int:  # pragma: no cover - abstract
        """Trainable parameters of the configuration, without building it."""
        raise NotImplementedError

    @classmethod
    def rank_bound(cls, d_out: int, d_in: int, **hparams) -> int:
        """Largest rank a member of this configuration can have."""
        return min(d_out, d_in)

    @classmethod
    def candidates(cls, d_out: int, d_in: int, budget: int):  # pragma: no cover - abstract
        """Configurations ``from_budget`` chooses from, as hparam dicts.

        A family may leave out configurations dominated by another one it yields (same shape,
        fewer parameters): e.g. for each block size only the largest rank that fits ``budget``.
        """
        raise NotImplementedError

    @classmethod
    def smallest(cls, d_out: int, d_in: int) -> dict:  # pragma: no cover - abstract
        """The configuration with the fewest parameters (named when a budget is too small)."""
        raise NotImplementedError

    @classmethod
    def preference(cls, d_out: int, d_in: int, **hparams) -> float:
        """Tie-break between configurations of equal size and rank bound (larger wins)."""
        return 0.0


def grid(d_out: int, d_in: int, block: int) -> tuple[int, int]:
    """Number of ``block × block`` tiles (rows, cols) that cover a ``d_out × d_in`` matrix."""
    return -(-d_out // block), -(-d_in // block)
