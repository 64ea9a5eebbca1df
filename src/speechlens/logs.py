"""Send a rule's logging and any uncaught error to its log file."""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def log_to(path: str | os.PathLike, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Route the ``speechlens`` logger to ``path`` for the duration of the block.

    An exception escaping the block is written to the log with its traceback, then re-raised
    (so the workflow engine still reports the failure on the console).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("speechlens")
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield logger
    except BaseException:
        logger.error("failed:\n%s", traceback.format_exc())
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
