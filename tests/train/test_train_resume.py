"""Resume gives bitwise the same weights as an uninterrupted run; metrics are not duplicated."""

from __future__ import annotations

import pytest
import torch
from train_helpers import TinyGD

import mesaopt.models
from mesaopt.errors import CheckpointError
from mesaopt.io import read_jsonl
from mesaopt.tasks import LinearRegression
from mesaopt.train import TrainConfig, load_checkpoint, train

TASK = LinearRegression(d=3, noise_std=0.1)
CFG = TrainConfig(steps=40, batch_size=16, n_points=6, lr=0.02, eval_every=5, eval_batch_size=32, ckpt_every=10,
                  log_every=3, schedule="warmup_cosine", warmup_steps=5, grad_clip=1.0, weight_decay=0.01)


class Boom(RuntimeError):
    pass


def _eval_fn(fail_at=None):
    def fn(model, step):
        if step == fail_at:
            raise Boom(f"simulated kill at step {step}")
        return {"w_norm": float(model.W.detach().norm())}
    return fn


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _strip_wall(hist):
    return [{k: v for k, v in r.items() if k != "wall"} for r in hist]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    res = train(TinyGD(3), TASK, CFG, out=out, eval_fn=_eval_fn(), progress=False)
    return res, out


@pytest.mark.parametrize("stop_at", [10, 23])
def test_stop_at_then_resume_bitwise(tmp_path, reference, stop_at):
    ref, ref_out = reference
    part = train(TinyGD(3), TASK, CFG, out=tmp_path, eval_fn=_eval_fn(), progress=False, stop_at=stop_at)
    assert part.step == stop_at and not part.completed
    res = train(TinyGD(3), TASK, CFG, out=tmp_path, resume=True, eval_fn=_eval_fn(), progress=False)
    assert res.resumed_from == stop_at and res.step == 40
    _assert_same(res.model, ref.model)
    # optimizer state identical too
    s_ref = load_checkpoint(ref_out)
    s_new = load_checkpoint(tmp_path)
    assert s_new["optimizer"]["param_groups"] == s_ref["optimizer"]["param_groups"]
    assert s_new["rng"] == s_ref["rng"]
    assert _strip_wall(read_jsonl(tmp_path / "metrics.jsonl")) == _strip_wall(ref.history)


def test_kill_after_checkpoint_then_resume(tmp_path, reference):
    ref, _ = reference
    with pytest.raises(Boom):
        train(TinyGD(3), TASK, CFG, out=tmp_path, eval_fn=_eval_fn(fail_at=25), progress=False)
    assert max(r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")) > 20  # records past the checkpoint
    res = train(TinyGD(3), TASK, CFG, out=tmp_path, resume=True, eval_fn=_eval_fn(), progress=False)
    assert res.resumed_from == 20
    _assert_same(res.model, ref.model)
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == sorted(set(steps)) == [r["step"] for r in ref.history]
    assert _strip_wall(res.history) == _strip_wall(ref.history)


def test_resume_finished_run_is_a_noop(reference):
    ref, out = reference
    res = train(TinyGD(3), TASK, CFG, out=out, resume=True, eval_fn=_eval_fn(), progress=False)
    assert res.step == 40 and res.resumed_from == 40
    _assert_same(res.model, ref.model)
    assert res.final["eval_loss"] == ref.final["eval_loss"]


def test_resume_without_checkpoint_starts_fresh(tmp_path, reference):
    ref, _ = reference
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "eval_loss": 123.0}\n{"step": 3, "loss"')
    res = train(TinyGD(3), TASK, CFG, out=tmp_path, resume=True, eval_fn=_eval_fn(), progress=False)
    assert res.resumed_from is None
    _assert_same(res.model, ref.model)
    assert _strip_wall(read_jsonl(tmp_path / "metrics.jsonl")) == _strip_wall(ref.history)


def test_resume_refuses_changed_config(tmp_path):
    train(TinyGD(3), TASK, CFG, out=tmp_path, progress=False, stop_at=10)
    with pytest.raises(CheckpointError, match="train.lr is 0.05 but the checkpoint used 0.02"):
        train(TinyGD(3), TASK, CFG.model_copy(update={"lr": 0.05}), out=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="model spec"):
        train(TinyGD(3, seed=1), TASK, CFG, out=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="task spec"):
        train(TinyGD(3), LinearRegression(d=3), CFG, out=tmp_path, resume=True, progress=False)
    # logging cadence may change
    res = train(TinyGD(3), TASK, CFG.model_copy(update={"log_every": 7, "ckpt_every": 0}), out=tmp_path,
                resume=True, progress=False, stop_at=12)
    assert res.step == 12


@mesaopt.models.register
class TupleSpec(TinyGD):
    """TinyGD whose spec holds a tuple (JSON turns it into a list)."""

    kind = "test_tuple_spec"

    def __init__(self, d: int, shape: tuple[int, int] = (1, 2), **kw) -> None:
        super().__init__(d, **kw)
        self.shape = tuple(shape)

    def spec(self) -> dict:
        return {**super().spec(), "kind": self.kind, "shape": self.shape}


def test_resume_with_non_json_native_spec(tmp_path):
    cfg = CFG.model_copy(update={"steps": 12})
    train(TupleSpec(3), TASK, cfg, out=tmp_path, progress=False, stop_at=6)
    res = train(TupleSpec(3), TASK, cfg, out=tmp_path, resume=True, progress=False)
    ref = train(TupleSpec(3), TASK, cfg, progress=False)
    _assert_same(res.model, ref.model)


def test_dropout_rng_is_seeded_by_config_and_restored_on_resume(tmp_path):
    cfg = CFG.model_copy(update={"steps": 12})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    ref = train(TinyGD(3, dropout=0.5), TASK, cfg, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's global RNG is untouched
    torch.manual_seed(5)
    again = train(TinyGD(3, dropout=0.5), TASK, cfg, progress=False)
    _assert_same(again.model, ref.model)  # deterministic per config, whatever the global seed
    train(TinyGD(3, dropout=0.5), TASK, cfg, out=tmp_path, progress=False, stop_at=6)
    res = train(TinyGD(3, dropout=0.5), TASK, cfg, out=tmp_path, resume=True, progress=False)
    _assert_same(res.model, ref.model)
    other = train(TinyGD(3, dropout=0.5), TASK, cfg.model_copy(update={"seed": 1}), progress=False)
    assert not torch.equal(other.model.W, ref.model.W)
    # without a restored RNG state the dropout masks after step 6 would differ: check the masks matter
    nodrop = train(TinyGD(3), TASK, cfg, progress=False)
    assert not torch.equal(nodrop.model.W, ref.model.W)


@pytest.mark.parametrize("update", [{"optimizer": "adam"}, {"optimizer": "sgd", "momentum": 0.9},
                                    {"optimizer": "sgd"}, {"dtype": "float64", "objective": "prefix"}])
def test_resume_bitwise_other_optimizers_and_dtypes(tmp_path, update):
    cfg = CFG.model_copy(update={"steps": 12, **update})
    cfg = TrainConfig(**cfg.model_dump())  # re-validate the combination
    ref = train(TinyGD(3), TASK, cfg, progress=False)
    train(TinyGD(3), TASK, cfg, out=tmp_path, progress=False, stop_at=7)
    res = train(TinyGD(3), TASK, cfg, out=tmp_path, resume=True, progress=False)
    _assert_same(res.model, ref.model)
    assert res.model.W.dtype == (torch.float64 if update.get("dtype") == "float64" else torch.float32)


def test_resume_after_kill_between_checkpoint_renames(tmp_path, reference):
    ref, _ = reference
    train(TinyGD(3), TASK, CFG, out=tmp_path, eval_fn=_eval_fn(), progress=False, stop_at=20)
    # the swap of a newer checkpoint died after "ckpt -> ckpt.old" and before "ckpt.tmp -> ckpt" (tmp incomplete)
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")
    (tmp_path / "ckpt.tmp").mkdir()
    (tmp_path / "ckpt.tmp" / "model.safetensors").write_bytes(b"partial")
    res = train(TinyGD(3), TASK, CFG, out=tmp_path, resume=True, eval_fn=_eval_fn(), progress=False)
    assert res.resumed_from == 20
    _assert_same(res.model, ref.model)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt")) == ["ckpt"]
