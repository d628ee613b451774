"""Detection self-training pieces: pseudo-box filtering on a constructed example, and the
normalised student loss against a hand computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rethink.selftrain.detection import SelfTrainingLoss, pseudo_box_set, pseudo_boxes


def _detections():
    return [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2], [3, 3, 9, 9]]),
         "scores": torch.tensor([0.9, 0.5, 0.49, 0.1]), "labels": torch.tensor([3, 1, 2, 0])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": np.array([[2, 2, 8, 8]], np.float32), "scores": np.array([0.7], np.float32),
         "labels": np.array([4])},  # numpy, as rethink.detection.evaluate.predict returns
    ]


def test_pseudo_boxes_keep_scores_at_or_above_threshold():
    out = pseudo_boxes(_detections())
    assert out[0]["boxes"].tolist() == [[0.0, 0, 10, 10], [5, 5, 20, 20]] and out[0]["labels"].tolist() == [3, 1]
    assert out[1]["boxes"].shape == (0, 4) and out[1]["labels"].shape == (0,)
    assert out[2]["labels"].tolist() == [4] and out[2]["boxes"].dtype == torch.float32
    assert all(t["labels"].dtype == torch.int64 for t in out) and "scores" not in out[0]
    strict = pseudo_boxes(_detections(), score_threshold=0.8, keep_scores=True)
    assert strict[0]["labels"].tolist() == [3] and strict[0]["scores"].tolist() == [pytest.approx(0.9)]
    assert strict[2]["labels"].tolist() == []
    everything = pseudo_boxes(_detections(), score_threshold=0.0)
    assert [len(t["labels"]) for t in everything] == [4, 0, 1]


def test_pseudo_box_set():
    images = np.zeros((3, 3, 32, 32), np.uint8)
    ds = pseudo_box_set(images, _detections(), ["a", "b", "c", "d", "e"])
    assert len(ds) == 3 and [len(b) for b in ds.boxes] == [2, 0, 1] and ds.meta["score_threshold"] == 0.5
    assert ds.labels[0].dtype == np.int64 and ds.boxes[0].dtype == np.float32


def test_normalized_loss_matches_hand_computation():
    loss = SelfTrainingLoss(alpha=2.0, momentum=0.5)
    human, pseudo = [2.0, 4.0, 1.0], [1.0, 1.0, 4.0]
    # by hand: averages (2, 1) -> (3, 1) -> (2, 2.5); ratios 2, 3, 0.8
    # L = (L_h + 2 r L_p) / 3 = (2 + 4) / 3, (4 + 6) / 3, (1 + 6.4) / 3
    expected = [2.0, 10 / 3, 7.4 / 3]
    ratios = [2.0, 3.0, 0.8]
    for lh, lp, e, r in zip(human, pseudo, expected, ratios):
        lp_t = torch.tensor(lp, requires_grad=True)
        out = loss(torch.tensor(lh), lp_t)
        assert float(out.detach()) == pytest.approx(e, rel=1e-6)
        assert float(loss.ratio) == pytest.approx(r, rel=1e-6)
        out.backward()
        assert float(lp_t.grad) == pytest.approx(2.0 * r / 3.0, rel=1e-6)  # the ratio carries no gradient
    assert loss.steps == 3


def test_loss_dicts_are_summed_and_state_round_trips():
    loss = SelfTrainingLoss(alpha=1.0, momentum=0.9)
    h = {"classification": torch.tensor(1.5), "bbox_regression": torch.tensor(0.5)}
    p = {"classification": torch.tensor(3.0), "bbox_regression": torch.tensor(1.0)}
    assert float(loss(h, p)) == pytest.approx((2.0 + 0.5 * 4.0) / 2)  # ratio 2 / 4 at the first step
    resumed = SelfTrainingLoss(alpha=1.0, momentum=0.9)
    resumed.load_state_dict(loss.state_dict())
    a = loss(torch.tensor(1.0), torch.tensor(2.0))
    b = resumed(torch.tensor(1.0), torch.tensor(2.0))
    assert float(a) == float(b)
    # averages 0.9 * 2 + 0.1 * 1 = 1.9 and 0.9 * 4 + 0.1 * 2 = 3.8
    assert float(a) == pytest.approx((1.0 + (1.9 / 3.8) * 2.0) / 2)


def test_sum_mode_is_the_plain_sum():
    assert float(SelfTrainingLoss(mode="sum")(torch.tensor(1.25), torch.tensor(2.0))) == pytest.approx(3.25)
    assert float(SelfTrainingLoss(alpha=0.5, mode="sum")(torch.tensor(1.0), torch.tensor(2.0))) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        SelfTrainingLoss(mode="mean")
