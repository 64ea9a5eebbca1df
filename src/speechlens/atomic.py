"""Write outputs under a temporary name and rename them into place when complete.

A crash or a kill mid-write leaves only a hidden ``.tmp-*`` sibling, never a file or
folder that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path of ``target``; rename it onto ``target`` on success.

    The temporary lives in the same folder, so the final ``os.replace`` is atomic on
    POSIX. On error the temporary is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    work = tmp / target.name
    if is_dir:
        work.mkdir()
    try:
        yield work
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_figure(fig, *paths: str | os.PathLike, dpi: int = 200) -> None:
    """Save a matplotlib Figure to each path atomically (format from the suffix)."""
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip("."), bbox_inches="tight")
