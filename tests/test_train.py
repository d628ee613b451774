import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rethink.train.loop import evaluate, lr_factor

SCRIPT = Path(__file__).with_name("train_script.py")
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "lib"),
       "OMP_NUM_THREADS": "1"}


def run(*args, env=ENV, check=True):
    return subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300, check=check)


def weights(d: Path) -> dict:
    return torch.load(d / "weights.pt", weights_only=True)


def test_cosine_schedule_matches_formula():
    total, warm = 100, 10
    for step in range(total):
        expected = (step + 1) / warm if step < warm else \
            0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        assert lr_factor("cosine", step, total, warm) == pytest.approx(expected)


def test_onecycle_is_a_triangle():
    f = [lr_factor("onecycle", s, 10, 4) for s in range(10)]
    assert f[3] == pytest.approx(1.0) and f[0] == pytest.approx(0.25)
    assert f == sorted(f[:4]) + sorted(f[4:], reverse=True)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_factor("linear", 0, 10, 1)


def test_evaluate_matches_a_manual_count():
    torch.manual_seed(0)
    logits = torch.randn(50, 7)
    y = torch.randint(0, 7, (50,))

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    loader = [(logits[:20], y[:20]), (logits[20:], y[20:])]
    ev = evaluate(Identity(), loader, torch.device("cpu"), topk=(1, 3))
    top3 = sum(int(y[i] in logits[i].topk(3).indices) for i in range(50)) / 50
    assert ev["top1"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert ev["top3"] == pytest.approx(top3)
    assert ev["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


@pytest.mark.parametrize("extra", [[], ["--ema", "0.9"]], ids=["plain", "ema"])
def test_resume_after_kill_9_matches_uninterrupted_run(tmp_path, extra):
    full, killed = tmp_path / "full", tmp_path / "killed"
    run(SCRIPT, full, *extra)
    # 6 steps per epoch: step 15 is in the middle of epoch 3 (after two checkpoints).
    r = run(SCRIPT, killed, "--kill-at-step", 15, *extra, check=False)
    assert r.returncode == -9, r.stderr
    assert (killed / "checkpoint.pt").exists() and not (killed / "weights.pt").exists()
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1  # epochs 0 and 1 were saved before the kill
    assert (state["ema"] is not None) == bool(extra)
    run(SCRIPT, killed, *extra)
    a, b = weights(full), weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    h_full = json.loads((full / "history.json").read_text())
    h_killed = json.loads((killed / "history.json").read_text())
    assert h_full[-1]["val_top1"] == h_killed[-1]["val_top1"]
    assert ("ema_val_top1" in h_full[-1]) == bool(extra)


def test_ddp_on_gloo_with_two_processes_matches_single_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run(SCRIPT, single, "--plain", "--epochs", 2)
    env = {**ENV, "MASTER_ADDR": "127.0.0.1"}
    # --standalone: the rendezvous binds a free port (port 0), so parallel CI jobs never collide
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(SCRIPT), str(ddp), "--plain", "--epochs", "2"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = weights(single), weights(ddp)
    for k in a:
        # gradients are averaged over ranks instead of over one batch: equal up to float rounding
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_sync_bn_is_selectable_and_refused_on_cpu_with_a_clear_message(tmp_path):
    """SyncBN converts every BatchNorm; torch runs SyncBatchNorm on GPUs only."""
    import torch.distributed as dist
    from rethink.train.distributed import Distributed

    def model():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model())
    assert isinstance(converted[1], torch.nn.SyncBatchNorm)
    # a file store: no port to collide with another job
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    d = Distributed(rank=0, world_size=1, local_rank=0, backend="gloo", sync_bn=True)
    try:
        with pytest.raises(ValueError, match="Drop --sync-bn"):
            d.wrap(model())
        d.sync_bn = False
        assert isinstance(d.wrap(model()), torch.nn.parallel.DistributedDataParallel)
    finally:
        d.close()
