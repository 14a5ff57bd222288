"""Image classification: built-in digits and Fashion-MNIST, image folders, zips, CSV/JSONL of paths,
every bad input with its message, the collator, loading, adapters of every family and a few
optimizer steps — on a tiny ViT built from a config (random weights, nothing downloaded)."""
import copy
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BertConfig, BertModel, ViTConfig, ViTForImageClassification, ViTImageProcessorPil

import surm_core
from surm_core import AdapterConfig, inject, load_adapter, merge, save_adapter
from surm_core.adapters.model import adapted_layers
from surm_core.finetune import FinetuneConfig, images, task_for, weights_digest
from surm_core.finetune.__main__ import main
from surm_core.finetune.data import DatasetError
from surm_core.finetune.images import ImageCollator, image_rows, load_image_dataset, split
from surm_core.models import DEFAULT_MODEL, infer_task, load_image_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

SIZE = 16


def make_tiny_vit(directory, num_channels=3) -> str:
    """A 2-layer ViT (hidden 32, 4×4 patches of 16×16 images, no dropout) with its image processor."""
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=SIZE, patch_size=4, num_channels=num_channels, initializer_range=0.2,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ViTForImageClassification(config).save_pretrained(directory, safe_serialization=True)
    ViTImageProcessorPil(size={"height": SIZE, "width": SIZE}).save_pretrained(directory)
    return str(directory)


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def shapes_folder(root: Path, per_class=4) -> Path:
    """Three classes of generated images in mixed sizes and modes: dark squares (grayscale PNG),
    bright squares (RGB PNG), stripes (JPEG)."""
    rng = np.random.default_rng(0)
    for name in ("bright", "dark", "stripes"):
        (root / name).mkdir(parents=True)
    for i in range(per_class):
        side = 10 + 3 * i
        (root / "dark" / f"{i}.png").write_bytes(png(rng.integers(0, 60, (side, side))))
        (root / "bright" / f"{i}.png").write_bytes(png(rng.integers(190, 256, (side, side + 4, 3))))
        stripes = np.zeros((20, 12 + i, 3), np.uint8)
        stripes[::2] = 255
        Image.fromarray(stripes).save(root / "stripes" / f"{i}.jpg", format="JPEG")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def zip_folder(folder: Path, path: Path, prefix="") -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                z.write(file, prefix + file.relative_to(folder).as_posix())
    return path


def pixels(data, i):
    with images.open_image(data.images[i]) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return {"vit": make_tiny_vit(root / "vit"), "folder": shapes_folder(root / "shapes")}


# -- built in ---------------------------------------------------------------------------------------
def test_digits_are_built_in_and_split_stratified():
    data = load_image_dataset("digits")
    assert (len(data), data.label_names) == (1797, [str(d) for d in range(10)])
    assert data.images[0].dtype == np.uint8 and data.images[0].shape == (8, 8)
    assert max(image.max() for image in data.images) == 255  # 0..16 scaled to 0..255
    train, test = split(data)
    assert (len(train), len(test)) == (1438, 359)
    assert sorted(set(test.labels)) == list(range(10))
    assert split(data)[1].labels == test.labels


@pytest.mark.skipif(not images.FASHION_MNIST_DIR.is_dir() and not os.environ.get("CI"),
                    reason="needs apt-get install dataset-fashion-mnist (CI installs it)")
def test_fashion_mnist_from_the_debian_package():
    data = load_image_dataset("fashion_mnist")
    assert len(data) == 70_000 and data.label_names[0] == "T-shirt/top" and data.label_names[9] == "Ankle boot"
    assert data.images[0].shape == (28, 28) and data.labels[:3] == [9, 0, 0]  # the training file's first labels
    assert np.bincount(data.labels).tolist() == [7000] * 10


def test_fashion_mnist_absent_says_how_to_install(tmp_path):
    with pytest.raises(DatasetError, match="Fashion-MNIST is not installed .*: apt-get install dataset-fashion-mnist"):
        images.load_fashion_mnist(tmp_path)


def test_idx_files_are_read_and_checked(tmp_path):
    import gzip
    header = bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    (tmp_path / "ok.gz").write_bytes(gzip.compress(header + bytes(range(6))))
    assert images.read_idx(tmp_path / "ok.gz").tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "short.gz").write_bytes(gzip.compress(header + bytes(range(5))))
    with pytest.raises(DatasetError, match=r"holds 5 bytes of data, its header says \(2, 3\)"):
        images.read_idx(tmp_path / "short.gz")


# -- folders, zips, tables --------------------------------------------------------------------------
def test_image_folder_of_mixed_sizes_and_modes(tiny):
    data = load_image_dataset(str(tiny["folder"]))
    assert (data.name, len(data), data.label_names) == ("shapes", 12, ["bright", "dark", "stripes"])
    assert data.labels == [0] * 4 + [1] * 4 + [2] * 4
    assert {pixels(data, i).shape for i in range(12)} >= {(10, 10, 3), (10, 14, 3), (20, 12, 3)}


@pytest.mark.parametrize("prefix", ["", "shapes/"])
def test_zip_gives_the_same_dataset_as_its_folder(tiny, tmp_path, prefix):
    folder = load_image_dataset(str(tiny["folder"]))
    path = zip_folder(tiny["folder"], tmp_path / "shapes.zip", prefix)
    with zipfile.ZipFile(path, "a") as z:  # what macOS adds to a zip
        z.writestr("__MACOSX/._x", b"junk")
    data = load_image_dataset(str(path))
    assert (data.name, data.labels, data.label_names) == ("shapes.zip", folder.labels, folder.label_names)
    assert all(np.array_equal(pixels(data, i), pixels(folder, i)) for i in range(len(data)))
    assert not list(tmp_path.glob("*/"))  # read in memory, nothing extracted


@pytest.mark.parametrize("entry", ["../evil.png", "/etc/evil.png", "dark/../../evil.png", "C:/evil.png", "dark\\..\\..\\evil.png"])
def test_zip_entries_that_escape_are_refused(tiny, tmp_path, entry):
    path = zip_folder(tiny["folder"], tmp_path / "evil.zip")
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(entry, png(np.zeros((4, 4))))
    with pytest.raises(DatasetError, match=re.escape(f"evil.zip is refused: entry {entry!r} has a path that leaves the zip's folder")):
        load_image_dataset(str(path))


def test_zip_links_and_oversize_zips_are_refused(tiny, tmp_path, monkeypatch):
    path = zip_folder(tiny["folder"], tmp_path / "link.zip")
    with zipfile.ZipFile(path, "a") as z:
        info = zipfile.ZipInfo("dark/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="entry 'dark/link.png' is a symbolic link"):
        load_image_dataset(str(path))
    path = zip_folder(tiny["folder"], tmp_path / "big.zip")
    monkeypatch.setattr(images, "MAX_ZIP_ENTRIES", 5)
    with pytest.raises(DatasetError, match="big.zip has 1[23] entries; at most 5 are read"):
        load_image_dataset(str(path))
    monkeypatch.setattr(images, "MAX_ZIP_ENTRIES", 100)
    monkeypatch.setattr(images, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(DatasetError, match=r"big.zip unpacks to [\d,]+ bytes; at most 1,000 are read"):
        load_image_dataset(str(path))
    (tmp_path / "not.zip").write_bytes(b"hello")
    with pytest.raises(DatasetError, match="not.zip is not a readable zip file"):
        load_image_dataset(str(tmp_path / "not.zip"))


def test_table_of_image_paths_relative_to_the_file(tiny, tmp_path):
    folder = tiny["folder"]
    rows = [{"path": str(p.relative_to(folder)), "label": p.parent.name} for p in sorted(folder.glob("*/*"))]
    (folder / "index.csv").write_text("path,label\n" + "".join(f"{r['path']},{r['label']}\n" for r in rows))
    data = load_image_dataset(str(folder / "index.csv"))
    assert (len(data), data.label_names) == (12, ["bright", "dark", "stripes"])
    jsonl = folder.parent / "index.jsonl"
    jsonl.write_text("".join(json.dumps({"img": f"shapes/{r['path']}", "class": r["label"]}) + "\n" for r in rows))
    other = load_image_dataset(str(jsonl))
    assert other.labels == data.labels and all(np.array_equal(pixels(other, i), pixels(data, i)) for i in range(12))
    (folder / "index.csv").unlink()


@pytest.mark.parametrize("make, message", [
    (lambda r: (r / "dark" / "notes.txt").write_text("hello"), r"1 file\(s\) are not readable images: dark/notes.txt"),
    (lambda r: (r / "dark" / "cut.png").write_bytes(png(np.zeros((8, 8)))[:-20]), r"not readable images: dark/cut.png \(.*(?i:truncated)"),
    (lambda r: (r / "README").write_text("hi"), r"1 file\(s\) are not inside a class folder \('README'\)"),
    (lambda r: [p.unlink() for p in list((r / "bright").glob("*"))[1:]], "class 'bright' has only 1 image"),
    (lambda r: [p.unlink() for d in ("bright", "stripes") for p in (r / d).glob("*")], r"has a single class \('dark'\); need at least 2"),
    (lambda r: [p.unlink() for p in r.rglob("*") if p.is_file()], "holds no images; it needs one sub-folder per class"),
])
def test_bad_folders_are_refused_by_name(tmp_path, make, message):
    root = shapes_folder(tmp_path / "data")
    make(root)
    with pytest.raises(DatasetError, match=message):
        load_image_dataset(str(root))


@pytest.mark.parametrize("content, message", [
    ("text,label\nhello,a\nworld,b\n", r"no column of image paths .*A text dataset needs a text-classification model"),
    ("path,label\ndark/0.png,a\nnope.png,b\n", r"1 image file\(s\) do not exist .*'nope.png'"),
    ("path,label\ndark/0.png,\n", "row 1 has no usable label in column 'label'"),
    ("path,kind\ndark/0.png,a\n", "cannot tell which column of bad.csv holds the label"),
])
def test_bad_tables_are_refused(tiny, content, message):
    path = tiny["folder"] / "bad.csv"
    path.write_text(content)
    try:
        with pytest.raises(DatasetError, match=message):
            load_image_dataset(str(path))
    finally:
        path.unlink()


def test_unknown_inputs_name_what_is_allowed(tmp_path):
    with pytest.raises(DatasetError, match=r"no image dataset at 'bbc_news': give a folder, a .zip, .*'digits', 'fashion_mnist'"):
        load_image_dataset("bbc_news")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"unsupported file type '.txt' for x.txt: use a folder, .zip, .csv or .jsonl"):
        load_image_dataset(str(tmp_path / "x.txt"))


# -- pixels for the model ---------------------------------------------------------------------------
def test_collator_makes_rgb_pixels_the_processor_sizes_and_normalises(tiny):
    _, processor = load_image_model(tiny["vit"], num_labels=3)
    data = load_image_dataset(str(tiny["folder"]))
    batch = ImageCollator(processor, num_channels=3)(image_rows(data))
    assert batch["pixel_values"].shape == (12, 3, SIZE, SIZE) and batch["labels"].tolist() == data.labels
    # ViT's processor maps [0, 255] to [-1, 1]: the dark grayscale squares are dark in all 3 channels.
    dark = batch["pixel_values"][data.labels.index(1)]
    assert dark.max() < -0.5 and torch.equal(dark[0], dark[1]) and torch.equal(dark[1], dark[2])
    white = {"image": np.full((5, 7), 255, np.uint8), "labels": 0}
    assert torch.equal(ImageCollator(processor, 3)([white])["pixel_values"], torch.ones(1, 3, SIZE, SIZE))
    gray = ImageCollator(processor, num_channels=1)
    processor.image_mean, processor.image_std = [0.5], [0.5]
    assert gray([white])["pixel_values"].shape == (1, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="1 or 3 channels, this one takes 4"):
        ImageCollator(processor, num_channels=4)


# -- models -----------------------------------------------------------------------------------------
def test_load_image_model_sizes_a_new_head_and_refuses_text_models(tiny, tmp_path):
    model, processor = load_image_model(tiny["vit"], num_labels=7)
    assert model.classifier.out_features == 7 and infer_task(tiny["vit"]) == "image-classification"
    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"is not an image model: it is BertModel \(bert\), for text-classification"):
        load_image_model(tmp_path / "bert", num_labels=3)
    ViTForImageClassification.from_pretrained(tiny["vit"]).save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match=r"could not load the image processor of .*preprocessor_config.json"):
        load_image_model(tmp_path / "bare", num_labels=3)
    with pytest.raises(ValueError, match="num_labels must be at least 2"):
        load_image_model(tiny["vit"], num_labels=1)


@pytest.mark.parametrize("family", list(surm_core.FAMILIES))
def test_adapters_of_every_family_save_load_and_merge(tiny, family, tmp_path):
    base, _ = load_image_model(tiny["vit"], num_labels=3)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    model = inject(copy.deepcopy(base), AdapterConfig(family, modules_to_save=["classifier"]))
    assert model.surm_adapter_config.target_modules == ["q_proj", "v_proj"]  # ViT's query and value
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in adapted_layers(model).values():
            for p in layer.adapter_parameters().values():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        y = model(pixel_values=x).logits
        assert (y - base(pixel_values=x).logits).abs().max() > 1e-5
    save_adapter(model, tmp_path / "adapter")
    fresh, _ = load_image_model(tiny["vit"], num_labels=3)  # a new, different head: the saved one replaces it
    load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(fresh(pixel_values=x).logits, y)
        merge(fresh)
        torch.testing.assert_close(fresh(pixel_values=x).logits, y, atol=1e-5, rtol=0)


# -- a few optimizer steps --------------------------------------------------------------------------
def test_a_few_steps_on_digits_beat_chance(tiny):
    torch.manual_seed(0)
    train, test = split(load_image_dataset("digits"))
    model, processor = load_image_model(tiny["vit"], num_labels=10)
    inject(model, AdapterConfig("lowrank", hparams={"r": 4, "alpha": 8}, modules_to_save=["classifier"]))
    collate = ImageCollator(processor, model.config.num_channels)
    rows, eval_rows = image_rows(train), image_rows(test)[:200]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(40):
        batch = collate(rows[step * 32:(step + 1) * 32])
        labels = batch.pop("labels")
        F.cross_entropy(model(**batch).logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    batch = collate(eval_rows)
    with torch.no_grad():
        accuracy = (model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert accuracy > 0.3  # chance is 0.1


# -- through the engine and the CLI -----------------------------------------------------------------
ARGS = ["--family", "lowrank", "--hparams", "r=4", "alpha=8", "--batch-size", "16", "--lr", "1e-2"]


def png_folder(root: Path, per_class=24) -> Path:
    """Generated PNGs in three classes: a bright square on the left, in the middle, on the right."""
    rng = np.random.default_rng(1)
    for label, column in (("left", 0), ("middle", 8), ("right", 16)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (24, 24), dtype=np.uint8)
            image[8:16, column:column + 8] = 255
            (root / label / f"{i:02d}.png").write_bytes(png(image))
    return root


def test_cli_trains_on_digits_above_chance(tiny, tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["--model", tiny["vit"], "--dataset", "digits", *ARGS, "--batch-size", "32", "--lr", "5e-2",
                 "--steps", "30", "--eval-every", "30", "--eval-size", "200", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "image-classification" and summary["labels"] == [str(d) for d in range(10)]
    assert summary["final_eval_acc"] > 0.2  # chance is 0.1
    assert f"completed: 30 steps, eval accuracy {summary['final_eval_acc']:.4f}" in capsys.readouterr().out
    # The saved adapter and head, on a fresh model, give the run's weights and its predictions.
    task = task_for(FinetuneConfig.from_dict({**summary["config"], "out_dir": None}), summary["labels"])
    model, _ = task.load_model()
    load_adapter(model, out / "adapter")
    assert weights_digest(model) == summary["weights_sha256"][0]
    _, test = split(load_image_dataset("digits"))
    predictions = task.predict(model, test.images[:200])
    right = sum(max(p, key=p.get) == test.label_names[y] for p, y in zip(predictions, test.labels))
    assert right / 200 == pytest.approx(summary["final_eval_acc"])


def test_cli_trains_on_a_generated_folder_of_pngs(tiny, tmp_path):
    folder = png_folder(tmp_path / "squares")
    out = tmp_path / "run"
    assert main(["--model", tiny["vit"], "--task", "image-classification", "--dataset", str(folder), *ARGS,
                 "--steps", "30", "--eval-every", "10", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == ["left", "middle", "right"] and summary["config"]["task"] == "image-classification"
    assert (summary["train_rows"], summary["eval_rows"]) == (57, 15)
    assert summary["final_eval_acc"] > 0.5  # chance is 1/3


@pytest.mark.parametrize("task, model, dataset, message", [
    (None, "vit", "bbc_news", r"the task is image-classification, inferred from model '.*vit', but dataset 'bbc_news' holds "
                              r"texts; image-classification needs images \(a folder with one sub-folder per class"),
    (None, "text", "digits", r"the task is text-classification, inferred from model '.*', but dataset 'digits' holds images; "
                             r"text-classification needs texts with labels"),
    ("causal-lm", "vit", "folder", r"the task is causal-lm, but dataset '.*shapes' holds images"),
    ("text-classification", "text", "prompts", r"dataset '.*p.jsonl' holds prompts and completions; text-classification needs"),
])
def test_a_dataset_that_does_not_fit_the_task_is_refused(tiny, tmp_path, task, model, dataset, message):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    models = {"vit": tiny["vit"], "text": DEFAULT_MODEL}
    datasets = {"folder": str(tiny["folder"]), "prompts": str(tmp_path / "p.jsonl")}
    config = FinetuneConfig(model=models[model], task=task, dataset=datasets.get(dataset, dataset), method="head-only")
    with pytest.raises(ValueError, match=message):
        task_for(config)


def test_image_table_takes_no_text_column(tiny):
    with pytest.raises(ValueError, match="text_column is for text datasets; a table of images names its image column image, "):
        task_for(FinetuneConfig(model=tiny["vit"], dataset="digits", text_column="x"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_an_image_classifier_like_one(tiny, tmp_path):
    folder = png_folder(tmp_path / "squares", per_class=10)
    args = ["--model", tiny["vit"], "--dataset", str(folder), *ARGS, "--steps", "6", "--eval-every", "3"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "surm_core.finetune", *args,
               "--out", str(tmp_path / "ddp")]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("completed: 6 steps") == 1  # only rank 0 prints
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["weights_sha256"][0] == ddp["weights_sha256"][1]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    # Each process took half of every global batch: the single-process run, up to rounding.
    read = lambda d: [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if r["event"] != "done"]
    assert [r["loss"] for r in read(tmp_path / "ddp")] == pytest.approx([r["loss"] for r in read(tmp_path / "one")], rel=1e-4)
    assert ddp["final_eval_acc"] == one["final_eval_acc"]
