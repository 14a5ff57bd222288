"""The Search tab: which family, at what budget, for this model and data: a structure search in
its own process, its trials and Pareto front live, and "train this one" into the Fine-tune tab."""
from __future__ import annotations

import html

import gradio as gr

import visualize
from surm_core import session
from surm_core.search import HEAD_ONLY
from .errors import visible_errors
from .finetune import PLACEHOLDERS, built_in_dropdown

#: The live search view is refreshed this often (seconds).
REFRESH_S = 2.0
FAMILIES = [value for _, value in session.METHODS if value != "full"]
#: The Fine-tune tab's fields that "train this one" fills, by their elem_id, as finetune_fields names them.
FINETUNE_FIELDS = {"model": "model", "task": "task", "built_in": "built_in", "dataset": "dataset", "method": "method",
                   "budget": "ft_budget", "rank": "lora_r",
                   "alpha": "lora_alpha", "targets": "targets", "custom_targets": "custom_targets", "steps": "steps",
                   "batch_size": "batch_size", "lr": "lr", "warmup": "warmup", "max_length": "max_length", "seed": "ft_seed",
                   "eval_every": "eval_every", "eval_size": "eval_size"}


def status_html(job: session.SearchJob) -> str:
    return f"<p>{html.escape(job.status())}</p>"


def build(demo: gr.Blocks, tabs: gr.Tabs, runs_dir, shared: bool = False, limits: session.Limits = session.Limits(),
          searches: session.Searches | None = None) -> None:
    """The tab's widgets; built after the Fine-tune tab, whose fields "train this one" fills and
    whose workspace key says where this browser's searches go."""
    searches = searches or session.Searches()
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    finetune_fields = [by_id[e] for e in FINETUNE_FIELDS.values()]
    workspace_key = by_id["workspace_key"]

    def views(job: session.SearchJob):
        trials = job.trials()
        study = job.study()
        started = [t["number"] for t in trials if t["state"] in ("complete", "pruned", "running", "stopped", "failed")]
        objective = session.objective(study)
        return (status_html(job), {"headers": session.trial_columns(study), "data": session.trial_rows(trials)},
                visualize.search_front(trials, objective), session.front_line(study) if study is not None else "",
                gr.Dropdown(choices=started, value=started[-1] if started else None))

    @visible_errors
    def start(model, dataset, families, min_budget, max_budget, trials, steps, batch_size, max_length, seed, key,
              task, built_in, request: gr.Request):
        """Search live; yields the trials table and the front about every two seconds."""
        search = session.search_settings(model, dataset, families, min_budget, max_budget, trials, steps, batch_size,
                                         max_length, seed, limits, task=task, built_in=built_in)
        workspace = None if shared else session.workspace_dir(runs_dir, key or request.session_hash)
        name = session.check_run_name(f"search-{'-'.join(search.space.families)}-{search.space.max_budget}")
        job = searches.start(request.session_hash,
                             lambda: session.SearchJob(session.search_dir(runs_dir, workspace, name), search, int(trials)))
        try:
            while not job.wait(REFRESH_S):
                yield views(job)
        finally:
            job.stop()  # a closed page stops its search (the trials done stay in its directory)
        yield views(job)
        if job.error is not None:
            raise gr.Error(f"The search failed: {job.error}", print_exception=False)

    def stop(request: gr.Request):
        job = searches.of(request.session_hash)
        if job is None or job.done():
            raise gr.Error("No search of yours is running.", print_exception=False)
        job.stop()
        gr.Info("Stopping after the running trial's current step…")

    @visible_errors
    def train_this_one(number, request: gr.Request):
        """Fill the Fine-tune tab with the chosen trial's settings and open it."""
        job = searches.of(request.session_hash)
        study = job.study() if job is not None else None
        if study is None or number in (None, ""):
            raise ValueError("start a search and choose one of its trials first")
        return fill_finetune(*session.finetune_fields(study, int(number)))

    @visible_errors
    def train_file(path):
        """Fill the Fine-tune tab from a configuration file (a search's best.json) and open it."""
        return fill_finetune(*session.config_file_fields(path))

    def fill_finetune(fields: dict, note: str):
        gr.Info(note)
        values = [fields.get(name, gr.skip()) for name in FINETUNE_FIELDS]
        return (*values, gr.Tabs(selected="finetune"), note)

    def show_task(task, current):
        return (built_in_dropdown(task, current, info=session.built_in_datasets(task)[1] or None),
                gr.File(file_types=session.UPLOAD_TYPES[task]), gr.Textbox(placeholder=PLACEHOLDERS[task]))

    # -- layout ----------------------------------------------------------------------------------
    gr.Markdown("Short fine-tuning trials sampled by Optuna over family, budget per layer and learning rate, toward "
                "two objectives: a higher eval accuracy (a causal LM's: a lower eval loss) with fewer trainable "
                "parameters, so the trials spread along the front. A trial below the median of the finished trials "
                "no larger than it is stopped early (pruned). One search or "
                f"fine-tune at a time on **{session.device_name()}**; others wait in line.")
    with gr.Row():
        with gr.Column():
            task = gr.Radio(session.TASK_CHOICES, value="text-classification", label="task", elem_id="search_task")
            model = gr.Textbox("", label="model", placeholder=PLACEHOLDERS["text-classification"],
                               info="a local directory or a hub id", elem_id="search_model")
            built_in = built_in_dropdown("text-classification", label="built-in dataset", allow_custom_value=True,
                                         elem_id="search_built_in")
            dataset = gr.File(label="or upload a dataset", file_types=session.UPLOAD_TYPES["text-classification"],
                              elem_id="search_dataset", height=110)
        with gr.Column():
            families = gr.CheckboxGroup(FAMILIES, value=["circulant", "monarch", "lowrank"], label="families",
                                        elem_id="search_families",
                                        info=f"lowrank is LoRA; {HEAD_ONLY} trains the head alone (first, at fixed rates)")
            with gr.Row():
                min_budget = gr.Number(0, label="min budget per layer", info="0: each family's smallest",
                                       elem_id="search_min_budget")
                max_budget = gr.Number(3072, label="max budget per layer", elem_id="search_max_budget")
        with gr.Column():
            with gr.Row():
                trials = gr.Number(12, label="trials", elem_id="search_trials")
                steps = gr.Number(60, label="steps per trial", elem_id="search_steps")
            with gr.Row():
                batch_size = gr.Number(16, label="batch size", elem_id="search_batch_size")
                max_length = gr.Number(64, label="max length", elem_id="search_max_length")
                seed = gr.Number(0, label="seed", elem_id="search_seed")
    with gr.Row():
        start_btn = gr.Button("Start search", variant="primary", elem_id="search_start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="search_stop")
    status = gr.HTML(elem_id="search_status")
    best = gr.Markdown(elem_id="search_best")
    with gr.Row():
        with gr.Column(scale=3):
            table = gr.Dataframe(headers=session.TRIAL_COLUMNS, label="trials (newest first)", elem_id="search_table",
                                 wrap=True, interactive=False, max_height=420,
                                 column_widths=["5%", "12%", "14%", "19%", "11%", "10%", "12%", "17%"])
            with gr.Row():
                picked = gr.Dropdown([], label="trial", elem_id="search_pick", scale=1)
                train_btn = gr.Button("Train this one", elem_id="search_train", scale=1)
                load_btn = gr.UploadButton("Train from a JSON file…", file_types=[".json"], elem_id="search_load", scale=1)
            note = gr.Markdown(elem_id="search_note")
        front = gr.Plot(label="Pareto view", elem_id="search_front", scale=2)

    # -- events ----------------------------------------------------------------------------------
    inputs = [model, dataset, families, min_budget, max_budget, trials, steps, batch_size, max_length, seed, workspace_key,
              task, built_in]
    start_btn.click(start, inputs, [status, table, front, best, picked], api_name="search", concurrency_limit=None,
                    trigger_mode="multiple")
    stop_btn.click(stop, None, None, api_name="search_stop")
    task.change(show_task, [task, built_in], [built_in, dataset, model], api_visibility="private")
    model.blur(session.typed_model_task, [model, task], task, api_visibility="private")
    train_btn.click(train_this_one, picked, [*finetune_fields, tabs, note], api_name="search_train")
    load_btn.upload(train_file, load_btn, [*finetune_fields, tabs, note], api_name="search_load")
