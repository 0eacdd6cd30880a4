"""Hook points with TransformerLens-style names: read or replace any named activation of a model.

A ``HookPoint`` is an identity module with a list of functions ``fn(activation, hook_name) -> activation | None``
(a returned tensor replaces the activation, ``None`` keeps it). Every model keeps its hook points in one tree,
``model.hook_points``, whose dotted paths are the hook names (``blocks.0.attn.hook_q``, ...); the tree holds no
parameters, so checkpoints and ``state_dict`` are unchanged.

Cost when no hook is active: none beyond one attribute check per call. A model runs its ordinary (fused, fast)
path unless ``HookedMixin.hooks_active`` is true; only then does it take the hooked path, which calls every hook
point and switches to an unfused form where the cached quantity (an attention pattern, LSA's per-token keys and
values) does not exist in the fast path. Parity tests pin the two paths to the same outputs.

``HookedMixin`` gives a model ``hook_names()``, ``run_with_hooks``, ``run_with_cache``, ``hooks(...)`` (a context
manager) and ``add_hook`` / ``reset_hooks``. Which names a model has is listed in docs/interop.md.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from mesaopt.errors import ConfigError, ShapeError

__all__ = ["HookPoint", "HookedMixin", "hook_tree", "HookFn", "NamesFilter"]

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]
NamesFilter = str | Sequence[str] | Callable[[str], bool] | None
TREE = "hook_points"


class HookPoint(nn.Module):
    """Identity on a tensor; runs its hook functions in order when it has any (a returned tensor replaces it)."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.fns: list[HookFn] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity when idle; else ``x`` passed through every hook function (same shape required)."""
        for fn in self.fns:
            out = fn(x, self.name)
            if out is not None:
                if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ShapeError(f"hook on {self.name!r} must return None or a tensor of shape "
                                     f"{tuple(x.shape)}, got {got}")
                x = out
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # skip nn.Module's call machinery: hot path
        return self.forward(x) if self.fns else x

    def extra_repr(self) -> str:
        return self.name


ATTN_BLOCK = ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
              "hook_attn_out")
"""Hook points of an attention sub-block, in execution order (after ``hook_resid_pre``)."""
ATTN_ONLY_BLOCK = (*ATTN_BLOCK, "hook_resid_post")
"""A block of an attention-only stack (LSA, softmax attention)."""
TRANSFORMER_BLOCK = (*ATTN_BLOCK, "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
"""A pre-LN transformer block with an MLP (GPT, the EBT backbone)."""


def stack_hook_names(layers: int, block: tuple[str, ...]) -> list[str]:
    """``hook_embed`` then ``blocks.{l}.{name}`` for every layer l and every ``name`` of ``block``."""
    return ["hook_embed"] + [f"blocks.{layer}.{n}" for layer in range(layers) for n in block]


def hook_tree(names: Iterable[str]) -> nn.Module:
    """A parameter-free module tree whose leaves are ``HookPoint`` s at the given dotted paths."""
    root = nn.Module()
    for name in names:
        node = root
        *parts, leaf = name.split(".")
        for p in parts:
            if p not in node._modules:
                node.add_module(p, nn.Module())
            node = node._modules[p]
        hp = HookPoint()
        hp.name = name
        node.add_module(leaf, hp)
    return root


class HookedMixin:
    """Hook API for a model holding ``self.hook_points = hook_tree(...)``; its forward checks ``hooks_active``."""

    _hook_depth: int = 0  # open ``hooks(...)`` contexts (run_with_hooks / run_with_cache)
    _hook_persistent: int = 0  # hooks attached with ``add_hook``

    # ------------------------------------------------------------------ names
    def hook_dict(self) -> dict[str, HookPoint]:
        """Every hook point by name (TransformerLens-style dotted names)."""
        tree = getattr(self, TREE)
        return {m.name: m for m in tree.modules() if isinstance(m, HookPoint)}

    def hook_names(self) -> list[str]:
        """The model's hook names, in the order the forward pass reaches them."""
        return list(self.hook_dict())

    @property
    def hooks_active(self) -> bool:
        """True when the forward must take the hooked path (a hook is attached or a cache is being filled)."""
        return self._hook_depth > 0 or self._hook_persistent > 0

    def layer_hooks(self, layer: int, prefix: str = "") -> nn.Module | None:
        """The hook subtree of one block (``{prefix}blocks.{layer}``) while hooks are active, else None."""
        if not self.hooks_active:
            return None
        return getattr(self, TREE).get_submodule(f"{prefix}blocks.{layer}")

    def _tree(self) -> nn.Module | None:
        """The hook tree while hooks are active, else None (the plain path)."""
        return getattr(self, TREE) if self.hooks_active else None

    def hook(self, name: str) -> HookPoint | None:
        """The hook point ``name`` while hooks are active, else None (the forward then skips it)."""
        return getattr(self, TREE).get_submodule(name) if self.hooks_active else None

    def _select(self, names: NamesFilter) -> list[str]:
        all_names = self.hook_names()
        if names is None:
            return all_names
        if callable(names):
            return [n for n in all_names if names(n)]
        wanted = [names] if isinstance(names, str) else list(names)
        for n in wanted:
            if n not in all_names:
                close = difflib.get_close_matches(n, all_names, n=3)
                hint = f"; did you mean {close}?" if close else f"; {type(self).__name__} has {all_names[:8]} ..."
                raise ConfigError(f"unknown hook name {n!r}{hint} (model.hook_names() lists them all)")
        return [n for n in all_names if n in wanted]

    # ------------------------------------------------------------------ attaching
    def add_hook(self, name: NamesFilter, fn: HookFn) -> None:
        """Attach ``fn`` to the hooks ``name`` selects (a name, names or a predicate) until ``reset_hooks``."""
        points = self.hook_dict()
        for n in self._select(name):
            points[n].fns.append(fn)
            self._hook_persistent += 1

    def reset_hooks(self) -> None:
        """Remove every hook function (persistent or not); outside ``hooks(...)`` the model is back on its fast path."""
        for hp in self.hook_dict().values():
            hp.fns.clear()
        self._hook_persistent = 0

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[NamesFilter, HookFn]] = ()) -> Iterator[Any]:
        """Context manager: the hooked path with ``fwd_hooks`` [(name or predicate, fn)] attached; removed on exit.

        With an empty list the model still runs its hooked path (hook points idle), e.g. to time it.
        """
        points = self.hook_dict()
        added = [(points[n], fn) for name, fn in fwd_hooks for n in self._select(name)]
        for hp, fn in added:
            hp.fns.append(fn)
        self._hook_depth += 1
        try:
            yield self
        finally:
            self._hook_depth -= 1
            for hp, fn in added:
                if fn in hp.fns:  # reset_hooks() inside the context may have removed it already
                    hp.fns.remove(fn)

    def _call(self, method: str, inputs: tuple, kwargs: dict) -> Any:
        fn = getattr(self, method, None)
        if fn is None or not callable(fn):
            raise ConfigError(f"{type(self).__name__} has no method {method!r} to run with hooks")
        return fn(*inputs, **kwargs)

    def run_with_hooks(self, *inputs: torch.Tensor, fwd_hooks: Sequence[tuple[NamesFilter, HookFn]] = (),
                       method: str = "forward", **kwargs: Any) -> Any:
        """Run ``method`` (``forward``: (B,N,d), (B,N), (B,Q,d) -> (B,Q); ``prefix``: (B,T,d), (B,T) -> (B,T))
        with ``fwd_hooks`` = [(name | names | predicate, fn(activation, hook_name) -> activation | None)]."""
        with self.hooks(fwd_hooks):
            return self._call(method, inputs, kwargs)

    def run_with_cache(self, *inputs: torch.Tensor, names_filter: NamesFilter = None, method: str = "forward",
                       detach: bool = True, **kwargs: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        """(output of ``method``, cache {hook name: activation}) for the hooks ``names_filter`` selects (all if None).

        Outputs equal the plain call's (see the parity tests). A hook reached several times in one call (EBT's
        query pass at every descent step) keeps its last activation. ``detach=False`` keeps the autograd graph.
        """
        cache: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, name: str) -> None:
            cache[name] = x.detach() if detach else x

        with self.hooks([(n, save) for n in self._select(names_filter)]):
            out = self._call(method, inputs, kwargs)
        return out, cache
