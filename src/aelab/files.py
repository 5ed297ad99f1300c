"""Writing files so that a reader never sees half of one: the content goes to a temporary file beside the target,
which is then renamed over it (atomic on POSIX). Two processes writing the same file at once each rename a complete
one; a write that fails leaves the old file, if any, and no temporary file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def write_atomic(path: Path, write: Callable[[IO], None], binary: bool = True) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; runs and caches are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    def dump(f: IO) -> None:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")

    write_atomic(path, dump, binary=False)
