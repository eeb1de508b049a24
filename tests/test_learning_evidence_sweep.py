"""bench/learning_evidence sweep: results are cached per configuration under a key of its flags and probe settings;
an unchanged configuration is read back, an edited one is trained and probed afresh (training and probing replaced
by stand-ins here, so the test checks the bookkeeping in seconds)."""

import json
from dataclasses import replace

from bench.learning_evidence import presets, sweep

DEV = presets.PRESETS["dev"]


def _fake_backend(monkeypatch):
    """Stand-ins for training and probing that record what they were asked to do."""
    calls = {"trained": [], "probed": [], "random": 0}

    def train_runs(jobs, *, parallel, threads):
        for name, (cmd, run_dir) in jobs.items():
            run_dir.mkdir(parents=True, exist_ok=True)
            lr = float(cmd[cmd.index("--lr") + 1])
            (run_dir / "lr").write_text(str(lr))
            calls["trained"].append(name)
        return {name: {"command": " ".join(cmd), "seconds": 1.0, "returncode": 0} for name, (cmd, _) in jobs.items()}

    def probe_run(preset, run_dir, data, name, last_only=False):
        calls["probed"].append(name)
        lr = float((run_dir / "lr").read_text())  # the score depends on what was trained
        summary = {"miou_mean": 1000 * lr, "miou_std": 0.1, "runs": []}
        return [{"images_seen": 1, "epoch": 1, "linear": summary, "kmeans": {}}]

    def probe_random(preset, data):
        calls["random"] += 1
        return {"linear": {"miou_mean": 1.0, "miou_std": 0.5}}

    monkeypatch.setattr(sweep, "train_runs", train_runs)
    monkeypatch.setattr(sweep.probes, "probe_run", probe_run)
    monkeypatch.setattr(sweep.probes, "probe_random", probe_random)
    monkeypatch.setattr(sweep, "synthetic_probe_data", lambda **kwargs: None)
    monkeypatch.setattr(sweep, "machine", lambda: {})
    return calls


def test_an_edited_configuration_does_not_reuse_a_stale_result(monkeypatch, tmp_path):
    calls = _fake_backend(monkeypatch)
    configs = {"base": {}, "fast": {"lr": 0.008}}
    rows = sweep.run_sweep(configs, tmp_path, DEV)
    assert calls == {"trained": ["base", "fast"], "probed": ["base", "fast"], "random": 1}
    assert [r["linear"] for r in rows] == [2.0, 8.0] and rows[1]["flags"] == "--lr 0.008"

    rows = sweep.run_sweep(configs, tmp_path, DEV)  # unchanged: everything read back
    assert calls == {"trained": ["base", "fast"], "probed": ["base", "fast"], "random": 1}
    assert [r["linear"] for r in rows] == [2.0, 8.0]

    rows = sweep.run_sweep({"base": {}, "fast": {"lr": 0.004}}, tmp_path, DEV)  # "fast" edited
    assert calls["trained"][2:] == ["fast"] and calls["probed"][2:] == ["fast"]
    assert [r["linear"] for r in rows] == [2.0, 4.0]
    assert "| fast | `--lr 0.004` | 4.00 +- 0.10 | +3.00 |" in (tmp_path / "sweep.md").read_text()
    assert len(list((tmp_path / "fast").iterdir())) == 2  # the old run and result are kept under their own key

    rows = sweep.run_sweep(configs, tmp_path, replace(DEV, probe=replace(DEV.probe, n_train=10)))
    assert calls["probed"][3:] == ["base", "fast"] and calls["random"] == 2  # a new probe: measured again,
    assert len(calls["trained"]) == 3  # on the runs already trained
    assert json.loads((tmp_path / "sweep.json").read_text())["rows"][1]["linear"] == 8.0


def test_cache_keys_follow_flags_and_probe_settings(tmp_path):
    key = sweep.train_key(DEV)
    assert sweep.train_key(replace(DEV, train=DEV.train.with_flags())) == key  # stable
    assert sweep.train_key(replace(DEV, train=DEV.train.with_flags(lr=0.008))) != key
    assert sweep.train_key(replace(DEV, train=DEV.train.with_flags(clip_grad="3"))) != key
    assert sweep.train_key(replace(DEV, device="cuda")) != key
    assert sweep.train_key(replace(DEV, eval_split="val")) == key  # the probe's split: not the run's
    assert sweep.probe_key(replace(DEV, eval_split="val")) != sweep.probe_key(DEV)
    assert sweep.random_key(replace(DEV, train=DEV.train.with_flags(lr=0.008))) == sweep.random_key(DEV)
    assert sweep.random_key(replace(DEV, train=DEV.train.with_flags(seed=1))) != sweep.random_key(DEV)
    folder = tmp_path / "base" / key
    folder.mkdir(parents=True)
    assert sweep.cached(folder, DEV) is None
    sweep.result_path(folder, DEV).write_text(json.dumps({"key": ["another", sweep.probe_key(DEV)]}))
    assert sweep.cached(folder, DEV) is None  # a result copied from another configuration's folder
    sweep.write_json(sweep.result_path(folder, DEV), {"key": [key, sweep.probe_key(DEV)], "point": {}})
    assert sweep.cached(folder, DEV)["point"] == {} and len(list(folder.iterdir())) == 1  # no temporary file left
