from __future__ import annotations

import json

import pytest
import torch

from mesaopt import experiments
from mesaopt.errors import CheckpointError, ConfigError
from mesaopt.experiments.ebt import EBTSystem2Config, fit, make_models, make_task
from mesaopt.io import read_jsonl
from mesaopt.train.checkpoint import read_state

TINY = {"tasks": ["linear"], "d": 2, "n_context": 4, "ood_n_context": 6, "model": {"dim": 8, "heads": 2},
        "ebt": {"steps": 2, "rand_steps": 1}, "train": {"steps": 6, "batch_size": 8, "n_queries": 2,
                                                        "warmup_steps": 2, "ckpt_every": 3, "log_every": 1},
        "eval_batch_size": 8, "eval_queries": 2, "n_samples": 2, "analysis_batch_size": 8}


def _cfg(**kw) -> EBTSystem2Config:
    data = {**TINY, **kw}
    return EBTSystem2Config.model_validate(data)


def test_tasks_are_scaled_to_unit_variance():
    cfg = _cfg(d=6)
    g = torch.Generator().manual_seed(0)
    for name in ("linear", "relu2"):
        ys = make_task(name, cfg, 0.0).sample(4000, 4, g).ys
        assert 0.85 < float(ys.var()) < 1.15, name


def test_twin_models_share_backbone_initialisation():
    ebt, ff = make_models(_cfg(), seed=3)
    for (k, v), (k2, v2) in zip(ebt.backbone.state_dict().items(), ff.backbone.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_fit_is_deterministic_and_resumes_bitwise(tmp_path):
    cfg = _cfg()
    task = make_task("linear", cfg, 0.0)
    ref, _ = make_models(cfg, seed=1)
    fit(ref, task, cfg, tmp_path / "a", "linear", progress=False)
    again, _ = make_models(cfg, seed=1)
    fit(again, task, cfg, tmp_path / "b", "linear", progress=False)
    for a, b in zip(ref.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # interrupted run: stop after the step-3 checkpoint; the replay buffer is checkpointed, so the resumed run
    # is bitwise the uninterrupted one
    half_cfg = _cfg(train={**TINY["train"], "steps": 3})
    part, _ = make_models(cfg, seed=1)
    fit(part, task, half_cfg, tmp_path / "d", "linear", progress=False)
    assert read_state(tmp_path / "d")[1]["step"] == 3
    resumed, _ = make_models(cfg, seed=1)
    with pytest.raises(ConfigError, match="resume"):
        fit(resumed, task, cfg, tmp_path / "d", "linear", resume=False, progress=False)
    fit(resumed, task, cfg, tmp_path / "d", "linear", resume=True, progress=False)
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["step"] for r in read_jsonl(tmp_path / "d" / "metrics.jsonl")] == list(range(0, 7))


@pytest.mark.slow
def test_quick_run_writes_contract_metrics_and_figures(tmp_path):
    res = experiments.run("ebt-system2", overrides={"tasks": ["linear"]}, out=tmp_path / "run", quick=True,
                          progress=False)
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    m = data["metrics"]
    s = data["config"]["ebt"]["steps"]
    for k in range(2 * s + 1):
        assert f"err_at_steps_{k}" in m and m[f"err_at_steps_{k}"] == m[f"linear_id_err_at_steps_{k}"]
    for cond in ("id", "ood_noise", "ood_long"):
        assert f"linear_{cond}_sv_err_at_steps_{s}" in m and f"linear_{cond}_transformer_err" in m
        assert m[f"linear_{cond}_monotone_to_trained"] in (0.0, 1.0)
    for k in range(1, 2 * s + 1):
        assert -1 - 1e-6 <= m[f"linear_id_sens_cos_ridge_step{k}"] <= 1 + 1e-6
        assert m[f"linear_id_pred_diff_gd_step{k}"] >= 0
    for fig in ("ebt_error_vs_steps", "ebt_thinking_gain", "ebt_vs_algorithms", "ebt_training"):
        assert f"{fig}.png" in data["artifacts"] and f"{fig}.pdf" in data["artifacts"]
    assert "linear/ebt/ckpt/model.safetensors" in data["artifacts"]
    # resuming a finished run reuses the saved weights (no training) and reproduces the numbers
    before = (tmp_path / "run" / "linear" / "ebt" / "metrics.jsonl").read_text()
    res2 = experiments.run("ebt-system2", out=tmp_path / "run", resume=True, progress=False)
    assert res2.metrics["err_at_steps_1"] == res.metrics["err_at_steps_1"]
    assert (tmp_path / "run" / "linear" / "ebt" / "metrics.jsonl").read_text() == before


def test_bad_config_is_a_one_line_error():
    with pytest.raises(ConfigError, match="tasks"):
        experiments.make_config("ebt-system2", {"tasks": ["tree"]})
    with pytest.raises(ConfigError, match="n_samples"):
        experiments.make_config("ebt-system2", {"n_samples": "1"})
    with pytest.raises(CheckpointError):
        read_state("/nonexistent/run")
