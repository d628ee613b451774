"""Checkpoints and weights: unreadable files, full disks (rethink.results.artifacts, train.callbacks)."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch._dynamo  # noqa: F401  (the first optimizer imports it: pay that at collection, not in a test)

from rethink.files import DiskFullError
from rethink.results import artifacts
from rethink.results.artifacts import CorruptFileError, load_weights, save_torch, usable_weights
from rethink.train.callbacks import Checkpoint


def _truncated(path: Path) -> Path:
    torch.save({"w": torch.ones(64)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("content, reason", [
    (b"", "0 bytes; EOFError)"),
    (b"garbage" * 10, "70 bytes; UnpicklingError: Weights only load failed)"),
    (None, "bytes; RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory)"),
], ids=["empty", "garbage", "truncated"])
def test_unreadable_weights_name_the_file_and_never_advise_weights_only_false(tmp_path, content, reason):
    path = tmp_path / "weights.pt"
    _truncated(path) if content is None else path.write_bytes(content)
    with pytest.raises(CorruptFileError) as e:
        load_weights(path, what="final weights")
    msg = str(e.value)
    assert msg.startswith(f"final weights {path} is corrupt (") and reason in msg
    assert msg.endswith("): delete it and run again to recompute it")
    assert "weights_only" not in msg and "\n" not in msg


def test_missing_weights_are_not_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "nope.pt")


def test_corrupt_final_weights_count_as_missing(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    assert not usable_weights(path)
    torch.save({"w": torch.ones(2)}, path)
    assert usable_weights(path)
    path.write_bytes(b"")
    assert not usable_weights(path, what="zoo weights")
    assert not path.exists() and (tmp_path / "weights.pt.corrupt").exists()
    assert capsys.readouterr().err == (f"warning: zoo weights {path} is corrupt (0 bytes; EOFError): moved it "
                                       f"to weights.pt.corrupt; retraining it\n")


def test_corrupt_checkpoint_is_moved_aside_and_the_cell_restarts(tmp_path, capsys):
    ckpt = Checkpoint(tmp_path)
    _truncated(tmp_path / "checkpoint.pt")
    t = SimpleNamespace(device="cpu", is_main=True, verbose=True)
    assert ckpt._resume_state(t) is None
    assert not (tmp_path / "checkpoint.pt").exists() and (tmp_path / "checkpoint.pt.corrupt").exists()
    err = capsys.readouterr().err
    assert err.startswith(f"warning: checkpoint {tmp_path / 'checkpoint.pt'} is corrupt (")
    assert err.endswith("): moved it to checkpoint.pt.corrupt; training this cell from scratch\n")


def test_training_resumes_from_scratch_past_a_zero_byte_checkpoint(tmp_path, capsys, one_thread):
    from train_script import tiny_data, tiny_model
    from rethink.data.loader import GPULoader
    from rethink.train.loop import Recipe, Trainer

    (tmp_path / "checkpoint.pt").write_bytes(b"")  # what a kill during torch.save could leave
    x, y = tiny_data(32)
    loader = GPULoader(x, y, 16, device="cpu", shuffle=True, seed=0)
    history = Trainer(tiny_model(), loader, loader.eval_loader(), Recipe(epochs=1, lr=0.1, seed=0),
                      device="cpu", callbacks=[Checkpoint(tmp_path)], verbose=False).fit()
    assert len(history) == 1 and (tmp_path / "weights.pt").exists()
    assert "training this cell from scratch" in capsys.readouterr().err
    assert load_weights(tmp_path / "checkpoint.pt")["epoch"] == 0  # a fresh, good checkpoint


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 512 vs 416"),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=["torch-writer", "enospc"])
def test_disk_full_at_checkpoint_save_names_the_folder(tmp_path, monkeypatch, failure):
    def full(obj, f):
        Path(f).write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(DiskFullError) as e:
        save_torch({"w": 1}, tmp_path / "checkpoint.pt")
    assert str(e.value) == (f"disk full: could not write checkpoint {tmp_path / 'checkpoint.pt'}; the disk "
                            f"holding {tmp_path} is full (0 B free): free space there, or set RETHINK_CACHE "
                            f"to a folder on a disk with room")
    assert list(tmp_path.iterdir()) == []  # no temp file left to keep the disk full


def test_other_save_failures_are_not_called_disk_full(tmp_path, monkeypatch):
    def broken(obj, f):
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="something else"):
        save_torch({"w": 1}, tmp_path / "checkpoint.pt")


def test_resume_files_are_the_checkpoints_only():
    assert artifacts.RESUME_FILES == ("checkpoint.pt", "checkpoint.pt.corrupt")
    assert artifacts.WEIGHTS_FILE not in artifacts.RESUME_FILES
