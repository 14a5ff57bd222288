"""The Fine-tune tab: a live run on a real model, the runs table, parameter and Pareto charts."""
from __future__ import annotations

import html

import gradio as gr

import visualize
from surm_core import session
from surm_core.models import DEFAULT_MODEL
from .errors import visible_errors

#: The live fine-tuning view is refreshed this often (seconds).
REFRESH_S = 1.0


def progress_html(job: session.FinetuneJob) -> str:
    return (f'<progress value="{job.progress():.4f}" max="1" style="width:100%;height:1.2em"></progress>'
            f"<p>{html.escape(job.status())}</p>")


def build(demo: gr.Blocks, runs_dir) -> None:
    """The tab's widgets; runs are written to (and the runs table read from) ``runs_dir``."""
    jobs: dict[str, session.FinetuneJob] = {}  # running fine-tune per browser session, for Stop

    def runs_views(finished: dict | None = None):
        """The runs table, and the parameter and Pareto charts of the runs comparable to the one
        just ``finished`` (else to the latest), with LoRA and full fine-tuning references for it."""
        runs = session.load_runs(runs_dir)
        latest = finished or (runs[-1] if runs else None)
        shown = session.comparable(runs, latest) if latest else []
        references = {}
        if finished:  # its model is known to load
            references = session.reference_params(finished["config"]["model"], len(finished["labels"]))
        return session.runs_rows(runs), visualize.parameter_bars(shown, references), visualize.pareto(shown)

    @visible_errors
    def finetune(model, dataset_file, text_column, label_column, method, budget, steps, batch_size,
                 lr, seed, request: gr.Request):
        """Fine-tune live; yields the view about once a second, the summary and download at the end."""
        config = session.finetune_config(runs_dir, model, dataset_file, method, budget, steps,
                                         batch_size, lr, seed, text_column, label_column)
        job = jobs[request.session_hash] = session.FinetuneJob(config).start()
        try:
            while not job.wait(REFRESH_S):
                yield (gr.skip(), progress_html(job), visualize.training_curves(list(job.events)),
                       gr.skip(), gr.skip(), gr.skip(), gr.skip())
        finally:
            job.stop()  # a closed page or a cancelled event must not leave the run going
            jobs.pop(request.session_hash, None)
        if job.error is not None:
            yield (gr.skip(), progress_html(job), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
            raise gr.Error(f"Fine-tuning failed: {job.error}", print_exception=False)
        rows, bars, front = runs_views(job.summary)
        yield (job.summary, progress_html(job), visualize.training_curves(list(job.events)),
               str(session.package_run(job.summary["run_dir"])), rows, bars, front)

    def stop(request: gr.Request):
        job = jobs.get(request.session_hash)
        if job is None:
            raise gr.Error("No fine-tune of yours is running.", print_exception=False)
        job.stop()
        gr.Info("Stopping after the current step…")

    gr.Markdown(f"Runs on **{session.device_name()}**. One fine-tune at a time: "
                "others wait in the queue, with their position shown.")
    with gr.Row():
        with gr.Column():
            model = gr.Textbox(DEFAULT_MODEL, label="model", info="a local directory or a hub id", elem_id="model")
            dataset = gr.File(label="dataset (empty: BBC News)", file_types=[".csv", ".jsonl"], elem_id="dataset")
            with gr.Row():
                text_column = gr.Textbox("", label="text column", placeholder="auto")
                label_column = gr.Textbox("", label="label column", placeholder="auto")
        with gr.Column():
            method = gr.Dropdown(session.METHODS, value="circulant", label="method", elem_id="method")
            ft_budget = gr.Number(4096, precision=0, label="budget per layer", elem_id="ft_budget",
                                  info="ignored by full fine-tuning and head only")
            with gr.Row():
                steps = gr.Number(200, precision=0, label="steps", elem_id="steps")
                batch_size = gr.Number(32, precision=0, label="batch size", elem_id="batch_size")
            with gr.Row():
                lr = gr.Number(1e-3, label="learning rate", elem_id="lr")
                ft_seed = gr.Number(0, precision=0, label="seed")
    with gr.Row():
        start = gr.Button("Start", variant="primary")
        stop_btn = gr.Button("Stop", variant="stop")
    status = gr.HTML(label="status", elem_id="status")
    live = gr.Plot(label="training", elem_id="live")
    with gr.Row():
        bars = gr.Plot(label="trainable parameters", elem_id="bars")
        front = gr.Plot(label="accuracy vs parameters", elem_id="pareto")
    runs_table = gr.Dataframe(headers=session.RUN_COLUMNS, label="runs", elem_id="runs")
    with gr.Row():
        download = gr.File(label="trained adapter (zip)", elem_id="download")
        summary = gr.JSON(label="summary", elem_id="summary")

    start.click(finetune, [model, dataset, text_column, label_column, method, ft_budget, steps, batch_size, lr,
                           ft_seed],
                [summary, status, live, download, runs_table, bars, front],
                api_name="finetune", concurrency_id="finetune", concurrency_limit=1)
    stop_btn.click(stop, None, None, api_name="stop")
    demo.load(runs_views, None, [runs_table, bars, front], api_visibility="private")
