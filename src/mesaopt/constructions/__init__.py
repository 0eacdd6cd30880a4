"""Exact weight constructions: models whose forward pass provably runs a known algorithm."""

from __future__ import annotations

from mesaopt.constructions.lsa_gd import gd_layer_matrices, gd_plus_plus, lsa_gd

__all__ = ["lsa_gd", "gd_plus_plus", "gd_layer_matrices"]
