"""What every chapter page shows the same way: where its numbers came from, and the GPU notice."""
from __future__ import annotations


def profiles_of(records: list[dict]) -> str:
    return ", ".join(sorted({r["provenance"]["profile"] for r in records}))


def devices_of(records: list[dict]) -> str:
    return "; ".join(sorted({r["provenance"]["device"] for r in records}))


def provenance_note(records: list[dict], noun: str = "trained networks"):
    """A one-paragraph Markdown statement of where these numbers came from."""
    from IPython.display import Markdown

    commits = sorted({r["provenance"]["commit"][:8] for r in records})
    seeds = sorted({s for r in records for s in r["provenance"]["seeds"]})
    wall = sum(r["provenance"]["wall_time_s"] for r in records)
    return Markdown(
        f"**Provenance.** {len(records)} {noun}, profile **{profiles_of(records)}**, "
        f"device {devices_of(records)}, seeds {seeds}, commit(s) {', '.join(commits)}, "
        f"total wall time {wall / 60:.1f} min.")


def gpu_notice(stem: str, profile: str = "full"):
    """The one GPU notice of a chapter, computed from the profile and the plan's cost model:
    how many cells the ``full`` profile runs and the estimated minutes on the reference GPU."""
    from IPython.display import Markdown

    from .. import experiments
    from ..profiles import experiment_params

    module = experiments.for_stem(stem)
    params, _ = experiment_params(profile, stem)
    try:
        cells = module.cells(params, profile=profile)
        minutes = sum(module.cost(c.config) for c in cells) / 60
        what = (f"At the `{profile}` profile this chapter's experiment has **{len(cells)} cells**, estimated at "
                f"**{minutes:.0f} minutes** on the reference GPU (one H200) by the book's cost model")
    except Exception as e:  # noqa: BLE001  (a notice must never stop a page)
        what = f"At the `{profile}` profile this chapter runs on one GPU (its plan could not be computed here: {e})"
    return Markdown(
        "```{admonition} GPU chapter\n:class: warning\n" + what + ". `python -m rethink.book plan --profile "
        f"{profile}` lists its pieces (each at most a few minutes, self-contained) and which are done. The "
        "`smoke` and `small` profiles run on a CPU; the provenance line below says which profile produced "
        "the numbers on this page.\n```")


def retrains_note(experiment: str, configs=None, store=None):
    """The upstream networks this machine had to retrain (their weights are never stored), each
    beside the record it retrains: how close a retrained network comes to the stored one.
    ``configs``: restrict to these upstream configs (default: every retrain of ``experiment``)."""
    from IPython.display import Markdown

    from ..display import table
    from ..results.store import ResultsStore, config_key

    store = store or ResultsStore()
    keys = {config_key(c) for c in configs} if configs is not None else None
    rows = [r["result"] for r in store.records("retrains")
            if r["result"].get("experiment") == experiment and (keys is None or r["result"].get("key") in keys)]
    if not rows:
        return Markdown(f"No {experiment} network was retrained for this page (or none was recorded).")
    import pandas as pd

    df = pd.DataFrame([{"network": r["key"], "metric": r.get("metric"), "stored": r.get("stored"),
                        "retrained": r.get("retrained"), "difference": r.get("difference"),
                        "stored on": r.get("stored_device")} for r in rows])
    return table(df, digits={"stored": 4, "retrained": 4, "difference": 4},
                 caption=f"{experiment} networks retrained on this machine, against their stored records")
