"""The airbench94 training recipe as callbacks of the book's `Trainer`.

Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498 (2024).
The recipe's pieces, written against `rethink.train.loop.Trainer` without changing it:

* `AirbenchOptimizer`: Nesterov SGD with two parameter groups -- BatchNorm biases at 64x
  the learning rate (same decay per step) -- and the paper's triangular schedule
  (0.2 -> 1 at 23% of the steps -> 0.07). The paper states lr, momentum and weight decay
  in a "decoupled" form per 1024 examples on a summed loss; `SpeedrunRecipe.sgd()` converts
  them to torch-SGD values for the mean loss the Trainer uses.
* `StepBudget`: a loader wrapper for a fractional number of epochs (9.9 in the paper):
  the last epoch stops early.
* `AlternatingFlip` + `alternating_flip_base`: the paper's derandomised flip -- each image is
  flipped at random once, then every odd epoch flips all of them.
* `WhitenBiasFreeze`: the whitening conv's bias trains for the first 3 epochs only.
* `Lookahead`: from epoch 3, every 5 steps the weights (and BN statistics) move to an
  exponential average whose decay grows as 0.95^5 * (step / total)^3; at the end of each
  epoch the weights are reset to the average.
* `TTAEval`: evaluate with test-time augmentation after each epoch, outside the timed part.

The pure functions (`triangle`, `speedrun_param_groups`, `LookaheadState`, ...) are shared
with the plain-PyTorch reference loop of `benchmarks/cifar10_time_to_94.py`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .callbacks import Callback
from .loop import Recipe, evaluate

__all__ = ["SpeedrunRecipe", "triangle", "speedrun_param_groups", "make_speedrun_optimizer",
           "set_speedrun_lr", "LookaheadState", "alternating_flip_base", "StepBudget",
           "AirbenchOptimizer", "AlternatingFlip", "WhitenBiasFreeze", "Lookahead", "TTAEval",
           "speedrun_callbacks"]


@dataclass
class SpeedrunRecipe:
    """airbench94's hyperparameters (paper's values as defaults)."""
    epochs: float = 9.9
    batch_size: int = 1024
    lr: float = 11.5                # per 1024 examples, decoupled from momentum (summed loss)
    momentum: float = 0.85
    weight_decay: float = 0.0153    # per 1024 examples, decoupled from lr
    bias_scaler: float = 64.0       # lr multiplier of BatchNorm biases (not of their decay)
    label_smoothing: float = 0.2
    schedule_start: float = 0.2     # triangle: lr factor at step 0
    schedule_peak: float = 0.23     # fraction of steps at which the factor is 1
    schedule_end: float = 0.07      # factor at the last step
    whiten_bias_epochs: int = 3
    lookahead_start_epoch: int = 3
    lookahead_every: int = 5
    lookahead_decay_base: float = 0.95
    lookahead_decay_pow: float = 3.0
    translate: int = 2              # random reflect-padded translation, pixels
    alternating_flip: bool = True
    tta_level: int = 2
    whiten_eps: float = 5e-4
    whiten_images: int = 5000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def sgd(self) -> dict:
        """torch-SGD values for the *mean* loss: lr, weight_decay of the ordinary params and of
        the BN biases.

        The paper's steps are `lr / (1024 * (1 + 1/(1-momentum)))` per summed-loss gradient,
        i.e. `lr * B / 1024 / (1 + 1/(1-momentum))` for the mean loss of a batch of B, and
        decay every parameter by `weight_decay * B / 1024 / (1 + 1/(1-momentum))` per step (at
        peak lr). torch SGD decays by lr * weight_decay, hence `weight_decay / lr` (per
        group). With the defaults: lr 1.5, weight_decay 1.33e-3, bias lr 96.
        """
        scale = self.batch_size / 1024 / (1 + 1 / (1 - self.momentum))
        lr = self.lr * scale
        decay_per_step = self.weight_decay * scale
        bias_lr = lr * self.bias_scaler
        return {"lr": lr, "weight_decay": decay_per_step / lr,
                "bias_lr": bias_lr, "bias_weight_decay": decay_per_step / bias_lr}

    def total_steps(self, steps_per_epoch: int) -> int:
        return math.ceil(steps_per_epoch * self.epochs)

    def trainer_recipe(self) -> Recipe:
        """The `Recipe` handed to `Trainer` (whole epochs; lr/schedule set by `AirbenchOptimizer`)."""
        s = self.sgd()
        return Recipe(epochs=math.ceil(self.epochs), lr=s["lr"], momentum=self.momentum, nesterov=True,
                      weight_decay=s["weight_decay"], schedule="constant", warmup_epochs=0.0,
                      label_smoothing=self.label_smoothing, seed=self.seed)


def triangle(step: int, total: int, start: float = 0.2, peak: float = 0.23, end: float = 0.07) -> float:
    """Piecewise-linear lr factor: `start` at step 0, 1 at step int(peak*total), `end` at `total`."""
    p = int(peak * total)
    if step < p:
        return start + (1 - start) * step / p
    return 1 + (end - 1) * min(step - p, total - p) / max(total - p, 1)


def speedrun_param_groups(model: nn.Module, recipe: SpeedrunRecipe) -> list[dict]:
    """Two SGD groups: BatchNorm biases (lr x bias_scaler) and every other trainable parameter.

    Each group carries `base_lr`, the peak lr the schedule multiplies.
    """
    s = recipe.sgd()
    norm_bias_ids = {id(m.bias) for m in model.modules()
                     if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    biases = [p for p in model.parameters() if id(p) in norm_bias_ids and p.requires_grad]
    other = [p for p in model.parameters() if id(p) not in norm_bias_ids and p.requires_grad]
    return [{"params": biases, "lr": s["bias_lr"], "base_lr": s["bias_lr"],
             "weight_decay": s["bias_weight_decay"]},
            {"params": other, "lr": s["lr"], "base_lr": s["lr"], "weight_decay": s["weight_decay"]}]


def make_speedrun_optimizer(model: nn.Module, recipe: SpeedrunRecipe, device: torch.device
                            ) -> torch.optim.SGD:
    impl = {"fused": True} if torch.device(device).type == "cuda" else {"foreach": True}
    return torch.optim.SGD(speedrun_param_groups(model, recipe), momentum=recipe.momentum,
                           nesterov=True, **impl)


def set_speedrun_lr(optimizer: torch.optim.Optimizer, recipe: SpeedrunRecipe, step: int, total: int) -> None:
    f = triangle(step, total, recipe.schedule_start, recipe.schedule_peak, recipe.schedule_end)
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * f


class LookaheadState:
    """Exponential average of a model's floating-point state (weights and BN statistics).

    `update(model, decay)`: average <- decay * average + (1 - decay) * model, then
    model <- average (the Lookahead optimizer's pull-back). decay=1 just resets the model.
    """

    def __init__(self, model: nn.Module):
        self.tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.average = [t.detach().clone() for t in self.tensors]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        if decay != 1.0:
            torch._foreach_lerp_(self.average, self.tensors, 1.0 - decay)
        torch._foreach_copy_(self.tensors, self.average)


def lookahead_decay(recipe: SpeedrunRecipe, step: int, total: int) -> float:
    base = recipe.lookahead_decay_base ** recipe.lookahead_every
    return base * (step / total) ** recipe.lookahead_decay_pow


def alternating_flip_base(images: Tensor, seed: int) -> Tensor:
    """Flip each image left-right with probability 1/2 (seeded, drawn on the CPU); the base
    set of the alternating flip. Returns a new tensor on `images.device`."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    flip = (torch.rand(images.shape[0], generator=g) < 0.5).to(images.device)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


class StepBudget:
    """Loader wrapper that stops after `ceil(epochs * len(loader))` batches in all.

    `len()` stays the full epoch length; `steps_in_epoch(k)` is what epoch k yields, and
    `num_epochs` the number of (possibly partial) epochs.
    """

    def __init__(self, loader, epochs: float):
        self.loader = loader
        self.steps_per_epoch = len(loader)
        self.total_steps = math.ceil(self.steps_per_epoch * epochs)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __getattr__(self, name):  # device, batch_size, ... of the wrapped loader
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def steps_in_epoch(self, epoch: int) -> int:
        return max(0, min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.loader.set_epoch(epoch)

    def __iter__(self):
        n = self.steps_in_epoch(self.epoch)
        for i, batch in enumerate(self.loader):
            if i >= n:
                break
            yield batch
        self.epoch += 1


def _total_steps(t) -> int:
    loader = t.train_loader
    return loader.total_steps if isinstance(loader, StepBudget) else t.total_steps


def _steps_in_epoch(t, epoch: int) -> int:
    loader = t.train_loader
    return loader.steps_in_epoch(epoch) if isinstance(loader, StepBudget) else len(loader)


class AirbenchOptimizer(Callback):
    """Replace the Trainer's optimizer by the two-group SGD; set the triangle lr every step.

    The Trainer sets every group's lr from `Recipe.schedule` before the forward pass; this
    callback overrides it in `after_loss`, the last event before `optimizer.step()`.
    """
    order = -10  # before Checkpoint restores optimizer state

    def __init__(self, recipe: SpeedrunRecipe):
        self.recipe = recipe

    def before_fit(self, t):
        t.optimizer = make_speedrun_optimizer(t.raw_model, self.recipe, t.device)
        self.total = _total_steps(t)

    def after_loss(self, t):
        set_speedrun_lr(t.optimizer, self.recipe, t.step, self.total)


class AlternatingFlip(Callback):
    """Flip every batch left-right in odd epochs (pair with `alternating_flip_base` data)."""

    def before_batch(self, t):
        if t.epoch % 2 == 1:
            x, y = t.batch
            t.batch = (x.flip(-1), y)


class WhitenBiasFreeze(Callback):
    """Train `param` (the whitening bias) for the first `epochs` epochs, then freeze it."""

    def __init__(self, param: nn.Parameter, epochs: int = 3):
        self.param, self.epochs = param, epochs

    def before_epoch(self, t):
        self.param.requires_grad_(t.epoch < self.epochs)


class Lookahead(Callback):
    """The paper's Lookahead/EMA scheme (see module docstring); runs inside the timed steps."""
    order = 5

    def __init__(self, recipe: SpeedrunRecipe):
        self.recipe = recipe
        self.state = None

    def before_fit(self, t):
        self.total = _total_steps(t)
        self.state = None

    def after_step(self, t):
        r = self.recipe
        if t.epoch >= r.lookahead_start_epoch and t.step % r.lookahead_every == 0:
            if self.state is None:
                self.state = LookaheadState(t.raw_model)
            else:
                self.state.update(lookahead_decay(r, t.step, self.total))
        # last step of the epoch: reset the weights to the average before they are evaluated
        if self.state is not None and t.step == t.epoch * len(t.train_loader) + _steps_in_epoch(t, t.epoch):
            self.state.update(1.0)


class TTAEval(Callback):
    """After each epoch, evaluate `TTA(model, level)` on `loader` (untimed by the Trainer) and
    add `val_top1`, `val_loss` and `eval_s` (synchronised wall-clock) to the epoch's record."""
    order = 50

    def __init__(self, loader, level: int = 2):
        self.loader, self.level = loader, level

    def after_epoch(self, t):
        from rethink.models.airbench import TTA

        if t.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ev = evaluate(TTA(t.raw_model, self.level), self.loader, t.device, topk=(1,))
        t.history[-1].update(val_top1=ev["top1"], val_loss=ev["loss"],
                             eval_s=time.perf_counter() - t0)


def speedrun_callbacks(model: nn.Module, recipe: SpeedrunRecipe, eval_loader=None) -> list[Callback]:
    """All callbacks of the recipe for an `AirbenchNet` (plus `TTAEval` if `eval_loader`)."""
    cbs: list[Callback] = [AirbenchOptimizer(recipe), WhitenBiasFreeze(model.whiten.bias, recipe.whiten_bias_epochs),
                           Lookahead(recipe)]
    if recipe.alternating_flip:
        cbs.append(AlternatingFlip())
    if eval_loader is not None:
        cbs.append(TTAEval(eval_loader, recipe.tta_level))
    return cbs
