"""Detection chapter: cell expansion, parameter errors, and the verdict rules on hand-made runs."""
from __future__ import annotations

import pytest

from rethink.experiments import detection as det

SOURCE = {"arch": "resnet10t", "variant": "baseline", "seed": 0}


def test_cells_cover_sizes_runs_schedules_and_extra_seeds_at_the_longest_schedule():
    params = {"train_sizes": [100, 300], "schedules": [1, 2], "seeds": [0], "main_seeds": [0, 1],
              "arch": "resnet10t", "norm_study": {"size": 300, "schedule": 2, "norms": ["bn", "gn"]}}
    cells = det.cell_configs(params, SOURCE)
    main = [c for c in cells if (c["init"], c["norm"]) in {("pretrained", "bn"), ("scratch", "bn")}]
    # 2 sizes x 2 runs x (1x: seed 0; 2x: seeds 0, 1)
    assert len(main) == 2 * 2 * 3
    assert {c["seed"] for c in main if c["schedule"] == 2} == {0, 1}
    assert {c["seed"] for c in main if c["schedule"] == 1} == {0}
    gn = [c for c in cells if c["norm"] == "gn"]
    assert len(gn) == 1 and gn[0]["init"] == "scratch" and gn[0]["train"]["size"] == 300
    assert all(c["version"] == det.VERSION and set(c["data"]) == {"tiny-imagenet"} for c in cells)
    assert all(c["source"] == SOURCE for c in cells if c["init"] == "pretrained")
    assert all(c["source"] is None for c in cells if c["init"] == "scratch")
    assert all(c["steps"] == c["schedule"] * det.DEFAULTS["base_steps"] for c in cells)
    # validation scenes are the same for every cell; the scratch-BN 2x cell at 300 appears once
    assert len({str(c["val"]) for c in cells}) == 1
    assert len({det.config_key(c) for c in cells}) == len(cells)


def test_an_arm_can_run_fewer_schedules_with_the_same_cells():
    base = {"train_sizes": [100], "schedules": [1, 2, 4], "seeds": [0, 1, 2], "main_seeds": [], "arch": "resnet10t"}
    every = det.cell_configs(base, SOURCE)
    cut = det.cell_configs({**base, "schedules_per_init": {"scratch": [1, 4]}}, SOURCE)
    sch = lambda cells, init: sorted({c["schedule"] for c in cells if c["init"] == init})  # noqa: E731
    assert sch(cut, "pretrained") == [1, 2, 4] and sch(cut, "scratch") == [1, 4]
    assert len(cut) == len(every) - 3
    assert {det.config_key(c) for c in cut} < {det.config_key(c) for c in every}   # same keys: records stay valid
    for bad in ({"scratch": [3]}, {"scratch": []}, {"imagenet": [1]}, [1, 4]):
        with pytest.raises(ValueError, match="schedules_per_init"):
            det.resolve_params({**base, "schedules_per_init": bad})


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="unknown detection parameter"):
        det.resolve_params({"epochs": 3})
    with pytest.raises(ValueError, match="init"):
        det.resolve_params({"runs": [["imagenet", "gn"]]})
    with pytest.raises(ValueError, match="norm"):
        det.resolve_params({"runs": [["scratch", "layernorm"]]})
    with pytest.raises(ValueError, match="architecture"):
        det.resolve_params({"arch": "yolo"})
    with pytest.raises(ValueError, match="zoo"):
        det.cell_configs({"arch": "resnet10t"}, None)


SHARED = __import__("pathlib").Path(__import__("os").environ.get("RETHINK_DATA", "/nonexistent"))


@pytest.mark.skipif(not (SHARED / "coco128.tar.gz").exists(), reason="needs coco128.tar.gz in $RETHINK_DATA")
def test_the_same_cell_trains_and_evaluates_on_coco_format_data(tmp_path, monkeypatch):
    """-p dataset=coco128: real COCO-format data through the same training and evaluation."""
    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "results"))
    params = {"dataset": "coco128", "image_size": 96, "train_sizes": [16], "val_size": 8, "arch": "resnet10t",
              "runs": [["scratch", "gn"]], "schedules": [1], "main_seeds": [], "base_steps": 2, "fpn_channels": 32,
              "batch_size": 8, "warmup_steps": 1, "evals_per_run": 1}
    cells = det.cell_configs(params, None)
    assert len(cells) == 1 and cells[0]["train"]["dataset"] == "coco128"
    train = det.load_data(cells[0]["train"], SHARED)
    val = det.load_data(cells[0]["val"], SHARED)
    assert len(train) == 16 and len(val) == 8 and train.num_classes == 80
    assert not set(train.image_ids) & set(val.image_ids)            # the last 8 images validate
    out = det.train_cell(cells[0], tmp_path / "artifacts", data_root=SHARED)
    assert set(out["final"]) >= {"AP", "AP50", "AP75"} and out["train_images"] == 16
