"""aelab.files.write_atomic: a reader sees the old file or the new one, never half of one, and a failed write
leaves no temporary file behind (run records and dataset caches both write through it)."""

from __future__ import annotations

import json

import pytest
import torch

from aelab.data.base import atomic_torch_save
from aelab.files import write_json_atomic


def test_a_failed_json_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "status.json"
    write_json_atomic(path, {"state": "running"})
    with pytest.raises(TypeError):
        write_json_atomic(path, {("not", "a", "string"): 1})  # json.dump raises half-way through
    assert json.loads(path.read_text()) == {"state": "running"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_a_failed_torch_save_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "cache" / "train.pt"
    with pytest.raises(Exception):
        atomic_torch_save({"images": torch.zeros(2), "f": lambda: 0}, path)  # a lambda cannot be pickled
    assert list(path.parent.iterdir()) == []
    atomic_torch_save({"images": torch.arange(3)}, path)
    assert torch.equal(torch.load(path)["images"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["train.pt"] and oct(path.stat().st_mode & 0o777) == "0o644"
