"""Links to a view of the explorer: every Explore and Compare setting as query parameters of the
page's URL, read back when the URL is opened, and the lecture presets.

The page writes the shown view's canonical query (:func:`query_string`) into its URL after each
change, so the browser's back and forward buttons move between explorations and a copied link
opens the same view. A parameter at its default is left out; a bad one is replaced by its
default, with a note saying so.

>>> view = parse_query("?tab=explore&family=toeplitz&d_out=96&d_in=40&budget=300&seed=3")
>>> view.explore["budget"], view.notes
(300, [])
>>> query_string(view)
'tab=explore&family=toeplitz&d_out=96&d_in=40&budget=300&seed=3'
"""
from __future__ import annotations

import dataclasses
import urllib.parse

from ..families import FAMILIES
from .compare import DIAL_MAX_R, TARGET_KINDS
from .explore import OPERATORS

TABS = ("explore", "compare", "finetune", "search")
#: Explore's settings and their defaults (budget None: the family's smallest).
EXPLORE_DEFAULTS = {"family": "circulant", "d_out": 64, "d_in": 64, "budget": None, "seed": 0,
                    "A": "Z1", "B": "Z-1", "large": False}
#: Compare's settings and their defaults (families: all of them; r: the displacement-rank dial).
COMPARE_DEFAULTS = {"target": "gaussian", "size": 64, "table_budget": 512, "compare_seed": 0,
                    "families": list(FAMILIES), "r": 1}
#: Upper bound of integer parameters read from a link (the explorer refuses what it cannot show
#: with its own message; this only keeps absurd numbers out of the controls).
LARGEST_NUMBER = 2 ** 53


@dataclasses.dataclass
class LinkView:
    """A view of the page: its tab and each tab's settings; ``notes`` say what a link got wrong.
    ``tab`` is None for a link that names no tab: the page keeps the tab it shows."""

    tab: str | None = "explore"
    explore: dict = dataclasses.field(default_factory=lambda: dict(EXPLORE_DEFAULTS))
    compare: dict = dataclasses.field(default_factory=lambda: {**COMPARE_DEFAULTS,
                                                               "families": list(COMPARE_DEFAULTS["families"])})
    notes: list = dataclasses.field(default_factory=list)


def _number(text: str, name: str, low: int, notes: list, default):
    try:
        value = int(text)
    except ValueError:
        notes.append(f"{name}={text!r} is not a whole number: using {default if default is not None else 'the default'}")
        return default
    if not low <= value <= LARGEST_NUMBER:
        notes.append(f"{name}={value} is out of range: using {default if default is not None else 'the default'}")
        return default
    return value


def _choice(text: str, name: str, choices, notes: list, default):
    if text in choices:
        return text
    notes.append(f"{name}={text!r} is not one of {', '.join(map(str, choices))}: using {default}")
    return default


def parse_query(query: str) -> LinkView:
    """The :class:`LinkView` a URL's query string (``"?tab=…&family=…"``, with or without "?")
    asks for. Unknown parameters are ignored; a bad value is replaced by its default and named
    in ``notes``; a query without ``tab`` leaves ``tab`` None. Sizes and budgets are only checked to be positive whole numbers here: the
    tabs refuse sizes they cannot show and move budgets into range, each with its own message.
    """
    params = {k: v[-1] for k, v in urllib.parse.parse_qs(query.lstrip("?"), keep_blank_values=True).items()}
    view, notes = LinkView(), []
    view.tab = _choice(params["tab"], "tab", TABS, notes, "explore") if "tab" in params else None
    ex, co = view.explore, view.compare
    if "family" in params:
        ex["family"] = _choice(params["family"], "family", list(FAMILIES), notes, ex["family"])
    for name in ("d_out", "d_in", "budget"):
        if name in params:
            ex[name] = _number(params[name], name, 1, notes, ex[name])
    if "seed" in params:
        ex["seed"] = _number(params["seed"], "seed", 0, notes, ex["seed"])
    for name in ("A", "B"):
        if name in params:
            ex[name] = _choice(params[name], name, OPERATORS, notes, ex[name])
    if "large" in params:
        ex["large"] = params["large"] in ("1", "true", "yes")
    if "target" in params:
        co["target"] = _choice(params["target"], "target", TARGET_KINDS, notes, co["target"])
    for name, low in (("size", 1), ("table_budget", 1), ("compare_seed", 0)):
        if name in params:
            co[name] = _number(params[name], name, low, notes, co[name])
    if "families" in params:
        asked = [f for f in params["families"].split(",") if f]
        unknown = [f for f in asked if f not in FAMILIES]
        if unknown:
            notes.append(f"families {', '.join(unknown)} unknown: left out")
        co["families"] = [f for f in FAMILIES if f in asked] or list(FAMILIES)
    if "r" in params:
        co["r"] = _number(params["r"], "r", 1, notes, co["r"])
        if co["r"] > DIAL_MAX_R:
            notes.append(f"r={co['r']}: the dial goes up to {DIAL_MAX_R}; using 1")
            co["r"] = 1
    view.notes = notes
    return view


def query_string(view: LinkView) -> str:
    """The canonical query (no "?") of a view: the tab, then every setting that differs from its
    default (on the Explore tab its family, size, budget and seed always: a link names its map)."""
    parts = [("tab", view.tab)]
    always = ("family", "d_out", "d_in", "budget", "seed") if view.tab == "explore" else ()
    for name, value in view.explore.items():
        if name in always or value != EXPLORE_DEFAULTS[name]:
            parts.append((name, _text(value)))
    for name, value in view.compare.items():
        if value != COMPARE_DEFAULTS[name]:
            parts.append((name, _text(value)))
    return urllib.parse.urlencode([(k, v) for k, v in parts if v is not None], safe=",")


def _text(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(value)
    return None if value is None else str(value)


#: Named views for a lecture, in teaching order: (title, what it shows, query).
PRESETS = [
    ("Circulant: one vector, full rank",
     "64 numbers make a 64 × 64 matrix of rank 64; its eigenvalues are fft(c)",
     "tab=explore&family=circulant&d_out=64&d_in=64&budget=64&seed=0"),
    ("Toeplitz: displacement rank 2",
     "127 numbers, constant diagonals, and a displacement residual of rank 2",
     "tab=explore&family=toeplitz&d_out=64&d_in=64&budget=127&seed=0"),
    ("Tiles: a budget met by smaller circulants",
     "4 × 4 tiles of 16: the structure holds per tile, the displacement rank grows",
     "tab=explore&family=circulant&d_out=64&d_in=64&budget=256&seed=0"),
    ("LDR: the dial from 1 to n",
     "the nearest map of displacement rank r to a random PSD matrix, r = 1 … 16",
     "tab=compare&target=psd&families=lowrank,circulant,toeplitz"),
    ("Kronecker of a real weight",
     "MiniLM's layer-0 query weight against Kronecker and LoRA",
     "tab=compare&target=minilm_query&size=256&table_budget=2048&families=lowrank,kronecker"),
    ("Monarch vs LoRA at the same budget",
     "2,048 parameters: Monarch reaches full rank 256 (64 blocks of 4), LoRA rank 4 (the spectra overlaid)",
     "tab=explore&family=monarch&d_out=256&d_in=256&budget=2048&seed=0"),
]


def presets_markdown(base: str = "") -> str:
    """The presets as a markdown list of links (``base``: the app's address, "" for the page itself)."""
    return "\n".join(f"{i}. [{title}]({base}?{query}): {what}" for i, (title, what, query) in enumerate(PRESETS, 1))
