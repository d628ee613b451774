"""The scale floors a profile's parameters decide (rethink.design), read off the plan's cells."""
from __future__ import annotations

import functools

from rethink import design
from rethink import pieces as P


@functools.lru_cache(maxsize=None)
def _nodes(profile: str, *overrides: str, chapters: tuple[str, ...] | None = None):
    return P.book_nodes(profile, overrides=list(overrides), chapters=list(chapters) if chapters else None)


def _below(checks) -> dict[str, set[str]]:
    return {cid: {c["id"] for c in v["below"]} for cid, v in checks.items() if v["below"]}


def test_the_full_profile_clears_every_floor_its_parameters_decide_but_two_it_names():
    checks = design.design_checks(_nodes("full"))
    # the two the profile's comments leave below on purpose (the paper profile's)
    assert _below(checks) == {"he2019-scratch-overfits-below-10k": {"smallest_scenes", "schedules"},
                              "xie2020-gain-every-size": {"student_sizes"}}
    floors = design.planned_floors(_nodes("full"))
    assert floors["he2019-scratch-catches-up"]["seeds"] == 3            # at 1x and 4x, both arms
    assert floors["xie2020-imagenet-p"]["p_sequences"] == 1000
    assert floors["kornblith2019-finetune-correlate"]["finetune_steps"] >= 1000
    assert floors["kornblith2019-fixed-features-correlate"]["source_archs"] == 8
    # what only a run can decide is listed, not assumed
    measured = {m["id"] for v in checks.values() for m in v["measured"]}
    assert {"teacher_top1", "pretrained_plateau", "scratch_plateau"} <= measured


def test_fewer_seeds_or_fewer_sources_fall_below_the_floor():
    cut = design.design_checks(_nodes("full", "02_detection.seeds=[0, 1]", "03_noisy_student.seeds=[0, 1]",
                                      "04_transfer.source_archs=[resnet18, resnet34, resnet50]",
                                      chapters=("02_detection", "03_noisy_student", "04_transfer")))
    below = _below(cut)
    assert "seeds" in below["he2019-scratch-catches-up"] and "seeds" in below["xie2020-top1-gain"]
    assert "source_archs" in below["kornblith2019-fixed-features-correlate"]
    lines = design.design_lines(_nodes("full", "02_detection.seeds=[0, 1]", chapters=("02_detection",)))
    assert any("he2019-scratch-catches-up" in ln and "seeds at every compared point 2 (needs >= 3)" in ln
               for ln in lines)


def test_a_scratch_arm_at_one_schedule_cannot_show_a_catch_up_or_a_fall():
    floors = design.planned_floors(_nodes("full", "02_detection.schedules_per_init={scratch: [4]}",
                                          chapters=("02_detection",)))
    assert floors["he2019-scratch-catches-up"]["seeds"] == 0           # no scratch run at 1x
    assert floors["he2019-scratch-overfits-below-10k"]["schedules"] == 1
