"""Where the tools write, checked before any work: a run never ends in a traceback over its output
path after minutes of work, and never writes over one of its own inputs."""

from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from .errors import DeployError


def _file_above(path: Path) -> Optional[Path]:
    """The nearest existing ancestor of ``path`` if it is a file (no folder can be made under it)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def output_folder(out, flag: str = '--out') -> Path:
    """``out`` as a folder to write into (made later by the tool).

    Raises:
        DeployError: ``out`` is a file, or lies under one; names it and ``flag``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DeployError(f'{flag} {out} is a file: name a folder to write into')
    above = _file_above(out)
    if above is not None:
        raise DeployError(f'{flag} {out}: {above} is a file, not a folder')
    return out


def output_file(out, inputs: Iterable = (), flag: str = '--out') -> Path:
    """``out`` as a file to write, which must not be one of ``inputs`` (paths the tool reads).

    Raises:
        DeployError: ``out`` is a folder, lies under a file, or is one of ``inputs``; names it and ``flag``.
    """
    out = Path(out)
    if out.is_dir():
        raise DeployError(f'{flag} {out} is a folder: name the file to write')
    above = _file_above(out)
    if above is not None:
        raise DeployError(f'{flag} {out}: {above} is a file, not a folder')
    for source in inputs:
        if source is not None and Path(source).exists() and out.resolve() == Path(source).resolve():
            raise DeployError(f'{flag} {out} is the input {source}: write to another file')
    return out


def picture_paths(images: Sequence[Path], out, flag: str = '--out') -> List[Path]:
    """``out``/<image name>.png for each image, the demos' pictures.

    Raises:
        DeployError: ``out`` is no folder (:func:`output_folder`), ``out`` holds any of the images (a
            picture could replace an image, ``detections.json`` a file of the user's, and the next run
            over that folder would take the pictures for images), or two images share a name (a.jpg
            and a.png).
    """
    out = output_folder(out, flag)
    paths = [out / f'{image.stem}.png' for image in images]
    drawn = {}
    for image, path in zip(images, paths):
        if path in drawn:
            raise DeployError(f'{drawn[path]} and {image} would both be drawn to {path}: rename one of them')
        drawn[path] = image
    inside = next((image for image in images if image.resolve().parent == out.resolve()), None)
    if inside is not None:
        raise DeployError(
            f'{flag} {out} holds the images ({inside} among them): the pictures and detections.json go to '
            'another folder'
        )
    return paths
