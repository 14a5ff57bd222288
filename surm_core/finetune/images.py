"""Image-classification data for fine-tuning: built-in digits and Fashion-MNIST, a folder of images
with one sub-folder per class, the same as a ``.zip``, or a CSV / JSONL of image paths and labels.

Everything is checked before any training starts: a file that is not a readable image, a single
class, a zip entry whose path leaves its folder, raise :class:`DatasetError` naming what is wrong.
Pixels are decoded only when a batch needs them, by :class:`ImageCollator`, which hands them to the
model's ``AutoImageProcessor`` (resize, rescale, normalise): images of mixed sizes are fine.

>>> data = load_image_dataset("digits")
>>> len(data), data.label_names[:3]
(1797, ['0', '1', '2'])
>>> train, test = split(data)          # the text path's fixed 80/20 stratified split
"""
from __future__ import annotations

import gzip
import io
import stat
from collections import Counter
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .data import (
    LABEL_COLUMNS,
    MIN_ROWS_PER_CLASS,
    DatasetError,
    label_sort_key,
    read_csv_rows,
    read_jsonl_rows,
    split,
)

DIGITS = "digits"
FASHION_MNIST = "fashion_mnist"
BUILT_IN = (DIGITS, FASHION_MNIST)
#: Where Debian's ``dataset-fashion-mnist`` package puts the four IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
#: Column names recognised, case-insensitively, for the image path of a CSV / JSONL row.
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "file_name", "img")
#: A zip is read into memory (never extracted onto disk), so its size is bounded.
MAX_ZIP_ENTRIES = 100_000
MAX_ZIP_BYTES = 1 << 30
#: How many offending files an error message lists.
SHOWN = 5


@dataclass
class ImageDataset:
    """Images with integer labels; ``labels[i]`` indexes ``label_names``.

    ``images[i]`` is a source :func:`open_image` reads: a file path, a ``(name, bytes)`` pair
    (a zip member) or a ``uint8`` array of shape ``(H, W)`` or ``(H, W, C)``.
    """

    name: str
    images: list
    labels: list[int]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> "ImageDataset":
        return ImageDataset(
            self.name,
            [self.images[i] for i in indices],
            [self.labels[i] for i in indices],
            self.label_names,
        )


def load_image_dataset(name_or_path: str, image_column: str | None = None, label_column: str | None = None) -> ImageDataset:
    """Load a built-in dataset (``"digits"``, ``"fashion_mnist"``), an image folder, a ``.zip``
    of one, or a ``.csv`` / ``.jsonl`` file of image paths (relative to the file) and labels.

    A folder (or zip) holds one sub-folder per class, named after it, with the images anywhere
    below; hidden files (``.DS_Store``) and a zip's ``__MACOSX/`` are skipped. A zip may also wrap
    those class folders in one top-level folder. Raises :class:`DatasetError` for a missing path,
    a file that is not a readable image (named), a single class, a class with fewer than
    ``MIN_ROWS_PER_CLASS`` images, a zip entry that is absolute, leaves its folder or is a link
    (refused), a zip over ``MAX_ZIP_ENTRIES`` entries or ``MAX_ZIP_BYTES`` bytes, and a text
    dataset given instead of images.
    """
    if name_or_path == DIGITS:
        return load_digits()
    if name_or_path == FASHION_MNIST:
        return load_fashion_mnist()
    path = Path(name_or_path)
    if path.is_dir():
        return load_folder(path)
    if not path.is_file():
        raise DatasetError(
            f"no image dataset at {str(path)!r}: give a folder, a .zip, a .csv / .jsonl of image paths, "
            f"or a built-in one ({', '.join(map(repr, BUILT_IN))})"
        )
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return load_zip(path)
    if suffix in (".csv", ".jsonl"):
        return load_table(path, image_column, label_column)
    raise DatasetError(f"unsupported file type {path.suffix!r} for {path.name}: use a folder, .zip, .csv or .jsonl")


# -- built in ---------------------------------------------------------------------------------------
def load_digits() -> ImageDataset:
    """scikit-learn's handwritten digits (1,797 images of 8×8 pixels, 10 classes), shipped with it.

    Pixel values 0..16 are scaled to 0..255.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    return ImageDataset(DIGITS, list(pixels), [int(y) for y in bunch.target], [str(d) for d in range(10)])


def load_fashion_mnist(root: Path = FASHION_MNIST_DIR) -> ImageDataset:
    """Zalando's Fashion-MNIST (70,000 images of 28×28 pixels, 10 classes) from Debian's
    ``dataset-fashion-mnist`` package: its training and test files together, split like any
    other dataset (80/20, stratified, fixed), not by the files."""
    parts = ("train", "t10k")
    files = [root / f"{part}-{kind}-idx{dims}-ubyte.gz" for part in parts for kind, dims in (("images", 3), ("labels", 1))]
    if not all(f.is_file() for f in files):
        raise DatasetError(
            f"Fashion-MNIST is not installed (no {files[0]}): apt-get install dataset-fashion-mnist"
        )
    images = np.concatenate([read_idx(files[0]), read_idx(files[2])])
    labels = np.concatenate([read_idx(files[1]), read_idx(files[3])])
    return ImageDataset(FASHION_MNIST, list(images), labels.astype(int).tolist(), FASHION_MNIST_LABELS)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed) of unsigned bytes, as LeCun's MNIST format defines it:
    two zero bytes, the type (0x08 = uint8), the number of dimensions, their sizes (big-endian
    int32), then the data."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"{path} holds {data.size} bytes of data, its header says {shape}")
    return data.reshape(shape)


# -- a folder, a zip, a table -----------------------------------------------------------------------
def load_folder(root: Path) -> ImageDataset:
    """An image folder on disk: ``root/<class>/**/<image>``."""
    entries, stray = [], []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if len(relative.parts) < 2:
            stray.append(relative.as_posix())
        else:
            entries.append((relative.as_posix(), relative.parts[0], str(path)))
    return from_entries(root.name, entries, stray)


def load_zip(path: Path) -> ImageDataset:
    """An image folder in a zip, read into memory after every entry name has been checked."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{path.name} is not a readable zip file ({e})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_ENTRIES:
            raise DatasetError(f"{path.name} has {len(members):,} entries; at most {MAX_ZIP_ENTRIES:,} are read")
        for m in members:
            check_zip_entry(m, path.name)
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_BYTES:
            raise DatasetError(f"{path.name} unpacks to {total:,} bytes; at most {MAX_ZIP_BYTES:,} are read")
        files = sorted((
            m for m in members
            if not m.is_dir() and not any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(m.filename).parts)
        ), key=lambda m: m.filename)
        parts = [PurePosixPath(m.filename).parts for m in files]
        # A zip of a folder wraps the class folders in that one folder: look inside it.
        wrapped = len({p[0] for p in parts}) == 1 and all(len(p) >= 2 for p in parts) and any(len(p) >= 3 for p in parts)
        strip = 1 if wrapped else 0
        entries, stray = [], []
        for m, p in zip(files, parts):
            p = p[strip:]
            if len(p) < 2:
                stray.append(m.filename)
            else:
                # read() checks the CRC, so a corrupt entry fails here, by name.
                try:
                    data = archive.read(m)
                except (zipfile.BadZipFile, OSError, NotImplementedError) as e:
                    raise DatasetError(f"{path.name}: entry {m.filename!r} cannot be read ({e})") from None
                entries.append((m.filename, p[0], (m.filename, data)))
    return from_entries(path.name, entries, stray)


def check_zip_entry(member: zipfile.ZipInfo, name: str) -> None:
    """Refuse an entry that would leave the zip's folder if extracted, or that is a link."""
    filename = member.filename.replace("\\", "/")
    parts = PurePosixPath(filename).parts
    if filename.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
        raise DatasetError(
            f"{name} is refused: entry {member.filename!r} has a path that leaves the zip's folder "
            "(absolute or with '..'); entries must be relative paths inside it"
        )
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DatasetError(f"{name} is refused: entry {member.filename!r} is a symbolic link; entries must be files")


def load_table(path: Path, image_column: str | None, label_column: str | None) -> ImageDataset:
    """A CSV / JSONL file with a column of image paths (relative to the file, or absolute) and a
    column of labels."""
    readers = {".csv": read_csv_rows, ".jsonl": read_jsonl_rows}
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{path.name} is not UTF-8 text; save the file as UTF-8") from None
    columns, rows = readers[path.suffix.lower()](text, path.name)
    if not rows:
        raise DatasetError(f"{path.name} has no data rows")
    for given, role in ((image_column, "image"), (label_column, "label")):
        if given is not None and given not in columns:
            raise DatasetError(f"{path.name} has no {role} column {given!r}; its columns are {columns}")
    image_column = image_column or obvious(columns, IMAGE_COLUMNS)
    label_column = label_column or obvious(columns, LABEL_COLUMNS)
    if image_column is None:
        raise DatasetError(
            f"{path.name} has no column of image paths (looked for {', '.join(IMAGE_COLUMNS)}); its columns "
            f"are {columns}. A text dataset needs a text-classification model; for images name the "
            "column (image_column)"
        )
    if label_column is None:
        raise DatasetError(f"cannot tell which column of {path.name} holds the label; name it (label_column); its columns are {columns}")
    entries, missing = [], []
    for row_num, row in enumerate(rows, start=1):
        value, label = row.get(image_column), row.get(label_column)
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"{path.name}: row {row_num} has no image path in column {image_column!r}")
        if isinstance(label, bool) or not (isinstance(label, int) or (isinstance(label, str) and label.strip())):
            raise DatasetError(
                f"{path.name}: row {row_num} has no usable label in column {label_column!r} ({label!r}); "
                "labels must be non-empty strings or integers"
            )
        file = path.parent / value.strip()
        if not file.is_file():
            missing.append(value)
        entries.append((value, str(label).strip(), str(file)))
    if missing:
        raise DatasetError(
            f"{path.name}: {len(missing)} image file(s) do not exist (paths are relative to {path.parent}): "
            + ", ".join(map(repr, missing[:SHOWN]))
        )
    return from_entries(path.name, entries, [])


def obvious(columns: list[str], candidates) -> str | None:
    hits = [c for c in columns if c.strip().lower() in candidates]
    return hits[0] if hits else None


def from_entries(name: str, entries: list[tuple[str, str, object]], stray: list[str]) -> ImageDataset:
    """``entries``: ``(display name, class name, source)`` per image; every source is opened once
    here, so that a file that is not an image is named now, not mid-training."""
    if stray:
        raise DatasetError(
            f"{name}: {len(stray)} file(s) are not inside a class folder ({', '.join(map(repr, stray[:SHOWN]))}); "
            "put each image in a sub-folder named after its class"
        )
    if not entries:
        raise DatasetError(f"{name} holds no images; it needs one sub-folder per class with the images in it")
    bad = []
    for shown, _, source in entries:
        try:
            with open_image(source) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            bad.append(f"{shown} ({type(e).__name__}: {e})" if not isinstance(e, UnidentifiedImageError) else shown)
    if bad:
        raise DatasetError(f"{name}: {len(bad)} file(s) are not readable images: {', '.join(bad[:SHOWN])}")
    raw_labels = [label for _, label, _ in entries]
    label_names = sorted(set(raw_labels), key=label_sort_key(raw_labels))
    if len(label_names) < 2:
        raise DatasetError(f"{name} has a single class ({label_names[0]!r}); need at least 2")
    counts = Counter(raw_labels)
    rare = [n for n in label_names if counts[n] < MIN_ROWS_PER_CLASS]
    if rare:
        raise DatasetError(
            f"{name}: class {rare[0]!r} has only {counts[rare[0]]} image(s); every class needs at least "
            f"{MIN_ROWS_PER_CLASS} (one to train on, one to test on)"
        )
    index = {n: i for i, n in enumerate(label_names)}
    return ImageDataset(name, [source for _, _, source in entries], [index[n] for n in raw_labels], label_names)


# -- pixels for the model ---------------------------------------------------------------------------
def open_image(source) -> Image.Image:
    """A PIL image, not yet decoded, from a path, a ``(name, bytes)`` pair or a uint8 array."""
    if isinstance(source, np.ndarray):
        return Image.fromarray(source)
    if isinstance(source, tuple):
        return Image.open(io.BytesIO(source[1]))
    return Image.open(source)


class ImageCollator:
    """Rows ``{"image": source, "labels": int}`` to a batch ``{"pixel_values", "labels"}``.

    Each image is converted to RGB when the model takes 3 channels (grayscale digits become
    gray RGB) or to grayscale when it takes 1, then the model's image processor resizes and
    normalises the batch.

    >>> collate = ImageCollator(processor, num_channels=3)  # doctest: +SKIP
    >>> collate(image_rows(train))["pixel_values"].shape  # doctest: +SKIP
    torch.Size([1437, 3, 224, 224])
    """

    def __init__(self, processor, num_channels: int = 3):
        if num_channels not in (1, 3):
            raise ValueError(f"images can be fed to models with 1 or 3 channels, this one takes {num_channels}")
        self.processor = processor
        self.mode = "RGB" if num_channels == 3 else "L"

    def __call__(self, rows: list[dict]):
        images = []
        for row in rows:
            with open_image(row["image"]) as image:
                images.append(image.convert(self.mode))
        batch = self.processor(images=images, return_tensors="pt")
        batch["labels"] = torch.tensor([row["labels"] for row in rows])
        return batch


def image_rows(data: ImageDataset) -> list[dict]:
    """One row per image, ``{"image": source, "labels": label}``: the counterpart of the text
    path's ``tokenize``; the pixels wait for :class:`ImageCollator`."""
    return [{"image": image, "labels": label} for image, label in zip(data.images, data.labels)]


__all__ = [
    "BUILT_IN",
    "DIGITS",
    "FASHION_MNIST",
    "ImageCollator",
    "ImageDataset",
    "image_rows",
    "load_image_dataset",
    "open_image",
    "split",
]
