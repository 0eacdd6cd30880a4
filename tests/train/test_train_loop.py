"""The training loop against closed-form gradients, plus determinism, eval stream, records, NaN guard, device."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from train_helpers import NoPrefix, TinyGD

from mesaopt.errors import ConfigError, TrainingDiverged
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import TrainConfig, load_model, train

TASK = LinearRegression(d=3)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=1, batch_size=8, n_points=5, lr=0.1, eval_every=0, eval_batch_size=16, ckpt_every=0,
                log_every=1, optimizer="sgd")
    base.update(kw)
    return TrainConfig(**base)


def _np_grad(W, b, xs, ys, objective, half):
    """Closed-form gradient of the TinyGD loss (NumPy float64): returns (dW, db, loss)."""
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    B, T, d = xs.shape
    if objective == "query":
        s = np.einsum("bnd,bn->bd", xs[:, :-1], ys[:, :-1]) / (T - 1)
        q = xs[:, -1]
        r = np.einsum("bd,de,be->b", q, W, s) + b - ys[:, -1]
        dW = 2 * np.einsum("b,bd,be->de", r, q, s) / B
        db = 2 * r.sum() / B
        loss = (r**2).mean()
    else:
        dW, db, sq = np.zeros_like(W), 0.0, []
        for t in range(T):
            s = (xs[:, :t] * ys[:, :t, None]).sum(1) / max(t, 1)
            r = np.einsum("bd,de,be->b", xs[:, t], W, s) + b - ys[:, t]
            dW += 2 * np.einsum("b,bd,be->de", r, xs[:, t], s) / (B * T)
            db += 2 * r.sum() / (B * T)
            sq.append(r**2)
        loss = np.mean(sq)
    f = 0.5 if half else 1.0
    return f * dW, f * db, f * loss


@pytest.mark.parametrize("objective", ["query", "prefix"])
@pytest.mark.parametrize("loss", ["mse", "half_mse"])
def test_one_sgd_step_matches_closed_form(objective, loss):
    model = TinyGD(3, init_scale=0.5)
    with torch.no_grad():
        model.b.fill_(0.3)
    W0, b0 = model.W.detach().double().numpy().copy(), model.b.item()
    cfg = _cfg(objective=objective, loss=loss)
    res = train(model, TASK, cfg, progress=False)
    batch = TASK.sample(cfg.batch_size, cfg.n_points, generator(cfg.seed, "train"))
    dW, db, ref_loss = _np_grad(W0, b0, batch.xs.numpy(), batch.ys.numpy(), objective, loss == "half_mse")
    np.testing.assert_allclose(model.W.detach().numpy(), W0 - cfg.lr * dW, rtol=1e-5, atol=1e-6)
    assert model.b.item() == pytest.approx(b0 - cfg.lr * db, rel=1e-5, abs=1e-6)
    rec = res.history[-1]
    assert rec["step"] == 1 and rec["loss"] == pytest.approx(ref_loss, rel=1e-5)
    assert rec["grad_norm"] == pytest.approx(float(np.sqrt((dW**2).sum() + db**2)), rel=1e-5)


def test_grad_clip_bounds_update_norm():
    model = TinyGD(3, init_scale=2.0)
    theta0 = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = _cfg(grad_clip=0.01, lr=0.5)
    res = train(model, TASK, cfg, progress=False)
    theta1 = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert res.history[-1]["grad_norm"] > 0.01  # clipping active; the update is lr * clip
    assert float((theta1 - theta0).norm()) == pytest.approx(cfg.lr * 0.01, rel=1e-4)


def test_learns_and_is_deterministic():
    cfg = _cfg(steps=150, optimizer="adamw", lr=0.03, eval_every=50, log_every=25, eval_batch_size=256,
               schedule="cosine", warmup_steps=10, n_points=11, batch_size=32)
    r1 = train(TinyGD(3), TASK, cfg, progress=False)
    r2 = train(TinyGD(3), TASK, cfg, progress=False)
    r3 = train(TinyGD(3), TASK, cfg.model_copy(update={"seed": 1}), progress=False)
    first, last = r1.history[0]["eval_loss"], r1.history[-1]["eval_loss"]
    assert last < 0.6 * first
    for k, v in r1.model.state_dict().items():
        assert torch.equal(v, r2.model.state_dict()[k])
    assert not torch.equal(r1.model.W, r3.model.W)
    assert [r["step"] for r in r1.history] == [0, 25, 50, 75, 100, 125, 150]
    assert [r["step"] for r in r1.history if "eval_loss" in r] == [0, 50, 100, 150]
    # the lr written in each record is the schedule's value for that update
    from mesaopt.train import lr_factor
    for r in r1.history[1:]:
        assert r["lr"] == pytest.approx(cfg.lr * lr_factor("cosine", r["step"] - 1, 150, 10, 0.0))
    assert r1.final["eval_loss"] == last and r1.step == 150 and r1.completed


def test_eval_batch_fixed_and_disjoint_from_training():
    model = TinyGD(3)
    cfg = _cfg(steps=2, eval_every=1, eval_batch_size=64)
    seen = []
    res = train(model, TASK, cfg, progress=False, eval_fn=lambda m, s: seen.append(s) or {"twice_step": 2.0 * s})
    # step 0 eval equals the MSE of the initial model on the eval stream's first draw, computed here
    ev = TASK.sample(64, cfg.n_points, generator(cfg.seed, "eval"))
    init = TinyGD(3)
    with torch.no_grad():
        ref = float((init(ev.xs[:, :-1], ev.ys[:, :-1], ev.xs[:, -1:]) - ev.ys[:, -1:]).pow(2).mean())
    assert res.history[0]["eval_loss"] == pytest.approx(ref, rel=1e-6)
    tr = TASK.sample(cfg.batch_size, cfg.n_points, generator(cfg.seed, "train"))
    assert not torch.equal(tr.xs[:, :1], ev.xs[: cfg.batch_size, :1])
    assert seen == [0, 1, 2] and [r["twice_step"] for r in res.history] == [0.0, 2.0, 4.0]


def test_metrics_jsonl_matches_history(tmp_path):
    res = train(TinyGD(3), TASK, _cfg(steps=6, log_every=2, eval_every=3), out=tmp_path, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == res.history
    assert [r["step"] for r in lines] == [0, 2, 3, 4, 6]
    assert all(k in lines[-1] for k in ("step", "loss", "eval_loss", "lr", "grad_norm", "wall"))
    model, state = load_model(tmp_path)
    assert state["step"] == 6 and torch.equal(model.W, res.model.W)


def test_refuses_to_clobber_checkpoint(tmp_path):
    train(TinyGD(3), TASK, _cfg(steps=2), out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already holds a checkpoint at step 2"):
        train(TinyGD(3), TASK, _cfg(steps=2), out=tmp_path, progress=False)


@pytest.mark.parametrize("check_every", [1, 50])
def test_nan_guard_reports_first_bad_step(tmp_path, check_every):
    cfg = _cfg(steps=60, lr=30.0, ckpt_every=2, log_every=100, nan_check_every=check_every)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as e:
        train(TinyGD(3, init_scale=1.0), TASK, cfg, out=out, progress=False)
    msg = str(e.value)
    assert "lower lr or set grad_clip" in msg and "\n" not in msg
    import re
    m = re.search(r"(loss|grad norm) became (nan|inf|-inf) at step (\d+); last good checkpoint step (\d+) kept", msg)
    assert m, msg
    bad, good = int(m.group(3)), int(m.group(4))
    assert good < bad
    model, state = load_model(out)
    assert state["step"] == good and all(torch.isfinite(p).all() for p in model.parameters())
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == bad and last["diverged"] == msg
    # the exact same first bad step, independent of how often the flag is read
    with pytest.raises(TrainingDiverged, match=f"at step {bad};"):
        train(TinyGD(3, init_scale=1.0), TASK, cfg.model_copy(update={"nan_check_every": 7, "ckpt_every": 0}),
              progress=False)


def test_prefix_objective_needs_prefix_method():
    with pytest.raises(ConfigError, match="prefix"):
        train(NoPrefix(3), TASK, _cfg(objective="prefix"), progress=False)


def test_device_and_dtype():
    res = train(TinyGD(3), TASK, _cfg(steps=2, dtype="float64", device="cpu"), progress=False)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in res.model.parameters())
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="not available"):
            train(TinyGD(3), TASK, _cfg(device="cuda"), progress=False)


def test_dict_config_and_bad_dict():
    res = train(TinyGD(3), TASK, {"steps": 2, "batch_size": 4, "n_points": 3, "eval_batch_size": 8}, progress=False)
    assert res.step == 2
    with pytest.raises(ConfigError, match="lr"):
        train(TinyGD(3), TASK, {"lr": 0}, progress=False)


def test_tensorboard(tmp_path, monkeypatch):
    out = tmp_path / "tb_run"
    train(TinyGD(3), TASK, _cfg(steps=3, tensorboard=True), out=out, progress=False)
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match="tensorboard"):
        train(TinyGD(3), TASK, _cfg(steps=3, tensorboard=True), out=tmp_path / "other", progress=False)
    with pytest.raises(ConfigError, match="out"):
        train(TinyGD(3), TASK, _cfg(steps=3, tensorboard=True), progress=False)


def test_progress_goes_to_stderr_or_a_callers_bar(capsys):
    from rich.progress import Progress

    train(TinyGD(3), TASK, _cfg(steps=3), progress=True)
    cap = capsys.readouterr()
    assert cap.out == "" and "3/3" in cap.err
    train(TinyGD(3), TASK, _cfg(steps=3), progress=False)
    assert capsys.readouterr().err == ""
    with Progress(disable=True) as outer:
        seen = []
        train(TinyGD(3), TASK, _cfg(steps=3, eval_every=1), progress=outer,
              eval_fn=lambda m, s: seen.append([t.completed for t in outer.tasks]) or {})
        assert seen == [[0], [0], [1], [2]] and outer.tasks == []  # one row while training, removed after
