"""SURM Explorer's core: structured matrix families, their analysis, and adapters built on them."""
from .families import FAMILIES, StructuredMatrix, from_budget, make

__all__ = ["FAMILIES", "StructuredMatrix", "make", "from_budget"]
