"""SURM Explorer: see structured matrix families, compare them, and fine-tune with them, in a browser.

    python app.py                       # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8080 --share
    SURM_HOST=0.0.0.0 SURM_PORT=8080 python app.py

Each tab is a module of ``ui/``; its widgets call ``surm_core.session`` (which calls the library),
so nothing here computes. Bad input shows as a message in the page (``gr.Error``), and the app
keeps serving.
"""
from __future__ import annotations

import os

# Set before torch loads OpenMP. The app shares the CPU between requests, a fine-tune thread and
# whatever else runs there; OpenMP workers that spin while they wait steal those cores. Measured on
# a busy 2-core machine: exploring a 1024 × 1024 map took 25–37 s with spinning workers and 2.5–4.5 s
# with sleeping ones, and a MiniLM training step 10 s against 5 s. Set the variable to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

import gradio as gr  # noqa: E402

from surm_core.session import MAX_EXPLORE_SIZE  # noqa: E402
from ui import compare, explore, finetune, links  # noqa: E402

INTRO = """# SURM Explorer
Structured parameter-efficient fine-tuning, made visible. **Explore** a matrix family at a parameter
budget, **compare** how well each family approximates a matrix, then **fine-tune** a model with it."""


def build_app(runs_dir="runs", max_map: int = MAX_EXPLORE_SIZE) -> gr.Blocks:
    """The explorer's Blocks; fine-tuning runs are written to (and the runs table read from)
    ``runs_dir``; Explore and Compare refuse maps of more than ``max_map`` a side."""
    with gr.Blocks(title="SURM Explorer") as demo:
        gr.Markdown(INTRO)
        links.bar()
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore") as explore_tab:
                explored = explore.build(demo, max_map)
            with gr.Tab("Compare", id="compare") as compare_tab:
                compared = compare.build(demo, explored.controls[-1], max_map)
            with gr.Tab("Fine-tune", id="finetune") as finetune_tab:
                finetune.build(demo, runs_dir)
        links.wire(demo, tabs, {"explore": explore_tab, "compare": compare_tab, "finetune": finetune_tab},
                   explored, compared)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve SURM Explorer.")
    parser.add_argument("--host", default=os.environ.get("SURM_HOST", "127.0.0.1"),
                        help="interface to bind (env SURM_HOST; default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=os.environ.get("SURM_PORT", "7860"),
                        help="port (env SURM_PORT; default 7860)")
    parser.add_argument("--share", action="store_true", default=os.environ.get("SURM_SHARE") == "1",
                        help="also serve through a public gradio.live link (env SURM_SHARE=1)")
    parser.add_argument("--max-map", type=int, default=os.environ.get("SURM_MAX_MAP", str(MAX_EXPLORE_SIZE)),
                        help=f"largest side of a map Explore and Compare compute (env SURM_MAX_MAP; default "
                             f"{MAX_EXPLORE_SIZE}: about 0.1 GiB and a few seconds on a 2-core CPU)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    serve(args.host, args.port, args.share, max_map=args.max_map)


def serve(host: str, port: int, share: bool = False, runs_dir="runs", block: bool = True,
          max_map: int = MAX_EXPLORE_SIZE) -> gr.Blocks:
    """Build the app and serve it; ``block=False`` returns at once (the server runs in a thread)."""
    demo = build_app(runs_dir, max_map).queue()
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(runs_dir)],
                show_error=True, prevent_thread_lock=not block, quiet=not block, head=links.HEAD, css=links.CSS)
    return demo


if __name__ == "__main__":
    main()
