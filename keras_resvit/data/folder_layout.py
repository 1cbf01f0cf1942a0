"""The layout of an image folder: which sub-folders are splits ("train/", "Test/", "val/")
and which are classes, and the files of each class (through linked folders, each file once).
"""

import os
from pathlib import Path

EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
FOLDER_SPLITS = ("train", "validation", "test")
# The names of each split's folder, in any case ("Train/", "val/", "valid/", "Test/"): a
# name other than the split's own, lowercase, counts only for a folder of class folders.
SPLIT_FOLDER_NAMES = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid"),
    "test": ("test", "testing"),
}


def class_dirs(folder):
    return sorted(d for d in folder.iterdir() if d.is_dir() and d.name[0] != ".")


def class_files(class_dir):
    """The visible files under `class_dir`, through linked folders too (each real folder
    once: a link back into the class is no loop), and the links that lead nowhere or to a
    folder holding the class (its images would all take this class's label)."""
    files, broken, seen = [], [], set()
    top = os.path.realpath(class_dir)
    for folder, dirs, names in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen or (real != top and top.startswith(os.path.join(real, ""))):
            if real not in seen:  # a folder above the class: every class's images
                broken.append(Path(folder))
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if d[0] != "."]
        for name in names:
            path = Path(folder, name)
            if name[0] == ".":
                continue
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists():
                broken.append(path)
    return sorted(files), sorted(broken)


def stray_images(class_root):
    """Image files beside the class folders: in no class, so read by no split."""
    return sorted(
        p for p in class_root.iterdir()
        if p.is_file() and p.name[0] != "." and p.suffix.lower() in EXTENSIONS
    )  # fmt: skip


def _is_split_folder(folder, split) -> bool:
    name = folder.name
    if name == split:
        return True
    return name.lower() in SPLIT_FOLDER_NAMES[split] and any(class_dirs(folder))


def split_folder(root, split: str) -> Path | None:
    """The sub-folder of `root` that holds `split` ("train", "validation" or "test"), or None:
    its own name, or a folder of class folders named as `SPLIT_FOLDER_NAMES` says, in any
    case ("Train/", "val/").

    Raises:
        ValueError: `root` has more than one folder of `split` ("val/" and "validation/").
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    found = [d for d in class_dirs(root) if _is_split_folder(d, split)]
    if len(found) > 1:
        raise ValueError(
            f"folder {str(root)!r} has {len(found)} folders of the {split!r} split: "
            f"{[d.name for d in found]}; keep one (rename or move the others)."
        )
    return found[0] if found else None


def class_root_of(root, split, validation_split):
    """The folder whose sub-folders are the classes, and whether to hold out a share of it: a
    split's own folder, else the training images (`root/train`, or `root` without one)."""
    own = split_folder(root, "validation")
    if validation_split is not None and own is not None:
        # The share held out of the training images would be read by no split.
        raise ValueError(
            f"validation_split={validation_split}: folder {str(root)!r} has its own "
            f"{own.name!r} sub-folder, read whole as the validation split, so the images held "
            "out of the training split would be read by none; drop validation_split (or "
            "pass the training sub-folder as the source to hold out a share of it)."
        )
    own = split_folder(root, split)
    if split != "train" and own is not None:
        return own, False
    base = split_folder(root, "train") or root
    if base == root:
        _refuse_split_folders_as_classes(root)
    if split == "train" or validation_split is not None:
        return base, validation_split is not None
    other = split_folder(root, "validation") if split == "test" else None
    if other is not None:  # its images are the ones to score, not a share of the training's
        raise ValueError(
            f"split={split!r}: folder {str(root)!r} has no {split!r} sub-folder, but a "
            f"validation one ({other.name!r}); read split='validation' (keras-resvit "
            "evaluate: --split validation)."
        )
    raise ValueError(
        f"split={split!r}: folder {str(root)!r} has no {split!r} sub-folder; hold out part of "
        f"{str(base)!r} with validation_split=<fraction> (keras-resvit train, evaluate and "
        "few-shot: --validation-split), or read split='train'."
    )


def scoring_split(root) -> str:
    """The split of folder `root` that scores a model where a test split is asked for: "test",
    or "validation" where `root` has a validation folder and no test folder."""
    if split_folder(root, "test") is None and split_folder(root, "validation") is not None:
        return "validation"
    return "test"


def _refuse_split_folders_as_classes(root):
    """A folder without a training folder whose class folders are split folders ("test/" and
    "validation/" of class folders) would train a classifier of splits."""
    names = {name for split in FOLDER_SPLITS for name in SPLIT_FOLDER_NAMES[split]}
    splits = [d.name for d in class_dirs(root) if d.name.lower() in names and any(class_dirs(d))]
    if splits:
        raise ValueError(
            f"source={str(root)!r} has split folder(s) {splits} but no training folder "
            f"(one of {list(SPLIT_FOLDER_NAMES['train'])}): they would be read as classes. "
            "Put the training images in a 'train' sub-folder, or pass a split's folder as "
            "the source."
        )


def refuse_files_of_two_classes(class_root, owners):
    """`owners`: each real file's (class, listed path) pairs. One image under two classes
    (a link to a class folder, or to a file, from another class) would be trained on with
    both labels."""
    shared = [found for found in owners.values() if len({name for name, _ in found}) > 1]
    if shared:
        shown = "; ".join(
            " and ".join(f"{str(path)!r} (class {name!r})" for name, path in found)
            for found in shared[:3]
        )
        raise ValueError(
            f"source={str(class_root)!r}: {len(shared)} image file(s) are listed in more than "
            f"one class, through links: {shown}{' ...' if len(shared) > 3 else ''}. Each "
            "image takes one label; remove the links of the classes it does not belong to."
        )
