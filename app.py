"""SURM Explorer: see structured matrix families, compare them, and fine-tune with them, in a browser.

    python app.py                       # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8080 --auth alice:secret
    SURM_HOST=0.0.0.0 SURM_PORT=8080 SURM_AUTH=alice:secret python app.py

Each tab is a module of ``ui/``; its widgets call ``surm_core.session`` (which calls the library),
so nothing here computes. Bad input shows as a message in the page (``gr.Error``), and the app
keeps serving. Fine-tunes run in their own processes; runs belong to the browser that started
them (``--shared-runs``: one table for everybody). Uploads and downloads live in Gradio's cache,
cleaned every hour of files older than ``CACHE_AGE_S`` and at shutdown; the runs directory itself
is never served.
"""
from __future__ import annotations

import os

# Set before torch loads OpenMP. The app shares the CPU between requests, a fine-tune thread and
# whatever else runs there; OpenMP workers that spin while they wait steal those cores. Measured on
# a busy 2-core machine: exploring a 1024 × 1024 map took 25–37 s with spinning workers and 2.5–4.5 s
# with sleeping ones, and a MiniLM training step 10 s against 5 s. Set the variable to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import atexit  # noqa: E402
import ipaddress  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

import gradio as gr  # noqa: E402

from surm_core import session  # noqa: E402
from ui import compare, explore, finetune, links, search  # noqa: E402

#: Uploads and downloads in Gradio's cache are deleted once this old (checked every hour), and all
#: of them at shutdown. A run keeps its own copy of its dataset, so nothing a run needs goes.
CACHE_AGE_S = 6 * 3600

INTRO = """# SURM Explorer
Structured parameter-efficient fine-tuning, made visible. **Explore** a matrix family at a parameter
budget, **compare** how well each family approximates a matrix, then **fine-tune** a model with it, or
**search** which family and budget suit your model and data."""


def build_app(runs_dir="runs", shared_runs: bool = False, limits: session.Limits = session.Limits(),
              finetunes: session.Finetunes | None = None, searches: session.Searches | None = None,
              max_map: int = session.MAX_EXPLORE_SIZE) -> gr.Blocks:
    """The explorer's Blocks. Fine-tuning runs are written to (and the runs table read from)
    ``runs_dir``, one workspace per browser, or one for all with ``shared_runs``; searches beside
    them in ``runs_dir/searches``; fine-tunes beyond ``limits`` are refused; Explore and Compare
    refuse maps of more than ``max_map`` a side."""
    with gr.Blocks(title="SURM Explorer", delete_cache=(3600, CACHE_AGE_S)) as demo:
        gr.Markdown(INTRO)
        links.bar()
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore") as explore_tab:
                explored = explore.build(demo, max_map)
            with gr.Tab("Compare", id="compare") as compare_tab:
                compared = compare.build(demo, explored.controls[-1], max_map)
            with gr.Tab("Fine-tune", id="finetune") as finetune_tab:
                finetune.build(demo, runs_dir, shared_runs, limits, finetunes)
            with gr.Tab("Search", id="search") as search_tab:
                search.build(demo, tabs, runs_dir, shared_runs, limits, searches)
        links.wire(demo, tabs, {"explore": explore_tab, "compare": compare_tab, "finetune": finetune_tab,
                                "search": search_tab}, explored, compared)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve SURM Explorer.")
    parser.add_argument("--host", default=os.environ.get("SURM_HOST", "127.0.0.1"),
                        help="interface to bind (env SURM_HOST; default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=os.environ.get("SURM_PORT", "7860"),
                        help="port (env SURM_PORT; default 7860)")
    parser.add_argument("--share", action="store_true", default=os.environ.get("SURM_SHARE") == "1",
                        help="also serve through a public gradio.live link (env SURM_SHARE=1)")
    parser.add_argument("--max-map", type=int, default=os.environ.get("SURM_MAX_MAP", str(session.MAX_EXPLORE_SIZE)),
                        help=f"largest side of a map Explore and Compare compute (env SURM_MAX_MAP; default "
                             f"{session.MAX_EXPLORE_SIZE}: about 0.1 GiB and a few seconds on a 2-core CPU)")
    parser.add_argument("--auth", type=parse_auth, default=os.environ.get("SURM_AUTH"), metavar="USER:PASSWORD",
                        help="ask for this user name and password before serving anything (env SURM_AUTH)")
    parser.add_argument("--shared-runs", action="store_true", default=os.environ.get("SURM_SHARED_RUNS") == "1",
                        help="one runs table for everybody, e.g. a teaching lab (env SURM_SHARED_RUNS=1; "
                             "default: runs belong to the browser that started them)")
    defaults = session.Limits()
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps, help="most steps one fine-tune may take")
    parser.add_argument("--max-classes", type=int, default=defaults.max_classes,
                        help="most classes an uploaded dataset may have")
    parser.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb,
                        help="largest upload, in MB")
    args = parser.parse_args(argv)
    if isinstance(args.auth, str):  # from the environment: argparse converts only what is typed
        args.auth = parse_auth(args.auth)
    return args


def parse_auth(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD, both non-empty")
    return user, password


def main(argv=None) -> None:
    args = parse_args(argv)
    limits = session.Limits(args.max_steps, args.max_classes, args.max_upload_mb)
    serve(args.host, args.port, args.share, auth=args.auth, shared_runs=args.shared_runs, limits=limits,
          max_map=args.max_map)


def exposure_warning(host: str, share: bool, auth, shared_runs: bool) -> str | None:
    """What a server reachable from other machines without a password exposes, or None."""
    if auth is not None or (is_loopback(host) and not share):
        return None
    where = "a public gradio.live link" if share else f"{host}, reachable from other machines,"
    runs = ("every run's table, weights and downloads" if shared_runs
            else "the runs of each browser (kept apart by workspace keys)")
    return (f"WARNING: serving on {where} without --auth. Anyone who reaches it can fine-tune on this machine's "
            "CPU/GPU, upload datasets, load any model directory on this server by its path, train on this server's "
            f"image files named in an uploaded CSV/JSONL, and see {runs}. "
            "Add --auth USER:PASSWORD (or SURM_AUTH).")


def is_loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def serve(host: str, port: int, share: bool = False, runs_dir="runs", block: bool = True, auth=None,
          shared_runs: bool = False, limits: session.Limits = session.Limits(),
          max_map: int = session.MAX_EXPLORE_SIZE) -> gr.Blocks:
    """Build the app and serve it; ``block=False`` returns at once (the server runs in a thread).

    The runs directory is not served: a run's files reach only its workspace, through downloads
    that Gradio copies into its cache.
    """
    warning = exposure_warning(host, share, auth, shared_runs)
    if warning:
        print(warning, flush=True)
    finetunes, searches = session.Finetunes(), session.Searches()
    atexit.register(finetunes.stop_all)  # a run stopped by the server's end keeps what it reached
    atexit.register(searches.stop_all)
    demo = build_app(runs_dir, shared_runs, limits, finetunes, searches, max_map).queue()
    demo.launch(server_name=host, server_port=port, share=share, auth=auth, show_error=True,
                max_file_size=int(limits.max_upload_mb * 2**20), prevent_thread_lock=True, quiet=not block,
                head=links.HEAD, css=links.CSS)
    if block:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill`, `docker stop`: as Ctrl-C
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print("Stopping: runs keep what they reached; uploads and downloads are deleted.", flush=True)
        # Gradio's own wait (launch without prevent_thread_lock) leaves the pages' event streams
        # open, which holds the server's shutdown, and the cache's deletion, past the process's end
        demo.close()
        finetunes.stop_all()
        searches.stop_all()
    return demo


if __name__ == "__main__":
    main()
