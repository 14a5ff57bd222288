"""Feed bad inputs through the library, the command line, the app's session functions and the
served app's API, and print what each answered: the closing table of issue 16.

    python -m benchmarks.bad_inputs            # about a minute on a 2-core CPU
    python -m benchmarks.bad_inputs --no-app   # without serving the app (half the time)

An answer is *clear* when the input is refused with a message that names the problem (a
``ValueError`` from the library and the session functions, one ``error:`` line and a non-zero exit
from the command line, a message from the API; never a traceback), or when the input is made safe
(a run name or workspace key that cannot leave its directory). Anything else is *unclear*: another
exception, a message that does not name the problem, or a bad input accepted. The exit status is 1
when any answer is unclear.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import socket
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # noqa: E402

from surm_core import AdapterConfig, from_budget, load_adapter, load_model, make, session  # noqa: E402
from surm_core.analysis import nearest  # noqa: E402
from surm_core.finetune import check_seed, load_dataset  # noqa: E402
from surm_core.finetune.__main__ import main as cli  # noqa: E402
from surm_core.session.finetune import MAX_NAME  # noqa: E402

#: A 100,000-character name: for a model, a run, a workspace key.
LONG = "m" * 100_000
WORDS = ["goal", "match", "team", "market", "shares", "bank"]


# -- what the cases load ------------------------------------------------------------------------
def tiny_model(path: Path) -> str:
    """A 1-layer BERT (hidden 16) with a tiny vocabulary, saved as safetensors."""
    path.mkdir(parents=True)
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizerFast(vocab=vocab).save_pretrained(path)
    BertForSequenceClassification(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32,
                                             max_position_embeddings=32)).save_pretrained(path)
    return str(path)


def files(root: Path) -> dict[str, str]:
    """The bad files the cases use, by name: each path as a string."""
    made = {"model": tiny_model(root / "model")}

    pickled = root / "pickled-model"  # weights only as a pickle (pytorch_model.bin): never unpickled
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (root / "model" / name).exists():
            (pickled / name).write_bytes((root / "model" / name).read_bytes())
    torch.save({"evil": torch.zeros(1)}, pickled / "pytorch_model.bin")
    made["pickled-model"] = str(pickled)

    remote = root / "remote-code-model"  # a config that asks for code shipped with the model
    remote.mkdir()
    config = json.loads((root / "model" / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoModelForSequenceClassification": "evil.EvilModel"})
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    made["remote-code-model"] = str(remote)

    pickled_adapter = root / "pickled-adapter"
    pickled_adapter.mkdir()
    torch.save({"evil": torch.zeros(1)}, pickled_adapter / "adapter.bin")
    made["pickled-adapter"] = str(pickled_adapter)

    def write(name: str, text: str) -> None:
        (root / name).write_text(text, encoding="utf-8")
        made[name] = str(root / name)

    write("numbers.jsonl", "".join(json.dumps({"text": i, "label": i % 2}) + "\n" for i in range(20)))
    write("one-class.csv", "text,label\n" + "goal match,sports\n" * 20)
    write("empty.csv", "")
    write("no-header.csv", "goal match\nbank shares\n")
    write("nan-labels.csv", "text,label\n" + "".join(f"goal {i},{'nan' if i % 2 else ''}\n" for i in range(20)))
    write("binary.csv", "\x00\x01\x02 not text \xff")
    write("many-classes.csv", "text,label\n" + "".join(f"goal {i},class{i}\n" * 2 for i in range(20_000)))
    write("large.csv", "text,label\n" + "goal match team,sports\nbank shares market,business\n" * 800)
    return made


# -- running a case -----------------------------------------------------------------------------
def answer(where: str, call) -> tuple[str, str, object]:
    """``(outcome, message, result)``: ``"refused"`` with the message, ``"accepted"`` with the
    result, or ``"crashed"`` with the exception (which a person would see as a traceback)."""
    if where == "CLI":
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = call()
            except SystemExit as e:  # argparse's errors
                code = e.code
            except Exception as e:  # noqa: BLE001 (what a user would see: a traceback)
                return "crashed", f"{type(e).__name__}: {e}", None
        lines = [x for x in err.getvalue().splitlines() if x.startswith("error: ") or ": error: " in x]
        if code and lines and "Traceback" not in err.getvalue():
            return "refused", lines[-1].split("error: ", 1)[1], None
        return ("accepted" if not code else "crashed"), (err.getvalue() or out.getvalue())[-200:], code
    try:
        result = call()
    except ValueError as e:
        return "refused", str(e), None
    except Exception as e:  # noqa: BLE001 (the API's errors, and anything unforeseen)
        name = type(e).__name__
        return ("refused" if name in ("AppError", "Refused") else "crashed"), f"{name}: {e}", None
    return "accepted", repr(result)[:200], result


class Refused(Exception):
    """An API refusal that is not an exception on the client (a file route's 403)."""


def judged(where: str, what: str, call, names: str, safe=None) -> dict:
    """Run one case: clear when refused with a message containing ``names`` (any of ``|``-separated
    words, case-insensitive), or when accepted and ``safe(result)`` holds."""
    t0 = time.perf_counter()
    outcome, message, result = answer(where, call)
    if outcome == "accepted" and safe is not None:
        clear = bool(safe(result))
        outcome = "made safe" if clear else "accepted"
    else:
        clear = outcome == "refused" and any(w.lower() in message.lower() for w in names.split("|"))
    return {"where": where, "input": what, "outcome": outcome, "message": " ".join(message.split())[:150],
            "clear": clear, "s": time.perf_counter() - t0}


def library_cases(f: dict) -> list[tuple]:
    model, _ = load_model(f["model"])
    layer = make("kronecker", 16, 16)
    return [
        ("make: unknown family", lambda: make("nosuch", 8, 8), "family"),
        ("make: negative size", lambda: make("circulant", -5, 8), "d_out|size|positive"),
        ("make: LoRA r = 10**6 on 64 x 64", lambda: make("lowrank", 64, 64, r=10**6), "r"),
        ("make: Monarch blocks = 10**9", lambda: make("monarch", 64, 64, nblocks=10**9), "nblocks|block"),
        ("from_budget: budget NaN", lambda: from_budget("circulant", 64, 64, float("nan")), "budget"),
        ("from_budget: budget 'abc'", lambda: from_budget("ldr", 64, 64, "abc"), "budget"),
        # a budget is a ceiling: beyond the dense count it gives the family's largest member
        ("from_budget: budget 10**30", lambda: from_budget("toeplitz", 64, 64, 10**30), "",
         lambda m: m.num_params <= 64 * 64),
        ("from_budget: budget True", lambda: from_budget("circulant", 64, 64, True), "budget"),
        ("forward: float64 input, float32 weights", lambda: layer(torch.ones(2, 16, dtype=torch.float64)),
         "float64"),
        ("forward: wrong input width", lambda: layer(torch.ones(2, 15)), "16|shape|width|features"),
        ("nearest: W with inf", lambda: nearest("circulant", torch.full((8, 8), math.inf), 8), "finite|inf"),
        ("nearest: W with NaN", lambda: nearest("lowrank", torch.full((8, 8), math.nan), 16), "finite|nan"),
        ("AdapterConfig: unknown family", lambda: AdapterConfig("nosuch"), "family"),
        ("AdapterConfig: broken regex target", lambda: AdapterConfig("circulant", target_modules="(query"),
         "regular expression|regex|pattern"),
        ("load_model: path traversal ../../../etc", lambda: load_model("../../../etc"), "could not load model"),
        ("load_model: /etc (exists, no model)", lambda: load_model("/etc"), "could not load model"),
        ("load_model: /no/such/dir", lambda: load_model("/no/such/dir"), "could not load model"),
        ("load_model: 100,000-character name", lambda: load_model(LONG), "characters"),
        ("load_model: name 123 (not a string)", lambda: load_model(123), "string"),
        ("load_model: control characters", lambda: load_model("model\x00\n"), "control"),
        ("load_model: pickle weights only", lambda: load_model(f["pickled-model"]), "could not load model"),
        ("load_model: remote code in config", lambda: load_model(f["remote-code-model"]), "could not load model"),
        ("load_model: num_labels 1", lambda: load_model(f["model"], num_labels=1), "num_labels"),
        ("load_model: num_labels NaN", lambda: load_model(f["model"], num_labels=float("nan")), "num_labels"),
        ("load_adapter: /etc", lambda: load_adapter(model, "/etc"), "adapter"),
        ("load_adapter: pickle (adapter.bin)", lambda: load_adapter(model, f["pickled-adapter"]), "adapter"),
        ("load_dataset: /etc/passwd", lambda: load_dataset("/etc/passwd"), "csv|jsonl|dataset"),
        ("load_dataset: ../../etc/shadow", lambda: load_dataset("../../etc/shadow"), "csv|jsonl|dataset|no such"),
        ("load_dataset: JSONL of numbers", lambda: load_dataset(f["numbers.jsonl"]), "not text"),
        ("load_dataset: one class", lambda: load_dataset(f["one-class.csv"]), "class"),
        ("load_dataset: empty CSV", lambda: load_dataset(f["empty.csv"]), "empty|no rows|header|column"),
        ("load_dataset: CSV without header", lambda: load_dataset(f["no-header.csv"]), "column"),
        ("load_dataset: 'nan' and empty labels", lambda: load_dataset(f["nan-labels.csv"]), "label"),
        ("load_dataset: binary file .csv", lambda: load_dataset(f["binary.csv"]), "no data rows|utf"),
        ("load_dataset: text column 'nosuch'", lambda: load_dataset(f["one-class.csv"], "nosuch"), "nosuch|column"),
        ("check_seed: 2**64", lambda: check_seed(2**64), "seed"),
        ("check_seed: -1", lambda: check_seed(-1), "seed"),
        ("check_seed: 'nan'", lambda: check_seed("nan"), "seed"),
        ("check_seed: None", lambda: check_seed(None), "seed"),
        ("check_seed: 1.5", lambda: check_seed(1.5), "seed"),
    ]


def cli_cases(f: dict, out: Path) -> list[tuple]:
    import app

    base = ["--model", f["model"], "--dataset", f["one-class.csv"].replace("one-class", "large"), "--out", str(out)]
    args = [
        ("--seed -1", ["--seed", "-1"], "seed"),
        ("--seed 2**64", ["--seed", str(2**64)], "seed"),
        ("--seed abc", ["--seed", "abc"], "seed"),
        ("--steps 0", ["--steps", "0"], "steps"),
        ("--steps 1e9", ["--steps", "1e9"], "steps"),
        ("--lr nan", ["--lr", "nan"], "lr|learning rate"),
        ("--lr inf", ["--lr", "inf"], "lr|learning rate"),
        ("--lr -1", ["--lr", "-1"], "lr|learning rate"),
        ("--batch-size 0", ["--batch-size", "0"], "batch"),
        ("--warmup-ratio 2", ["--warmup-ratio", "2"], "warmup"),
        ("--max-length 0", ["--max-length", "0"], "max_length|max length"),
        ("--eval-size -3", ["--eval-size", "-3"], "eval"),
        ("--family nosuch", ["--family", "nosuch"], "family|method"),
        ("--hparams r=abc", ["--family", "lowrank", "--hparams", "r=abc"], "r"),
        ("--hparams r=10**9", ["--family", "lowrank", "--hparams", f"r={10**9}"], "r"),
        ("--budget -5", ["--budget", "-5"], "budget"),
        ("--target-regex '('", ["--target-regex", "("], "regular expression|regex|pattern"),
        ("--target-modules nosuch", ["--target-modules", "nosuch", "--steps", "1"], "nosuch|match"),
    ]
    cases = [(what, (lambda a=a: cli([*base, *a])), names) for what, a, names in args]
    cases += [
        ("--model ../../../etc", lambda: cli(["--model", "../../../etc", "--out", str(out)]), "could not load model"),
        ("--model <100,000 characters>", lambda: cli(["--model", LONG, "--out", str(out)]), "characters"),
        ("--model <pickle weights>", lambda: cli(["--model", f["pickled-model"], "--out", str(out)]),
         "could not load model"),
        ("--dataset /etc/passwd", lambda: cli(["--model", f["model"], "--dataset", "/etc/passwd", "--out", str(out)]),
         "csv|jsonl|dataset"),
        ("--dataset JSONL of numbers", lambda: cli(["--model", f["model"], "--dataset", f["numbers.jsonl"],
                                                    "--out", str(out)]), "not text"),
        ("--config /no/such.json", lambda: cli(["--config", "/no/such.json"]), "config|no such"),
        ("--config /etc/passwd", lambda: cli(["--config", "/etc/passwd"]), "config|json"),
        ("--resume /etc", lambda: cli(["--resume", "/etc"]), "resume|run"),
        ("--resume with --steps", lambda: cli(["--resume", str(out), "--steps", "5"]), "resume"),
        ("app.py --auth alice (no password)", lambda: app.parse_args(["--auth", "alice"]), "USER:PASSWORD"),
        ("app.py --port abc", lambda: app.parse_args(["--port", "abc"]), "port"),
        ("app.py --max-steps many", lambda: app.parse_args(["--max-steps", "many"]), "max-steps"),
    ]
    return cases


def session_cases(f: dict, root: Path) -> list[tuple]:
    def config(*args, **options):
        return session.finetune_config(f["model"], None, "circulant", 16, *args, **options)

    limits = session.Limits()
    many = session.finetune_config(f["model"], f["many-classes.csv"], "circulant", 16, 10, 8, 1e-3, 0)
    large = session.finetune_config(f["model"], f["large.csv"], "circulant", 16, 10, 8, 1e-3, 0)
    run = {"name": "r", "status": "completed", "trainable_params": 1, "dir": root}
    outside = lambda p: Path(p).resolve().is_relative_to((root / "runs").resolve())  # noqa: E731
    return [
        ("finetune: steps 'abc'", lambda: config("abc", 8, 1e-3, 0), "steps"),
        ("finetune: steps None", lambda: config(None, 8, 1e-3, 0), "steps"),
        ("finetune: steps NaN", lambda: config(float("nan"), 8, 1e-3, 0), "steps"),
        ("finetune: steps 10**9 (limit)", lambda: config(10**9, 8, 1e-3, 0), "--max-steps"),
        ("finetune: batch size -1", lambda: config(10, -1, 1e-3, 0), "batch size"),
        ("finetune: lr 'fast'", lambda: config(10, 8, "fast", 0), "learning rate"),
        ("finetune: lr inf", lambda: config(10, 8, math.inf, 0), "learning rate"),
        ("finetune: seed 2**64", lambda: config(10, 8, 1e-3, 2**64), "seed"),
        ("finetune: seed -1", lambda: config(10, 8, 1e-3, -1), "seed"),
        ("finetune: seed 'nan'", lambda: config(10, 8, 1e-3, "nan"), "seed"),
        ("finetune: warmup 1.5", lambda: config(10, 8, 1e-3, 0, warmup_ratio=1.5), "warmup"),
        ("finetune: max length 0", lambda: config(10, 8, 1e-3, 0, max_length=0), "max length"),
        ("finetune: eval size '-1'", lambda: config(10, 8, 1e-3, 0, eval_size="-1"), "eval size"),
        ("finetune: eval size 'lots'", lambda: config(10, 8, 1e-3, 0, eval_size="lots"), "eval size"),
        ("finetune: custom targets empty", lambda: config(10, 8, 1e-3, 0, targets="custom"), "custom targets"),
        ("finetune: method 'dense'", lambda: session.finetune_config("", None, "dense", 16), "method"),
        ("finetune: LoRA r 0", lambda: session.finetune_config("", None, "lowrank", rank=0), "rank"),
        ("finetune: LoRA alpha NaN", lambda: session.finetune_config("", None, "lowrank", rank=4,
                                                                     alpha=float("nan")), "alpha"),
        ("plan: model /etc", lambda: session.plan(session.finetune_config("/etc", None, "circulant", 16), limits),
         "could not load a model"),
        ("plan: model /no/such", lambda: session.plan(session.finetune_config("/no/such", None, "circulant", 16),
                                                      limits), "could not load a model"),
        ("plan: model <100,000 characters>", lambda: session.plan(session.finetune_config(LONG, None, "circulant", 16),
                                                                  limits), "characters"),
        ("plan: target regex matching nothing", lambda: session.plan(
            session.finetune_config(f["model"], None, "circulant", 16, targets="custom", custom_targets="^nothing$"),
            limits), "match"),
        ("dataset: 20,000 classes (limit)", lambda: session.check_dataset(many, limits), "--max-classes"),
        ("dataset: upload over the size limit", lambda: session.check_dataset(large, session.Limits(max_upload_mb=0.01)),
         "--max-upload-mb"),
        ("dataset: upload deleted since (cache cleaned)", lambda: session.check_dataset(
            session.finetune_config(f["model"], str(root / "gone.csv"), "circulant", 16), limits), "upload it again"),
        ("run name '../../etc/x'", lambda: session.new_run_dir(root / "runs", session.check_run_name("../../etc/x")),
         "", outside),
        ("run name <100,000 characters>", lambda: session.check_run_name(LONG), "",
         lambda name: len(name) <= MAX_NAME),
        ("run name '///'", lambda: session.check_run_name("///"), "name"),
        ("workspace key '../../etc'", lambda: session.workspace_dir(root / "runs", "../../etc"), "", outside),
        ("workspace key <100,000 characters>", lambda: session.workspace_dir(root / "runs", LONG), "workspace key"),
        ("try box: 100,000 characters", lambda: session.classify(run, LONG), "characters"),
        ("try box: None", lambda: session.classify(run, None), "text"),
        ("run 'x' of another workspace", lambda: session.find_run([], "x"), "no run named"),
        ("explore: 4096 x 4096 (limit)", lambda: session.explore("ldr", 4096, 4096, 10), "--max-map|at most"),
        ("explore: budget NaN", lambda: session.explore("circulant", 64, 64, float("nan")), "budget"),
        ("explore: d_out -1", lambda: session.explore("circulant", -1, 64, 64), "d_out|rows|size"),
        ("explore: seed 2**64", lambda: session.explore("circulant", 64, 64, 64, 2**64), "seed"),
        ("explore: family 'nosuch'", lambda: session.explore("nosuch", 64, 64, 64), "family"),
        ("explore: operator 'Z9'", lambda: session.explore("circulant", 8, 8, 8, 0, "Z9"), "Z9|operator"),
        ("compare: target 'nosuch'", lambda: session.compare("nosuch", 16, 16), "nosuch|target"),
        ("compare: budget no family fits", lambda: session.compare("gaussian", 16, 1), "",
         lambda comparison: "No family fits" in comparison.note),
    ]


def app_cases(f: dict, url: str) -> list[tuple]:
    import httpx
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    args = [f["model"], handle_file(f["large.csv"]), "", "", "circulant", 16, 5, 8, 1e-2, 0]

    def finetune(index, value):
        return lambda: client.predict(*args[:index], value, *args[index + 1:], api_name="/finetune")

    def get(path):
        def call():
            response = httpx.get(url + path)
            if response.status_code in (403, 404):
                raise Refused(f"{response.status_code}: file not allowed")
            return response.text[:80]
        return call

    return [
        ("/finetune: lr 'nan'", finetune(8, "nan"), "learning rate"),
        ("/finetune: steps None", finetune(6, None), "steps"),
        ("/finetune: seed 2**64", finetune(9, 2**64), "seed"),
        ("/finetune: seed -1", finetune(9, -1), "seed"),
        ("/finetune: model <100,000 characters>", finetune(0, LONG), "characters"),
        ("/finetune: model /etc", finetune(0, "/etc"), "could not load a model"),
        ("/finetune: upload over --max-upload-mb", finetune(1, handle_file(f["many-classes.csv"])),
         "file size|too large|exceeds"),
        ("/explore: budget 'abc'", lambda: client.predict("circulant", 8, 8, "abc", 0, "Z1", "Z-1",
                                                          api_name="/explore"), "budget"),
        ("/predict: a run that is not yours", lambda: client.predict("someone-elses-run", "goal", api_name="/predict"),
         "no run named"),
        ("/download: '../../etc/passwd'", lambda: client.predict("../../etc/passwd", api_name="/download"),
         "no run named"),
        ("/open_workspace: 100,000 characters", lambda: client.predict(LONG, api_name="/open_workspace"),
         "workspace key"),
        ("GET file=/etc/passwd", get("gradio_api/file=/etc/passwd"), "not allowed"),
        ("GET file=runs/../app.py", get("gradio_api/file=runs/../app.py"), "not allowed"),
    ]


@contextlib.contextmanager
def served(runs_dir: Path, limits: session.Limits):
    """The app served on 127.0.0.1 at a free port, as ``python app.py`` serves it; yields its URL."""
    import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.serve("127.0.0.1", port, runs_dir=runs_dir, block=False, limits=limits)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-app", action="store_true", help="skip the cases through a served app's API")
    options = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as folder:
        root = Path(folder)
        f = files(root)
        groups = [("library", library_cases(f)), ("CLI", cli_cases(f, root / "cli-run")),
                  ("session", session_cases(f, root))]
        for where, cases in groups:
            rows += [judged(where, *case) for case in cases]
        if not options.no_app:
            with served(root / "app-runs", session.Limits(max_upload_mb=0.1)) as url:
                rows += [judged("API", *case) for case in app_cases(f, url)]
    print_table(rows)
    return 0 if all(r["clear"] for r in rows) else 1


def print_table(rows: list[dict]) -> None:
    print("| where | input | outcome | message | clear? |\n|---|---|---|---|---|")
    for r in rows:
        message = r["message"].replace("|", "\\|")
        print(f"| {r['where']} | {r['input']} | {r['outcome']} | {message} | {'yes' if r['clear'] else '**no**'} |")
    clear = sum(r["clear"] for r in rows)
    by_where = {}
    for r in rows:
        done, total = by_where.get(r["where"], (0, 0))
        by_where[r["where"]] = (done + r["clear"], total + 1)
    print(f"\n{len(rows)} bad inputs tried: {clear} clear, {len(rows) - clear} unclear ("
          + ", ".join(f"{w} {c}/{n}" for w, (c, n) in by_where.items()) + f"); {sum(r['s'] for r in rows):.0f} s")


if __name__ == "__main__":
    sys.exit(main())
