"""Short explanations of each structured family, written for a student (markdown).

Each family carries its own text (its class's ``description``): the same five parts for every
built-in one — what the matrix looks like (formula), how many parameters it trains, how it is
applied fast and what that costs, its displacement rank, and how a budget is met. A family
registered without a description is explained by its class docstring.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping

from .families import FAMILIES, family_class


def describe(family: str) -> str:
    """Markdown explaining ``family``: formula, parameter count, fast algorithm, displacement rank.

    >>> describe("dense").splitlines()[0]
    '### Dense (full fine-tuning of a layer)'
    """
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known families: {', '.join(FAMILIES)}")
    cls = family_class(family)
    if cls.description:
        return cls.description
    summary = inspect.cleandoc(cls.__doc__ or "(no description)").split("\n\n")[0]
    return f"### {family}\n{summary}"


class _Descriptions(Mapping):
    """Family name -> :func:`describe`'s markdown, following ``FAMILIES`` as families register."""

    def __getitem__(self, family):
        if family not in FAMILIES:
            raise KeyError(family)
        return describe(family)

    def __iter__(self):
        return iter(FAMILIES)

    def __len__(self):
        return len(FAMILIES)


_DESCRIPTIONS = _Descriptions()
