"""What the explorer app needs besides widgets: the results each tab shows, fine-tunes in their own
processes (``jobs``) waiting for the device in one line (``device``), and the runs on disk (table,
Pareto view, downloads, workspaces). One module per tab.

Plain Python (no Gradio), so all of it is tested without a browser; ``app.py`` only wires widgets
to these functions. Bad input raises ``ValueError`` with a message meant for the page.

>>> result = explore("circulant", 64, 64, budget=64, seed=0)
>>> result.config["hparams"], result.config["num_params"]
({'block': 64}, 64)
"""
from .compare import (DIAL_MAX_R, DIAL_SIZE, LDR_BUDGET_PER_ROW, TABLE_COLUMNS, TARGET_KINDS, Comparison, Dial,
                      check_families, compare, compare_budgets, compare_stages, dial_stages, format_hparams)
from .explore import (LARGE_AT_ONCE, MAX_EXPLORE_SIZE, OPERATORS, QUICK_CELLS, SLIDER_STEPS, ExploreCost, Exploration,
                      budget_note, budget_range, check_explore_size, check_seed, clamp_budget, explore, explore_cost,
                      explore_stages, slider_budget, slider_position)
from .links import PRESETS, LinkView, parse_query, presets_markdown, query_string
from .device import DEVICE, DeviceLine
from .finetune import (METHODS, MODEL_HINTS, PLAN_COLUMNS, TARGETS, TASK_CHOICES, UPLOAD_HELP, UPLOAD_TYPES, Limits,
                       built_in_datasets, check_dataset, check_run_name, default_run_name, device_name, finetune_config,
                       plan, typed_model_task)
from .jobs import FinetuneJob, Finetunes, estimate, estimate_line, new_run, resumed_run
from .search import (LOSS_TRIAL_COLUMNS, TRIAL_COLUMNS, Searches, SearchJob, config_file_fields, finetune_fields,
                     front_line, objective, search_dir, search_settings, trial_columns, trial_dicts, trial_rows)
from .runs import (CAUSAL_COLUMNS, MAX_NEW_TOKENS, RUN_COLUMNS, classify, classify_image, columns, comparable, delete_run,
                   evaluated, filter_runs, find_run, generate, load_runs, model_label, new_run_dir, new_workspace_key,
                   package_run, reference_params, run_task, runs_rows, runs_view, snippet, workspace_dir)
