"""What the explorer app needs besides widgets: the results each tab shows, fine-tuning runs in a
background thread, and the runs directory (table, Pareto view, downloads). One module per tab.

Plain Python (no Gradio), so all of it is tested without a browser; ``app.py`` only wires widgets
to these functions. Bad input raises ``ValueError`` with a message meant for the page.

>>> result = explore("circulant", 64, 64, budget=64, seed=0)
>>> result.config["hparams"], result.config["num_params"]
({'block': 64}, 64)
"""
from .compare import (DIAL_MAX_R, DIAL_SIZE, LDR_BUDGET_PER_ROW, TABLE_COLUMNS, TARGET_KINDS, Comparison, Dial,
                      check_families, compare, compare_budgets, compare_stages, dial_stages, format_hparams)
from .explore import (LARGE_AT_ONCE, MAX_EXPLORE_SIZE, OPERATORS, QUICK_CELLS, SLIDER_STEPS, Estimate, Exploration,
                      budget_note, budget_range, check_explore_size, check_seed, clamp_budget, estimate, explore,
                      explore_stages, slider_budget, slider_position)
from .links import PRESETS, LinkView, parse_query, presets_markdown, query_string
from .finetune import METHODS, FinetuneJob, device_name, finetune_config, new_run_dir, run_name
from .runs import RUN_COLUMNS, comparable, load_runs, package_run, reference_params, runs_rows
