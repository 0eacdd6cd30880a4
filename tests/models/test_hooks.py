"""Hook points: names per model, parity of the hooked path with the plain forward, replacing activations."""

from __future__ import annotations

import pytest
import torch

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.models.ebt import EBT, EBTFeedForward
from mesaopt.models.gpt import GPT
from mesaopt.models.hooks import HookPoint, hook_tree
from mesaopt.models.lsa import LSA
from mesaopt.models.softmax import SoftmaxAttention


def data(dtype=torch.float64, b=3, n=5, q=2, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, d, generator=g, dtype=dtype), torch.randn(b, n, generator=g, dtype=dtype),
            torch.randn(b, q, d, generator=g, dtype=dtype))


MODELS = {
    "lsa-merged": lambda: LSA(d=3, layers=3, heads=2, init_std=0.2, seed=1),
    "lsa-separate": lambda: LSA(d=3, layers=2, heads=2, param="separate", key_size=2, init_std=0.3, seed=1),
    "lsa-unnormalized": lambda: LSA(d=3, layers=2, normalize=False, init_std=0.1, seed=2),
    "softmax-full": lambda: SoftmaxAttention(d=3, layers=2, heads=2, init_std=0.3, seed=1),
    "softmax-causal": lambda: SoftmaxAttention(d=3, layers=2, heads=2, context="causal", init_std=0.3, seed=1),
    "gpt": lambda: GPT(d=3, n_positions=8, layers=2, heads=2, width=16, seed=0),
    "ebt": lambda: EBT(d=3, dim=16, layers=2, heads=2, steps=3, init="zeros"),
    "ebt_ff": lambda: EBTFeedForward(d=3, dim=16, layers=2, heads=2),
}
HAS_PREFIX = ("lsa-merged", "lsa-separate", "lsa-unnormalized", "softmax-full", "softmax-causal", "gpt")


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["fp64", "fp32"])
def test_run_with_cache_matches_plain_forward(name, dtype, tol):
    m = MODELS[name]().to(dtype).eval()
    cx, cy, qx = data(dtype)
    plain = m(cx, cy, qx)
    out, cache = m.run_with_cache(cx, cy, qx)
    torch.testing.assert_close(out, plain, rtol=tol, atol=tol)
    assert set(cache) == set(m.hook_names()) and not m.hooks_active
    if name in HAS_PREFIX:
        out, cache = m.run_with_cache(cx, cy, method="prefix")
        torch.testing.assert_close(out, m.prefix(cx, cy), rtol=tol, atol=tol)
        assert set(cache) == set(m.hook_names())


@pytest.mark.parametrize("name", ["gpt", "ebt", "softmax-full"])
def test_idle_hooked_path_is_bitwise_the_fused_path(name):
    m = MODELS[name]().eval()
    cx, cy, qx = data(torch.float32)
    with m.hooks():  # hook points called, none attached: fused attention is kept
        out = m(cx, cy, qx)
    assert torch.equal(out, m(cx, cy, qx))


def test_hook_names_per_model():
    lsa = LSA(d=2, layers=2).hook_names()
    assert lsa[:9] == ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k",
                       "blocks.0.attn.hook_v", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z",
                       "blocks.0.hook_attn_out", "blocks.0.hook_resid_post"]
    assert len(lsa) == 1 + 2 * 8 and SoftmaxAttention(d=2, layers=2).hook_names() == lsa
    gpt = GPT(d=2, n_positions=4, layers=2, heads=1, width=8).hook_names()
    assert len(gpt) == 1 + 2 * 10 and "blocks.1.hook_mlp_out" in gpt and "blocks.1.hook_resid_mid" in gpt
    ebt = EBT(d=2, dim=8, layers=1, heads=1).hook_names()
    assert ebt[0] == "context.hook_embed" and "query.blocks.0.attn.hook_pattern" in ebt and ebt[-1] == "hook_head"


def test_hook_points_add_no_state():
    m = GPT(d=2, n_positions=4, layers=1, heads=1, width=8)
    assert not any("hook" in k for k in m.state_dict())
    assert sum(p.numel() for p in m.hook_points.parameters()) == 0


def test_lsa_cache_is_the_linear_attention():
    m = LSA(d=3, layers=1, heads=1, param="separate", init_std=0.3, seed=0).double()
    cx, cy, qx = data()
    _, c = m.run_with_cache(cx, cy, qx)
    q, k, v = c["blocks.0.attn.hook_q"], c["blocks.0.attn.hook_k"], c["blocks.0.attn.hook_v"]
    torch.testing.assert_close(c["blocks.0.attn.hook_pattern"], q @ k.transpose(-1, -2) / cx.shape[1])
    z = c["blocks.0.attn.hook_pattern"] @ v
    torch.testing.assert_close(c["blocks.0.hook_attn_out"], torch.einsum("hDk,bhsk->bsD", m.p_weight[0], z))
    torch.testing.assert_close(c["blocks.0.hook_resid_post"], c["hook_embed"] + c["blocks.0.hook_attn_out"])


def test_gpt_pattern_is_causal_softmax():
    m = MODELS["gpt"]().double()
    cx, cy, _ = data()
    _, c = m.run_with_cache(cx, cy, method="prefix", names_filter=lambda n: n.endswith("hook_pattern"))
    p = c["blocks.1.attn.hook_pattern"]
    assert set(c) == {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"}
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1], dtype=p.dtype))
    assert torch.all(p.triu(1) == 0)


@pytest.mark.parametrize("name", list(MODELS))
def test_replacing_an_activation_changes_the_output_and_is_undone(name):
    m = MODELS[name]().double().eval()
    cx, cy, qx = data()
    before = m(cx, cy, qx)
    last = [n for n in m.hook_names() if n.endswith("hook_resid_post")][-1]
    out = m.run_with_hooks(cx, cy, qx, fwd_hooks=[(last, lambda x, name: x * 0.0)])
    assert not torch.allclose(out, before)
    assert torch.equal(m(cx, cy, qx), before) and not m.hooks_active
    seen = []
    m.run_with_hooks(cx, cy, qx, fwd_hooks=[(last, lambda x, name: seen.append(name))])  # None keeps it
    assert seen and seen[0] == last


def test_zeroing_every_attn_out_of_lsa_predicts_zero():
    m = MODELS["lsa-merged"]().double()
    cx, cy, qx = data()
    out = m.run_with_hooks(cx, cy, qx, fwd_hooks=[(lambda n: n.endswith("hook_attn_out"), lambda x, n: 0 * x)])
    assert torch.equal(out, torch.zeros_like(out))  # the query's y-slot is 0 and never updated


def test_errors_and_persistent_hooks():
    m = MODELS["lsa-merged"]().double()
    cx, cy, qx = data()
    with pytest.raises(ConfigError, match="unknown hook name 'blocks.0.attn.hook_qq'.*hook_q"):
        m.run_with_cache(cx, cy, qx, names_filter="blocks.0.attn.hook_qq")
    with pytest.raises(ShapeError, match="must return None or a tensor of shape"):
        m.run_with_hooks(cx, cy, qx, fwd_hooks=[("hook_embed", lambda x, n: x[:, :1])])
    assert not m.hooks_active  # removed despite the error
    with pytest.raises(ConfigError, match="no method 'nope'"):
        m.run_with_hooks(cx, cy, qx, method="nope")
    m.add_hook("blocks.2.hook_resid_post", lambda x, n: 2 * x)
    assert m.hooks_active
    doubled = m(cx, cy, qx)
    m.reset_hooks()
    torch.testing.assert_close(doubled, 2 * m(cx, cy, qx))
    with m.hooks([("hook_embed", lambda x, n: None)]):
        m.reset_hooks()  # inside a context: the context still closes cleanly
    assert not m.hooks_active and all(not hp.fns for hp in m.hook_dict().values())


def test_no_hook_takes_the_fast_path(monkeypatch):
    m = MODELS["lsa-merged"]().double()
    cx, cy, qx = data()

    def boom(*a, **k):
        raise AssertionError("hooked path taken without hooks")

    monkeypatch.setattr(m, "_run_hooked", boom)
    m(cx, cy, qx)
    m.prefix(cx, cy)
    with pytest.raises(AssertionError, match="hooked path"):
        m.run_with_cache(cx, cy, qx)


def test_hook_tree_and_idle_hookpoint():
    tree = hook_tree(["a.hook_x", "a.b.hook_y", "hook_z"])
    names = [m.name for m in tree.modules() if isinstance(m, HookPoint)]
    assert names == ["a.hook_x", "a.b.hook_y", "hook_z"]
    x = torch.ones(2)
    assert tree.a.hook_x(x) is x


def test_ebt_gradients_flow_through_hooks():
    m = EBT(d=3, dim=16, layers=1, heads=2, steps=2, init="zeros").double()
    cx, cy, qx = data()
    out, cache = m.run_with_cache(cx, cy, qx, method="predict", create_graph=True, detach=False)
    assert cache["hook_head"].requires_grad and out.requires_grad
