"""Verdict rules of the Noisy Student chapter on constructed records."""
from rethink.experiments.noisy_student import Cell
from rethink.selftrain import report


def _pairs(top1: dict[str, dict[int, float]], arch=None):
    arch = arch or {}
    return [(Cell(role, seed, {"arch": arch.get(role, "resnet18_w64" if role != "teacher" else "resnet18_w32")}),
             {"result": {"top1": v / 100}}) for role, by_seed in top1.items() for seed, v in by_seed.items()]


def _verdict(pairs, claim):
    return next(v for v in report.verdicts(pairs) if v["claim_id"] == claim)["verdict"]


BASE = {"teacher": {0: 80.0, 1: 81.0, 2: 80.5},
        "supervised_student_arch": {0: 81.0, 1: 81.5, 2: 81.2}}


def test_consistent_gains_are_reproduced():
    pairs = _pairs({**BASE, "student_1": {0: 83.0, 1: 83.8, 2: 83.1},
                    "student_2": {0: 84.0, 1: 84.5, 2: 84.2}, "student_3": {0: 84.6, 1: 85.0, 2: 84.9},
                    "ablation:no_noise": {0: 80.2}, "ablation:equal_size_student": {0: 81.0}})
    assert _verdict(pairs, "xie2020-top1-gain") == "reproduced"
    assert _verdict(pairs, "xie2020-iteration-helps") == "reproduced"
    assert _verdict(pairs, "xie2020-noise-essential") == "reproduced"
    assert _verdict(pairs, "xie2020-gain-every-size") == "reproduced"


def test_gain_explained_by_size_is_only_partly():
    pairs = _pairs({**BASE, "student_1": {0: 81.0, 1: 81.6, 2: 81.1},
                    "student_3": {0: 81.1, 1: 81.4, 2: 81.2}})
    assert _verdict(pairs, "xie2020-top1-gain") == "partly"      # beats teacher, not its own size
    assert _verdict(pairs, "xie2020-iteration-helps") == "partly"  # +0.0 on average, not significant


def test_losses_are_not_reproduced():
    pairs = _pairs({**BASE, "student_1": {0: 79.0, 1: 80.0, 2: 79.5},
                    "student_3": {0: 78.0, 1: 79.0, 2: 78.5}, "ablation:no_noise": {0: 79.5}})
    assert _verdict(pairs, "xie2020-top1-gain") == "not reproduced"
    assert _verdict(pairs, "xie2020-iteration-helps") == "not reproduced"
    assert _verdict(pairs, "xie2020-noise-essential") == "not reproduced"


def test_noise_helps_but_quiet_student_also_gains_is_partly():
    pairs = _pairs({**BASE, "student_1": {0: 84.0, 1: 84.0, 2: 84.0}, "ablation:no_noise": {0: 82.0}})
    assert _verdict(pairs, "xie2020-noise-essential") == "partly"


def test_tables_pair_by_seed():
    pairs = _pairs({**BASE, "student_1": {0: 82.0, 1: 83.0}})
    table = report.chain_table(pairs).set_index("model")
    assert table.loc["student_1", "gain over teacher (pts)"] == "2.00 ± 0.00"
    assert report.paired_gain({0: 2.0, 1: 5.0, 3: 1.0}, {0: 1.0, 1: 1.0}) == [1.0, 4.0]
