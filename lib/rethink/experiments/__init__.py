"""The chapters' experiments, one module each, all implementing ``protocol`` (registered here).

    from rethink import experiments
    module = experiments.get("noisy_student")        # or experiments.for_stem("03_noisy_student")
    net = experiments.load_network("zoo", config)    # an upstream network, eval mode, with .info
"""
from __future__ import annotations

import importlib
import sys

# name -> module path; the order is the book's (upstream chapters first)
REGISTRY = {
    "zoo": "rethink.experiments.zoo",
    "detection": "rethink.experiments.detection",
    "noisy_student": "rethink.experiments.noisy_student",
    "transfer": "rethink.experiments.transfer",
    "robustness": "rethink.experiments.robustness",
    "zoph": "rethink.experiments.zoph",
}


def get(name: str):
    if name not in REGISTRY:
        raise KeyError(f"unknown experiment {name!r}; registered: {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def all_modules() -> list:
    return [get(n) for n in REGISTRY]


def for_stem(stem: str):
    """The experiment module a notebook narrates (None for pages without one, e.g. the verdicts)."""
    for name in REGISTRY:
        if get(name).STEM == stem:
            return get(name)
    return None


def load_network(experiment: str, config: dict, *, data_root=None, store=None, profile: str = "unknown"):
    """The trained network of an upstream cell, in eval mode, with ``.info`` (a
    ``protocol.NetworkInfo``: dataset, mean, std, classes, image size) attached.

    Weights come from the user cache; if absent the cell is trained (and stored, if the store
    has no record), and a retrained network is compared with its stored record: the
    difference is written to the store (experiment ``retrains``) and shown by the chapters.
    """
    from ..results.artifacts import load_weights, usable_weights
    from ..results.store import ResultsStore

    module = get(experiment)
    store = store or ResultsStore()
    weights = store.artifact_dir(module.NAME, config) / "weights.pt"
    what = f"{module.NAME} weights"
    if not usable_weights(weights, what=what):   # missing, or corrupt (moved aside)
        stored = store.get(module.NAME, config)
        if stored is None:
            store.run(module.NAME, config, lambda c, d: module.train(c, d, data_root=data_root, store=store,
                                                                        profile=profile),
                      profile=profile, seeds=[config.get("seed", 0)])
        else:
            print(f"weights of {module.describe(config)} are not in the cache: retraining "
                  "(the results store keeps metrics, not weights)", flush=True)   # news, not an error: stdout
            result = module.train(config, store.artifact_dir(module.NAME, config), data_root=data_root,
                                  store=store, profile=profile)
            record_retrain(store, module.NAME, config, stored, result, profile)
    net = module.network(config)
    net.load_state_dict(load_weights(weights, what=what))
    net.info = module.network_info(config)
    return net.eval()


def record_retrain(store, experiment: str, config: dict, stored: dict, result: dict, profile: str) -> dict:
    """The stored and the retrained network's headline metric, side by side (experiment ``retrains``)."""
    import time

    from ..results.store import config_key, device_description, provenance

    metric = next((k for k in ("top1", "test_score") if k in result and k in stored["result"]), None)
    row = {"experiment": experiment, "key": config_key(config), "metric": metric,
           "stored": stored["result"].get(metric) if metric else None,
           "retrained": result.get(metric) if metric else None,
           "stored_device": stored.get("provenance", {}).get("device"),
           "stored_commit": stored.get("provenance", {}).get("commit")}
    if metric:
        row["difference"] = row["retrained"] - row["stored"]
    now = time.time()
    return store.put("retrains", {"experiment": experiment, "key": config_key(config),
                                  "device": device_description(), "finished": now}, row, provenance(profile, [config.get("seed", 0)], 0.0, now))
