"""Callbacks: behaviour added to the training loop by composition (after fastai).

Events, in order: before_fit, before_epoch, before_batch, after_loss, after_step,
after_epoch, after_fit. Each callback sees the Trainer as `t` and may read or set
its state (t.epoch, t.history, t.model, ...).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..files import remove_stale_temps
from ..results.artifacts import (CHECKPOINT_FILE, WEIGHTS_FILE, CorruptFileError, load_weights,
                                 move_aside, save_torch)


class Callback:
    order = 0

    def __call__(self, event: str, t) -> None:
        fn = getattr(self, event, None)
        if fn is not None:
            fn(t)


class ProgressBar(Callback):
    """tqdm over batches, one bar per epoch; quiet unless a terminal or forced."""
    order = 90

    def __init__(self, enabled: bool | None = None, desc: str = ""):
        self.enabled = enabled
        self.desc = desc
        self.bar = None

    def before_epoch(self, t):
        enabled = self.enabled if self.enabled is not None else sys.stderr.isatty()
        if enabled and t.is_main:
            from tqdm import tqdm
            self.bar = tqdm(total=len(t.train_loader), leave=False,
                            desc=f"{self.desc} epoch {t.epoch + 1}/{t.epochs}")

    def after_step(self, t):
        if self.bar is not None:
            self.bar.update(1)
            if t.step % 20 == 0:
                self.bar.set_postfix(loss=f"{t.last_loss:.3f}")

    def after_epoch(self, t):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if t.is_main and t.verbose:
            h = t.history[-1]
            val = f"  val top-1 {h['val_top1']:.2%}" if "val_top1" in h else ""
            print(f"{self.desc} epoch {h['epoch'] + 1}/{t.epochs}  loss {h['train_loss']:.3f}{val}  "
                  f"{h['epoch_time_s']:.1f}s", flush=True)


class EMA(Callback):
    """Exponential moving average of the weights (torch.optim.swa_utils), evaluated too."""
    order = 10

    def __init__(self, decay: float = 0.999):
        self.decay = decay

    def before_fit(self, t):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        t.ema = AveragedModel(t.raw_model, multi_avg_fn=get_ema_multi_avg_fn(self.decay),
                              use_buffers=True)

    def after_step(self, t):
        t.ema.update_parameters(t.raw_model)


def atomic_torch_save(obj, path: Path, what: str = "checkpoint") -> None:
    """torch.save via a temp file renamed into place; a full disk raises DiskFullError."""
    save_torch(obj, path, what=what)


class Checkpoint(Callback):
    """Save everything needed to resume at the end of every epoch; resume in before_fit.

    The loop derives all randomness of epoch k from (seed, k), so restarting from the
    checkpoint of epoch k-1 reproduces an uninterrupted run. An unreadable checkpoint
    (truncated by a crash or a full disk) is moved aside and the cell starts from scratch.
    """
    order = 80  # after History has recorded the epoch

    def __init__(self, directory: str | os.PathLike, keep_final_weights: bool = True):
        self.path = Path(directory) / CHECKPOINT_FILE
        self.weights = Path(directory) / WEIGHTS_FILE
        self.keep_final_weights = keep_final_weights

    def _resume_state(self, t) -> dict | None:
        """The saved state, or None (no checkpoint, or an unreadable one, moved aside)."""
        remove_stale_temps(self.path.parent)
        if not self.path.exists():
            return None
        try:
            return load_weights(self.path, what="checkpoint", map_location=t.device)
        except CorruptFileError as e:
            try:
                aside = move_aside(self.path)
            except FileNotFoundError:  # another rank moved it first
                return None
            if t.is_main:
                print(f"warning: {e.problem}: moved it to {aside.name}; training this cell from "
                      f"scratch", file=sys.stderr, flush=True)
            return None

    def before_fit(self, t):
        state = self._resume_state(t)
        if state is None:
            return
        t.raw_model.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        if t.ema is not None and state.get("ema") is not None:
            t.ema.load_state_dict(state["ema"])
        t.history = state["history"]
        t.start_epoch = state["epoch"] + 1
        t.step = state["step"]
        if t.is_main and t.verbose:
            print(f"resuming from {self.path} after epoch {state['epoch'] + 1}", flush=True)

    def after_epoch(self, t):
        if not t.is_main:
            return
        atomic_torch_save({
            "model": t.raw_model.state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "ema": t.ema.state_dict() if t.ema is not None else None,
            "history": t.history,
            "epoch": t.epoch,
            "step": t.step,
        }, self.path)

    def after_fit(self, t):
        if t.is_main and self.keep_final_weights:
            final = t.ema.module if t.ema is not None else t.raw_model
            atomic_torch_save(final.state_dict(), self.weights, what="final weights")
