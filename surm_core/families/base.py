"""The contract every structured family follows.

A family is a ``torch.nn.Module`` that *is* a linear map ``ΔW ∈ R^{d_out × d_in}``:

* ``forward(x)`` maps ``(..., d_in) -> (..., d_out)`` with the family's fast algorithm and never
  builds the dense matrix;
* ``to_dense()`` builds the exact ``(d_out, d_in)`` matrix independently of ``forward`` (by
  gathering parameters into place), so the two can check each other, in O(d_out·d_in) memory;
* ``num_params`` is the number of trainable elements, ``hparams`` the hyperparameters that,
  together with ``shape``, rebuild the module.

Rules every family shares (enforced here):

* **Parameters.** A configuration has at most as many parameters as the dense ``d_out × d_in``
  map (or, where even the family's smallest configuration has more, as that one): anything
  larger is refused by :meth:`StructuredMatrix.__init__` from ``count()``, before a tensor is
  allocated. Default hyperparameters shrink to fit tiny layers.
* **Dtypes** (``nn.Linear``'s rule): an input must have the parameters' dtype, else
  ``forward`` raises a ``ValueError`` naming both. Under ``torch.autocast`` any floating input
  is accepted, as autocast's matmuls accept it: the matmul families leave the cast to autocast,
  the FFT families compute in float32 (FFTs have no bfloat16 kernels) and return the input's
  dtype.

A family is one file. To add one (from any code, ``surm_core.register_family``): subclass
:class:`StructuredMatrix` and give it

* ``family`` (its name), ``__init__(d_out, d_in, init="zero", seed=None, **hparams)`` that calls
  ``super().__init__(d_out, d_in, resolved_hparams)``, creates the parameters and calls
  ``self._init_params(init, seed)``; ``forward`` (starting with ``self.check_input(x)``) and
  ``to_dense``;
* the classmethods of budget fitting: ``count``, ``candidates``, ``smallest`` (and optionally
  ``rank_bound``, ``preference``);
* optionally what the analysis and the figures use when present, with generic dense fallbacks
  otherwise: ``singular_values()``, ``eigenvalues()`` (from the structure, without the dense
  matrix), ``project(W)`` (the nearest member in closed form; else ``analysis.nearest`` fits the
  parameters by L-BFGS), ``description`` (markdown for the Explore tab; else the class
  docstring), ``color``, ``tile_edges()``, ``eigenvalue_caption()``.
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


def float64(t: torch.Tensor) -> torch.Tensor:
    """A parameter as a detached float64 CPU tensor (what spectra and projections compute in)."""
    return t.detach().to("cpu", torch.float64)


def edges(step: int, size: int) -> list[int]:
    """Where blocks of ``step`` start inside ``size`` (0 excluded): the lines a heatmap draws."""
    return list(range(step, size, step))


class StructuredMatrix(nn.Module):
    """Base class of all families; see the module docstring for the contract."""

    family: str = ""
    #: Names of parameters set to zero by ``init="zero"``; the others keep a random value so
    #: that the zero map still has nonzero gradients (the adapter start of LoRA/MoRe/SURM).
    zero_params: tuple[str, ...] = ()
    #: Markdown explaining the family to a student (formula, parameters, fast algorithm,
    #: displacement rank, budget); empty: ``explain.describe`` uses the class docstring.
    description: str = ""
    #: The family's colour in every figure; None: grey.
    color: str | None = None

    def __init__(self, d_out: int, d_in: int, hparams: dict):
        super().__init__()
        self.d_out = check_size("d_out", d_out)
        self.d_in = check_size("d_in", d_in)
        self.hparams = dict(hparams)
        count, dense = type(self).count(self.d_out, self.d_in, **self.hparams), self.d_out * self.d_in
        if count > dense and count > (limit := type(self).max_params(self.d_out, self.d_in)):
            smallest = f" and than the family's smallest configuration ({limit:,})" if limit > dense else ""
            raise ValueError(
                f"{self.family} with {self.hparams} has {count:,} parameters, more than a dense "
                f"{self.d_out}×{self.d_in} map ({dense:,}){smallest}; use hyperparameters with at "
                f"most {limit:,} parameters (from_budget picks the most expressive that fit)"
            )

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
        """ValueError unless x's last dimension is ``d_in`` and its dtype the parameters' (any
        floating dtype under autocast; see the module docstring)."""
        if x.shape[-1] != self.d_in:
            raise ValueError(
                f"{self.family} map of shape {self.shape} expects inputs with last dimension "
                f"{self.d_in}, got {tuple(x.shape)}"
            )
        dtype = next(self.parameters()).dtype
        if x.dtype != dtype and not (x.is_floating_point() and torch.is_autocast_enabled(x.device.type)):
            raise ValueError(
                f"{self.family} map has {dtype} parameters but got a {x.dtype} input; convert "
                f"one to the other (x.to({dtype}) or module.to({x.dtype}))"
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
    def max_params(cls, d_out: int, d_in: int) -> int:
        """The most parameters a configuration may have: the dense map's ``d_out·d_in``, or the
        family's smallest configuration where even that has more (LoRA's r = 1 on a 1 × n map)."""
        dense = d_out * d_in
        smallest = cls.count(d_out, d_in, **cls.smallest(d_out, d_in))
        return max(dense, smallest)

    @classmethod
    def rank_bound(cls, d_out: int, d_in: int, **hparams) -> int:
        """Largest rank a member of this configuration can have."""
        return min(d_out, d_in)

    @classmethod
    def candidates(cls, d_out: int, d_in: int, budget: int):  # pragma: no cover - abstract
        """Configurations ``from_budget`` chooses from, as hparam dicts: only valid ones (at most
        ``min(budget, max_params(d_out, d_in))`` parameters; ``smallest`` must not call this).

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

    @classmethod
    def best_within(cls, d_out: int, d_in: int, budget: int) -> dict | None:
        """The most expressive configuration with at most ``budget`` parameters (None: none fits).

        The same rule for every family: the most parameters, then the highest rank bound, then
        the family's ``preference``.
        """
        best, best_key = None, None
        for hp in cls.candidates(d_out, d_in, budget):
            n = cls.count(d_out, d_in, **hp)
            if n > budget:
                continue
            key = (n, cls.rank_bound(d_out, d_in, **hp), cls.preference(d_out, d_in, **hp))
            if best_key is None or key > best_key:
                best, best_key = hp, key
        return best

    # -- optional structure (analysis and figures fall back to the dense matrix without it) --
    def singular_values(self) -> torch.Tensor | None:
        """Singular values from the structure (float64, any order; fewer than ``min(d_out, d_in)``
        means the rest are 0), or None: no shortcut, ``analysis.singular_values`` goes dense."""
        return None

    def eigenvalues(self) -> torch.Tensor | None:
        """Eigenvalues of a square map from the structure (complex128, any order; fewer than
        ``d_out`` means the rest are 0), or None: no shortcut."""
        return None

    def project(self, W: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Parameter values (by name) of the member of this configuration nearest to ``W`` (float64,
        ``d_out × d_in``) in Frobenius norm, or None: no closed form, ``analysis.nearest`` fits
        the parameters by L-BFGS."""
        return None

    def tile_edges(self) -> tuple[list[int], list[int]]:
        """Row and column indices where the family's tiles or blocks start (none by default)."""
        return [], []

    def eigenvalue_caption(self) -> str | None:
        """One line under the eigenvalue plot on what the structure says about them, or None."""
        return None


def grid(d_out: int, d_in: int, block: int) -> tuple[int, int]:
    """Number of ``block × block`` tiles (rows, cols) that cover a ``d_out × d_in`` matrix."""
    return -(-d_out // block), -(-d_in // block)


def lbfgs_best(loss, params: list[torch.Tensor], steps: int) -> list[torch.Tensor]:
    """The best values of ``params`` (leaf tensors that ``loss()`` reads, changed in place) seen
    in ``steps`` L-BFGS iterations on ``loss()``: never worse than the start, deterministic.
    Shared by fits without a closed form (ldr's ``project``) and the generic fallback of
    ``analysis.nearest``."""
    best = [math.inf, [p.detach().clone() for p in params]]
    opt = torch.optim.LBFGS(
        params, max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15
    )

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        if value.item() < best[0]:
            best[:] = value.item(), [p.detach().clone() for p in params]
        return value

    opt.step(closure)
    return best[1]
