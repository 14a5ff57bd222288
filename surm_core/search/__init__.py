"""Structure search: which family, at what size and learning rate, for a model and its data.

Short fine-tuning trials sampled by Optuna (TPE), stopped early when trials that could dominate
them were already better (:class:`FrontPruner`), kept in an Optuna storage that many worker
processes, on one machine or several, share. The result is the Pareto front of eval accuracy
against trainable parameters, and the best configuration (under a parameter cap), exported as
JSON that ``python -m surm_core.finetune --config FILE`` trains.

>>> from surm_core.finetune import FinetuneConfig
>>> search = Search(SearchSpace(["circulant", "monarch", "lowrank"], max_budget=3072),
...                 FinetuneConfig(steps=60, eval_every=20))
>>> study = run_search(search, "searches/s1", trials=40)     # doctest: +SKIP
>>> best(study).user_attrs["config"]["method"]               # doctest: +SKIP
'monarch'
"""
from .space import HEAD_ONLY, LR_RANGES, Layers, SearchSpace
from .study import FrontPruner, Search, best, export_config, front, run_search, write_config

__all__ = [
    "HEAD_ONLY",
    "LR_RANGES",
    "Layers",
    "SearchSpace",
    "Search",
    "FrontPruner",
    "run_search",
    "front",
    "best",
    "export_config",
    "write_config",
]
