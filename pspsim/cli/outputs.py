"""Command outputs: checked before any work starts, written all or nothing at the end.

Every command that writes files declares its inputs and outputs first
(:class:`Outputs`); each output is checked at once (not a folder, not a
device, not the same file as any input -- hard links and symbolic links
included --, a folder that exists or can be created, and that accepts a
file), so a bad path fails in one line before anything runs.  At the end
:meth:`Outputs.commit` writes every output to a temporary file beside its
target and only when all were written moves them into place; on any error
the temporary files, and the folders it created, are removed, so a command
writes all its outputs or none, and an earlier file of the same name is
kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pspsim.cli.common import UserError

Writer = Callable[[Path], None]


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder above ``path`` that exists (``path``'s own folder if it does)."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (same device and inode)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (after resolving links)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def check_writable_folder(folder: Path, what: Path) -> None:
    """Refuse when no file can be created where ``what`` would go: a probe file is
    created in the nearest existing folder and removed at once."""
    ancestor = _existing_ancestor(folder / "x")
    if not ancestor.is_dir():
        raise UserError(f"{what}: {ancestor} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pspsim-probe.", dir=ancestor)
    except OSError as exc:
        raise UserError(f"{what}: cannot write to {ancestor}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)


class Outputs:
    """The files one command writes, checked against its inputs."""

    def __init__(self, inputs: Iterable[Path | None] = ()) -> None:
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.targets: list[Path] = []

    def add_input(self, path: Path) -> None:
        self.inputs.append(Path(path))
        for target in self.targets:
            self._check_against_inputs(target)

    def _check_against_inputs(self, path: Path) -> None:
        for source in self.inputs:
            if same_file(path, source):
                raise UserError(f"{path}: output would overwrite the input {source}")

    def add(self, path: Path, suffixes: Iterable[str] | None = None) -> Path:
        """Check one output file and remember it; returns it."""
        path = Path(path)
        if str(path) in ("", "-") or path.name in ("", ".", ".."):
            raise UserError(f"{str(path)!r}: not a file name")
        if path.is_dir():
            raise UserError(f"{path}: is a directory, expected a file name")
        if path.exists() and not path.is_file():
            raise UserError(f"{path}: exists and is not a regular file")
        if suffixes is not None:
            allowed = sorted(set(suffixes))
            if path.suffix.lower() not in allowed:
                raise UserError(f"{path}: unknown file type {path.suffix or '(none)'!r}; "
                                f"use one of {', '.join(allowed)}")
        for other in self.targets:
            if other.absolute() == path.absolute() or same_file(other, path):
                raise UserError(f"{path}: the same output is given twice")
        self._check_against_inputs(path)
        check_writable_folder(path.parent, path)
        self.targets.append(path)
        return path

    def commit(self, writers: dict[Path, Writer]) -> None:
        """Run every writer on a temporary file and move all of them into place."""
        created: list[Path] = []
        staged: list[tuple[Path, Path]] = []
        try:
            for target, write in writers.items():
                target = Path(target)
                created += _make_folders(target.parent)
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
                os.close(fd)
                staged.append((Path(tmp), target))
                write(Path(tmp))
            umask = os.umask(0)
            os.umask(umask)
            for tmp, target in staged:
                os.chmod(tmp, 0o666 & ~umask)
                os.replace(tmp, target)
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            for folder in reversed(created):
                shutil.rmtree(folder, ignore_errors=True)
            raise


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, outermost first."""
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe == probe.parent:
            break
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot create folder: {exc.strerror}") from None
    return list(reversed(missing))[:1]  # removing the outermost removes the rest


def figure_suffixes() -> list[str]:
    """File types matplotlib can write (``.png``, ``.pdf``, ``.svg``, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return [f".{ext}" for ext in FigureCanvasBase.get_supported_filetypes()]
