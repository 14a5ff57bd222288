"""SURM Explorer: see structured matrix families, compare them, and fine-tune with them, in a browser.

    python app.py                       # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8080 --share
    SURM_HOST=0.0.0.0 SURM_PORT=8080 python app.py

The widgets call ``surm_core.session`` (which calls the library); nothing here computes. Bad input
shows as a message in the page (``gr.Error``), and the app keeps serving.
"""
from __future__ import annotations

import os

# Set before torch loads OpenMP. The app shares the CPU between requests, a fine-tune thread and
# whatever else runs there; OpenMP workers that spin while they wait steal those cores. Measured on
# a busy 2-core machine: exploring a 1024 × 1024 map took 25–37 s with spinning workers and 2.5–4.5 s
# with sleeping ones, and a MiniLM training step 10 s against 5 s. Set the variable to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import functools  # noqa: E402
import html  # noqa: E402
import inspect  # noqa: E402

import gradio as gr  # noqa: E402

import visualize  # noqa: E402
from surm_core import FAMILIES, session  # noqa: E402
from surm_core.models import DEFAULT_MODEL  # noqa: E402

#: The live fine-tuning view is refreshed this often (seconds).
REFRESH_S = 1.0
EXPLORE = dict(concurrency_id="explore", concurrency_limit=2, trigger_mode="always_last")
INTRO = """# SURM Explorer
Structured parameter-efficient fine-tuning, made visible. **Explore** a matrix family at a parameter
budget, **compare** how well each family approximates a matrix, then **fine-tune** a model with it."""


def visible_errors(fn):
    """Show a ``ValueError`` (bad input: the library says what is wrong) as a message in the page."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except ValueError as e:
                raise gr.Error(str(e), print_exception=False) from e
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ValueError as e:
                raise gr.Error(str(e), print_exception=False) from e
    return wrapper


# -- Explore -----------------------------------------------------------------------------------------
@visible_errors
def explore(family, d_out, d_in, budget, seed, A, B):
    """The solved configuration, heatmap, spectrum, eigenvalues, displacement and explanation
    (for a large map the heatmap first, the spectral plots when computed)."""
    sent = None
    for r in session.explore_stages(family, d_out, d_in, budget, seed, A, B):
        outputs = (r.config, r.heatmap, r.spectrum, r.eigenvalues, r.displacement, r.explanation)
        # an intermediate stage resends only new figures; the last one sends all (an API caller
        # gets the last yield as the result)
        if sent is None or r.complete:
            yield outputs
        else:
            yield tuple(gr.skip() if new is old else new for new, old in zip(outputs, sent))
        sent = outputs


@visible_errors
def explore_new_layout(family, d_out, d_in, budget, seed, A, B):
    """A new family or size: move the budget slider into the new range first, then explore."""
    low, high = session.budget_range(family, d_out, d_in)
    budget = session.clamp_budget(family, d_out, d_in, budget)
    slider = gr.update(minimum=low, maximum=high, value=budget,
                       info=f"{family} needs at least {low:,}; the dense map has {d_out * d_in:,}")
    for outputs in explore(family, d_out, d_in, budget, seed, A, B):
        yield (slider, *outputs)
        slider = gr.skip()


# -- Compare -----------------------------------------------------------------------------------------
@visible_errors
def compare(kind, n, budget, seed):
    """Approximation curves of every family for the target, the table at one budget, and a note
    (LDR, fitted iteratively, arrives last)."""
    for r in session.compare_stages(kind, n, budget, seed):
        yield r.curves, r.rows, r.note


# -- Fine-tune ---------------------------------------------------------------------------------------
def progress_html(job: session.FinetuneJob) -> str:
    return (f'<progress value="{job.progress():.4f}" max="1" style="width:100%;height:1.2em"></progress>'
            f"<p>{html.escape(job.status())}</p>")


def build_app(runs_dir="runs") -> gr.Blocks:
    """The explorer's Blocks; fine-tuning runs are written to (and the runs table read from) ``runs_dir``."""
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

    with gr.Blocks(title="SURM Explorer") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Explore", id="explore"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        family = gr.Dropdown(list(FAMILIES), value="circulant", label="family", elem_id="family")
                        with gr.Row():
                            d_out = gr.Number(64, precision=0, label="d_out", min_width=80, elem_id="d_out")
                            d_in = gr.Number(64, precision=0, label="d_in", min_width=80, elem_id="d_in")
                        # Wide bounds for API callers; a page gets its family's range on load.
                        budget = gr.Slider(1, session.MAX_EXPLORE_SIZE ** 2, value=64, step=1, precision=0,
                                           label="budget (parameters)", elem_id="budget")
                        seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
                        with gr.Row():
                            op_a = gr.Dropdown(list(session.OPERATORS), value="Z1", label="A", min_width=80)
                            op_b = gr.Dropdown(list(session.OPERATORS), value="Z-1", label="B", min_width=80)
                    with gr.Column(scale=2):
                        heatmap = gr.Plot(label="heatmap", elem_id="heatmap")
                    with gr.Column(scale=2):
                        spectrum = gr.Plot(label="singular values", elem_id="spectrum")
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        solved = gr.JSON(label="solved configuration", elem_id="solved", open=True)
                    with gr.Column(scale=2):
                        eigen = gr.Plot(label="eigenvalues", elem_id="eigenvalues")
                    with gr.Column(scale=3):
                        displacement = gr.Plot(label="displacement A·M − M·B", elem_id="displacement")
                explanation = gr.Markdown(label="explanation", elem_id="explanation")
            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    kind = gr.Dropdown(list(session.TARGET_KINDS), value="gaussian", label="target")
                    size = gr.Number(64, precision=0, label="size n")
                    table_budget = gr.Number(512, precision=0, label="table budget")
                    compare_seed = gr.Number(0, precision=0, label="seed")
                    compare_btn = gr.Button("Compare", variant="primary")
                curves = gr.Plot(label="approximation curves", elem_id="curves")
                compare_note = gr.Markdown(label="note", elem_id="compare_note")
                table = gr.Dataframe(headers=session.TABLE_COLUMNS, label="families at the table budget",
                                     elem_id="table")
            with gr.Tab("Fine-tune", id="finetune"):
                gr.Markdown(f"Runs on **{session.device_name()}**. One fine-tune at a time: "
                            "others wait in the queue, with their position shown.")
                with gr.Row():
                    with gr.Column():
                        model = gr.Textbox(DEFAULT_MODEL, label="model", info="a local directory or a hub id",
                                           elem_id="model")
                        dataset = gr.File(label="dataset (empty: BBC News)", file_types=[".csv", ".jsonl"],
                                          elem_id="dataset")
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

        explore_inputs = [family, d_out, d_in, budget, seed, op_a, op_b]
        explore_outputs = [solved, heatmap, spectrum, eigen, displacement, explanation]
        # The slider's release also follows a typed budget once the field loses focus (Tab).
        gr.on([budget.release, seed.submit, op_a.change, op_b.change], explore, explore_inputs,
              explore_outputs, api_name="explore", **EXPLORE)
        gr.on([demo.load, family.change, d_out.submit, d_in.submit], explore_new_layout, explore_inputs,
              [budget, *explore_outputs], api_visibility="private", **EXPLORE)
        # Fitting every family at every budget takes seconds: its own group keeps exploring quick.
        gr.on([compare_btn.click, kind.change], compare, [kind, size, table_budget, compare_seed],
              [curves, table, compare_note], api_name="compare", concurrency_id="compare", concurrency_limit=1,
              trigger_mode="always_last")
        start.click(finetune, [model, dataset, text_column, label_column, method, ft_budget, steps,
                               batch_size, lr, ft_seed],
                    [summary, status, live, download, runs_table, bars, front],
                    api_name="finetune", concurrency_id="finetune", concurrency_limit=1)
        stop_btn.click(stop, None, None, api_name="stop")
        demo.load(runs_views, None, [runs_table, bars, front], api_visibility="private")
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve SURM Explorer.")
    parser.add_argument("--host", default=os.environ.get("SURM_HOST", "127.0.0.1"),
                        help="interface to bind (env SURM_HOST; default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=os.environ.get("SURM_PORT", "7860"),
                        help="port (env SURM_PORT; default 7860)")
    parser.add_argument("--share", action="store_true", default=os.environ.get("SURM_SHARE") == "1",
                        help="also serve through a public gradio.live link (env SURM_SHARE=1)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    serve(args.host, args.port, args.share)


def serve(host: str, port: int, share: bool = False, runs_dir="runs", block: bool = True) -> gr.Blocks:
    """Build the app and serve it; ``block=False`` returns at once (the server runs in a thread)."""
    demo = build_app(runs_dir).queue()
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(runs_dir)],
                show_error=True, prevent_thread_lock=not block, quiet=not block)
    return demo


if __name__ == "__main__":
    main()
