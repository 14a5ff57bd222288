"""The Fine-tune tab: set up a run, watch it train (in its own process), then compare, download and
try the runs of your workspace."""
from __future__ import annotations

import html

import gradio as gr

import visualize
from surm_core import session
from .errors import visible_errors

#: The live fine-tuning view is refreshed this often (seconds).
REFRESH_S = 1.0
#: The model field's placeholder per task.
PLACEHOLDERS = {"text-classification": "all-MiniLM-L6-v2 (packaged)",
                "image-classification": "a vision model, e.g. google/vit-base-patch16-224-in21k",
                "causal-lm": "a causal LM, e.g. gpt2 or Qwen/Qwen2.5-0.5B"}
PRIVATE = ("Your runs are private to this browser: another visitor can neither list nor download them. "
           "To open them from another browser, copy this workspace key there; anyone with the key sees them.")
#: The runs table's columns (session.RUN_COLUMNS) as shares of its width: it fits the page and
#: wraps long names and statuses, rather than sizing columns by content and scrolling sideways.
RUN_COLUMN_WIDTHS = ["19%", "9%", "16%", "9%", "7%", "7%", "6%", "7%", "10%", "10%"]
SHARED = ("**Shared runs:** this server shows every run to everyone who opens it: they can list, download, "
          "try and delete all of them.")


def progress_html(job: session.FinetuneJob) -> str:
    return (f'<progress value="{job.progress():.4f}" max="1" style="width:100%;height:1.2em"></progress>'
            f"<p>{html.escape(job.status())}</p>")


def build(demo: gr.Blocks, runs_dir, shared: bool = False, limits: session.Limits = session.Limits(),
          finetunes: session.Finetunes | None = None) -> None:
    """The tab's widgets. Runs go to ``runs_dir``: to the browser's workspace, or with ``shared``
    to one workspace for everybody; fine-tunes are refused beyond ``limits``."""
    finetunes = finetunes or session.Finetunes()
    keys: dict[str, str] = {}  # workspace key per browser session (API clients get a fresh one)

    def workspace(request: gr.Request):
        if shared:
            return session.workspace_dir(runs_dir, None)
        key = keys.setdefault(request.session_hash, session.new_workspace_key())
        return session.workspace_dir(runs_dir, key)

    def my_runs(request: gr.Request) -> list[dict]:
        return session.load_runs(workspace(request), finetunes.active())[0]

    def views(request: gr.Request, query: str = "", selected: str | None = None, task: str = "text-classification"):
        """The runs of ``task``: their table (filtered by ``query``), its notes, the parameter and
        Pareto charts of the runs comparable with the ``selected`` run (else the latest), and the
        run picker."""
        view = session.runs_view(workspace(request), finetunes.active(), query, selected, task)
        return ({"headers": view.columns, "data": view.rows}, "\n".join(f"- {n}" for n in view.notes),
                visualize.parameter_bars(view.charted, view.references), visualize.pareto(view.charted, task),
                gr.Dropdown(choices=view.names, value=selected if selected in view.names else None))

    def watch(job: session.FinetuneJob, request: gr.Request, query: str):
        """Stream ``job`` to the page until it ends; the last update brings its summary, download and
        the runs views (of the run's task). A closed page stops it (it keeps what it reached)."""
        task = job.config.task or "text-classification"
        try:
            while not job.wait(REFRESH_S):
                yield (gr.skip(), progress_html(job), visualize.training_curves(job.events(), task),
                       *(gr.skip(),) * 7)
        finally:
            job.stop()
        if job.error is not None:  # a killed run still shows in the table, as interrupted
            yield gr.skip(), progress_html(job), gr.skip(), gr.skip(), gr.skip(), *views(request, query, task=task)
            if job.stopping and not job.events():
                gr.Info("Stopped before it trained: nothing to keep.")
                return
            raise gr.Error(f"Fine-tuning failed: {job.error}", print_exception=False)
        run = session.find_run(my_runs(request), job.name)
        yield (public_summary(run), progress_html(job), visualize.training_curves(job.events(), task),
               *downloads(run), *views(request, query, job.name, task))

    def downloads(run: dict):
        """A finished run's zip and the Python that loads it; nothing for a run without weights
        (interrupted, diverged)."""
        if run.get("stopped_reason") not in ("completed", "stopped"):
            return None, None
        try:
            code = session.snippet(run)
        except ValueError:  # its weights are missing
            return None, None
        return str(session.package_run(run)), code

    @visible_errors
    def finetune(model, dataset_file, text_column, label_column, method, budget, steps, batch_size, lr, seed,
                 lora_r, lora_alpha, targets, custom_targets, max_length, warmup, eval_every, eval_size, run_name,
                 task, built_in, chat_template, query, request: gr.Request):
        """Fine-tune live; yields the view about once a second, the summary and download at the end."""
        config = session.finetune_config(
            model, dataset_file, method, budget, steps, batch_size, lr, seed, text_column=text_column,
            label_column=label_column, rank=lora_r, alpha=lora_alpha, targets=targets,
            custom_targets=custom_targets, max_length=max_length, warmup_ratio=warmup, eval_every=eval_every,
            eval_size=eval_size, task=task, built_in=built_in, chat_template=chat_template, limits=limits)
        job = finetunes.start(request.session_hash,
                              lambda: session.new_run(workspace(request), config, run_name, limits))
        yield from watch(job, request, query)

    @visible_errors
    def resume(name, query, request: gr.Request):
        """Continue a stopped or killed run of yours from its last checkpoint, live."""
        if not name:
            raise ValueError("choose a stopped or interrupted run to resume")
        run = session.find_run(my_runs(request), name)
        job = finetunes.start(request.session_hash, lambda: session.resumed_run(run["dir"]))
        yield from watch(job, request, query)

    def refresh(query, selected, task, request: gr.Request):
        return views(request, query, selected, task)

    def pick_row(event: gr.SelectData):
        return event.row_value[0]

    def stop(request: gr.Request):
        job = finetunes.of(request.session_hash)
        if job is None or job.done():
            raise gr.Error("No fine-tune of yours is running.", print_exception=False)
        job.stop()
        gr.Info("Stopping after the current step…")

    @visible_errors
    def select(name, request: gr.Request):
        """The selected run's download (a zip of its weights and records), the Python that loads
        it, and its summary."""
        if not name:
            return None, None, None
        run = session.find_run(my_runs(request), name)
        return *downloads(run), public_summary(run)

    def picked_run(name, request: gr.Request) -> dict:
        if not name:
            raise ValueError("choose a finished run to try")
        return session.find_run(my_runs(request), name)

    @visible_errors
    def classify(name, text, request: gr.Request):
        return session.classify(picked_run(name, request), text)

    @visible_errors
    def predict(run: str, text: str, request: gr.Request) -> dict[str, float]:
        """Classify ``text`` with the finished text-classification run named ``run``: ``{label: probability}``."""
        return classify(run, text, request)

    @visible_errors
    def classify_image(name, image, request: gr.Request):
        """``{label: probability}`` of an image by the finished image-classification run ``name``."""
        return session.classify_image(picked_run(name, request), image)

    @visible_errors
    def generate(run: str, prompt: str, max_new_tokens: int, request: gr.Request) -> str:
        """The greedy completion of ``prompt`` by the finished causal-LM run named ``run``, up to
        ``max_new_tokens`` tokens."""
        return session.generate(picked_run(run, request), prompt, max_new_tokens)

    @visible_errors
    def estimate(model, dataset_file, text_column, label_column, method, budget, steps, batch_size, lr, seed,
                 lora_r, lora_alpha, targets, custom_targets, max_length, warmup, eval_every, eval_size,
                 task, built_in, chat_template):
        """The run's predicted wall time, from a few steps measured on this device."""
        config = session.finetune_config(
            model, dataset_file, method, budget, steps, batch_size, lr, seed, text_column=text_column,
            label_column=label_column, rank=lora_r, alpha=lora_alpha, targets=targets,
            custom_targets=custom_targets, max_length=max_length, warmup_ratio=warmup, eval_every=eval_every,
            eval_size=eval_size, task=task, built_in=built_in, chat_template=chat_template, limits=limits)
        session.check_dataset(config, limits)
        return session.estimate_line(session.estimate(config))

    @visible_errors
    def delete(name, query, task, request: gr.Request):
        if not name:
            raise ValueError("choose a run to delete")
        session.delete_run(session.find_run(my_runs(request), name))
        gr.Info(f"Deleted run {name!r}.")
        return views(request, query, task=task)

    def on_load(stored_key, task, request: gr.Request):
        """On page load: this browser's workspace (a new one the first time) and its runs."""
        if not shared:
            keys[request.session_hash] = stored_key or keys.get(request.session_hash) or session.new_workspace_key()
        key = keys.get(request.session_hash, "")
        return key, key, *views(request, task=task)

    @visible_errors
    def switch_workspace(key, task, request: gr.Request):
        """Open the workspace of ``key`` (runs made in another browser, or a named workspace)."""
        session.workspace_dir(runs_dir, key)  # checks the key
        keys[request.session_hash] = key.strip()
        return key.strip(), key.strip(), *views(request, task=task)

    def forget(request: gr.Request):
        keys.pop(request.session_hash, None)
        finetunes.forget(request.session_hash)

    def check_setup(model, dataset_file, text_column, label_column, method, budget, lora_r, lora_alpha, targets,
                    custom_targets, task, built_in):
        """What the settings would train (layers, trainable parameters), or why they cannot start."""
        try:
            config = session.finetune_config(
                model, dataset_file, method, budget, text_column=text_column, label_column=label_column,
                rank=lora_r, alpha=lora_alpha, targets=targets, custom_targets=custom_targets, task=task,
                built_in=built_in, limits=limits)
            line, rows = session.plan(config, limits)
        except ValueError as e:
            return f"**Cannot start:** {html.escape(str(e))}", []
        return line, rows

    def show_task(task, current):
        """What the task selector sets: the built-in datasets (the ``current`` one kept if it fits,
        as when the Search tab fills the fields), what an upload may be, the model's hint, the
        chat-template switch and the try box."""
        note = session.built_in_datasets(task)[1]
        help_line = f"Upload {session.UPLOAD_HELP[task]}, or leave it empty for the built-in dataset."
        return (built_in_dropdown(task, current),
                gr.File(file_types=session.UPLOAD_TYPES[task]),
                help_line + (f" {note}" if note else ""),
                gr.Textbox(placeholder=PLACEHOLDERS[task]),
                gr.Checkbox(visible=task == "causal-lm", value=False),
                gr.Row(visible=task == "text-classification"), gr.Row(visible=task == "image-classification"),
                gr.Row(visible=task == "causal-lm"))

    def show_size_fields(method):
        lora = method == "lowrank"
        adapter = method not in ("full", "head-only")
        return (gr.update(visible=adapter and not lora), gr.update(visible=lora), gr.update(visible=lora),
                gr.update(visible=adapter))

    # -- layout ----------------------------------------------------------------------------------
    gr.Markdown(f"Runs on **{session.device_name()}**, each in its own process; one fine-tune at a time "
                "(a second one waits in line, with its place shown).")
    if shared:
        gr.Markdown(SHARED, elem_id="shared_note")
    with gr.Accordion("Workspace", open=False, visible=not shared):
        gr.Markdown(PRIVATE)
        with gr.Row():
            key_box = gr.Textbox(label="workspace key", elem_id="workspace_key", scale=4)
            open_btn = gr.Button("Open workspace", scale=1)
    stored_key = gr.BrowserState(None, storage_key="surm-workspace")
    with gr.Row():
        with gr.Column():
            task = gr.Radio(session.TASK_CHOICES, value="text-classification", label="task", elem_id="task",
                            info="typing a model sets it from the model's config")
            model = gr.Textbox("", label="model", placeholder=PLACEHOLDERS["text-classification"],
                               info="a local directory or a hub id; empty: the packaged MiniLM (text only)",
                               elem_id="model")
            # any value is taken (an API client names one): the session says which fit the task
            built_in = built_in_dropdown("text-classification", label="built-in dataset", allow_custom_value=True,
                                         elem_id="built_in")
            dataset = gr.File(label="or upload a dataset", file_types=session.UPLOAD_TYPES["text-classification"],
                              elem_id="dataset", height=110)
            dataset_help = gr.Markdown(f"Upload {session.UPLOAD_HELP['text-classification']}, or leave it empty for "
                                       "the built-in dataset.", elem_id="dataset_help")
            with gr.Row():
                text_column = gr.Textbox("", label="text column", placeholder="auto")
                label_column = gr.Textbox("", label="label column", placeholder="auto")
            chat_template = gr.Checkbox(False, label="wrap prompts in the tokenizer's chat template", visible=False,
                                        elem_id="chat_template")
        with gr.Column():
            method = gr.Dropdown(session.METHODS, value="circulant", label="method", elem_id="method")
            ft_budget = gr.Number(384, label="budget per layer", elem_id="ft_budget",
                                  info="adapter parameters per adapted layer")
            with gr.Row():
                lora_r = gr.Number(8, label="LoRA rank r", elem_id="lora_r", visible=False)
                lora_alpha = gr.Number(16, label="LoRA alpha", elem_id="lora_alpha", visible=False)
            with gr.Row():
                targets = gr.Dropdown(session.TARGETS, value="attention-qv", label="target modules", elem_id="targets")
                custom_targets = gr.Textbox("", label="custom targets", placeholder="query, key, value  or a regex",
                                            elem_id="custom_targets")
        with gr.Column():
            with gr.Row():
                steps = gr.Number(100, label="steps", elem_id="steps")
                batch_size = gr.Number(16, label="batch size", elem_id="batch_size")
                lr = gr.Number(5e-3, label="learning rate", elem_id="lr")
            with gr.Row():
                max_length = gr.Number(128, label="max length", elem_id="max_length")
                warmup = gr.Number(0.1, label="warmup", info="share of the steps", elem_id="warmup")
                ft_seed = gr.Number(0, label="seed", elem_id="ft_seed")
            with gr.Row():
                eval_every = gr.Number(50, label="eval every", elem_id="eval_every")
                eval_size = gr.Textbox("512", label="eval size", info="test rows, or all", elem_id="eval_size")
            run_name = gr.Textbox("", label="run name", placeholder="default: method-size-targets-seed",
                                  elem_id="run_name")
    plan = gr.Markdown(elem_id="plan")
    with gr.Accordion("adapted layers", open=False):
        layers = gr.Dataframe(headers=session.PLAN_COLUMNS, elem_id="layers", wrap=True, interactive=False)
    with gr.Row(equal_height=True):
        estimate_btn = gr.Button("Estimate time", scale=0, min_width=160, size="sm", elem_id="estimate")
        estimated = gr.Markdown("Predicted wall time: press *Estimate time* (it times a few steps on this device).",
                                elem_id="estimated")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
    status = gr.HTML(label="status", elem_id="status")
    live = gr.Plot(label="training", elem_id="live")
    with gr.Row():
        query = gr.Textbox("", label="filter runs", placeholder="e.g. circulant stopped", elem_id="filter", scale=3)
    runs_table = gr.Dataframe(headers=session.RUN_COLUMNS, label="runs", elem_id="runs", wrap=True,
                              column_widths=RUN_COLUMN_WIDTHS, interactive=False)
    runs_note = gr.Markdown(elem_id="runs_note")
    with gr.Row():
        bars = gr.Plot(label="trainable parameters", elem_id="bars")
        front = gr.Plot(label="Pareto view", elem_id="pareto")
    with gr.Row():
        # any name is accepted (an API client names a run): the workspace decides what exists
        picked = gr.Dropdown([], label="run", elem_id="picked", scale=3, allow_custom_value=True)
        resume_btn = gr.Button("Resume run", scale=1, elem_id="resume")
        delete_btn = gr.Button("Delete run", variant="stop", scale=1, elem_id="delete")
    with gr.Row():
        download = gr.File(label="trained adapter (zip)", elem_id="download", scale=1)
        snippet = gr.Code(label="load the download in Python", language="python", elem_id="snippet", scale=2)
    with gr.Row() as try_text_row:
        try_text = gr.Textbox(label="try the selected run", placeholder="type a sentence, then Enter",
                              elem_id="try_text", scale=2)
        try_label = gr.Label(label="prediction", elem_id="try_label", scale=1)
    with gr.Row(visible=False) as try_image_row:
        try_image = gr.Image(label="try the selected run: an image", type="filepath", sources=["upload"],
                             elem_id="try_image", height=220, scale=2)
        try_image_label = gr.Label(label="prediction", elem_id="try_image_label", scale=1)
    with gr.Row(visible=False) as try_prompt_row:
        with gr.Column(scale=2):
            try_prompt = gr.Textbox(label="try the selected run: a prompt", placeholder="type a prompt, then Enter",
                                    lines=2, elem_id="try_prompt")
            with gr.Row():
                max_new_tokens = gr.Number(32, label="max new tokens", minimum=1, maximum=session.MAX_NEW_TOKENS,
                                           elem_id="max_new_tokens")
                generate_btn = gr.Button("Generate", elem_id="generate")
        try_completion = gr.Textbox(label="completion (greedy)", lines=4, interactive=False,
                                    elem_id="try_completion", scale=1)
    with gr.Accordion("summary of the selected run", open=False):
        summary = gr.JSON(label="summary", elem_id="summary")

    # -- events ----------------------------------------------------------------------------------
    fields = [model, dataset, text_column, label_column, method, ft_budget, steps, batch_size, lr, ft_seed,
              lora_r, lora_alpha, targets, custom_targets, max_length, warmup, eval_every, eval_size, run_name]
    task_fields = [task, built_in, chat_template]  # after the others: positional API calls keep working
    run_views = [runs_table, runs_note, bars, front, picked]
    live_views = [summary, status, live, download, snippet, *run_views]
    # no concurrency limit here: the device line (session.DEVICE) orders the runs, and says so
    start.click(finetune, [*fields, *task_fields, query], live_views, api_name="finetune", concurrency_limit=None,
                trigger_mode="multiple")
    resume_btn.click(resume, [picked, query], live_views, api_name="resume", concurrency_limit=None,
                     trigger_mode="multiple")
    stop_btn.click(stop, None, None, api_name="stop")
    method.change(show_size_fields, method, [ft_budget, lora_r, lora_alpha, targets], api_visibility="private")
    setup = [model, dataset, text_column, label_column, method, ft_budget, lora_r, lora_alpha, targets, custom_targets,
             task, built_in]
    task_views = [built_in, dataset, dataset_help, model, chat_template, try_text_row, try_image_row, try_prompt_row]
    # the plan follows once the task's dataset is chosen (the built-in one may stay the same)
    task.change(show_task, [task, built_in], task_views, api_visibility="private").then(
        refresh, [query, picked, task], run_views, api_visibility="private").then(
        check_setup, setup, [plan, layers], api_visibility="private")
    model.blur(session.typed_model_task, [model, task], task, api_visibility="private")
    gr.on([demo.load, dataset.change, built_in.change, method.change, ft_budget.change, lora_r.change,
           lora_alpha.change, targets.change, custom_targets.blur, model.blur, text_column.blur, label_column.blur],
          check_setup, setup, [plan, layers], api_name="plan", concurrency_limit=1, trigger_mode="always_last")
    query.change(refresh, [query, picked, task], run_views, api_name="runs")
    picked.change(select, picked, [download, snippet, summary], api_name="download")
    try_text.submit(classify, [picked, try_text], try_label, api_visibility="private")
    gr.api(predict, api_name="predict")
    try_image.upload(classify_image, [picked, try_image], try_image_label, api_name="classify_image")
    gr.on([try_prompt.submit, generate_btn.click], generate, [picked, try_prompt, max_new_tokens], try_completion,
          api_name="generate")
    estimate_btn.click(estimate, [*fields[:-1], *task_fields], estimated, api_name="estimate", concurrency_limit=1)
    delete_btn.click(delete, [picked, query, task], run_views, api_name="delete")
    runs_table.select(pick_row, None, picked, api_visibility="private")
    key_outputs = [key_box, stored_key, *run_views]
    demo.load(on_load, [stored_key, task], key_outputs, api_visibility="private")
    open_btn.click(switch_workspace, [key_box, task], key_outputs, api_name="open_workspace")
    demo.unload(forget)


def built_in_dropdown(task: str, current: str | None = None, **dropdown) -> gr.Dropdown:
    """The built-in dataset dropdown for ``task``: its datasets, ``current`` kept when it is one of
    them (as when the Search tab fills the fields), else the first (Fine-tune and Search tabs)."""
    choices = session.built_in_datasets(task)[0]
    values = [value for _, value in choices]
    return gr.Dropdown(choices=choices, value=current if current in values else values[0], **dropdown)


def public_summary(run: dict) -> dict:
    """A run's summary as the page shows it: named by the run, its dataset by name and SHA-256, its
    model as people name it, without server paths."""
    summary = {k: v for k, v in run.items() if k not in ("name", "dir", "run_dir")}
    summary["config"] = {**run["config"], "model": session.model_label(run["config"].get("model")),
                         "dataset": run["dataset"]["name"], "out_dir": None}
    return {"run": run["name"], **summary}
