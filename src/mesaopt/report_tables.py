"""The tables ``mesaopt report`` renders: which stored metrics each experiment page shows, and how.

A table is a list of ``Row`` (quantity | value), a ``Grid`` (one row per index value such as K, one column per
quantity) or a ``PerRun`` (one row per stored run). ``TABLES`` maps a report block name (``NAME`` or
``NAME.part``: another table of the same experiment's stored runs) to its table; ``SUMMARY`` lists the README's
key numbers across experiments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One quantity of a table: a label and a metric key (or a function of the metrics dict), printed with fmt."""

    label: str
    key: str | Callable[[dict[str, float]], float]
    fmt: str = "{:.4g}"
    spread: bool = True  # False: the mean alone (a share of runs, where an interval means nothing)

    def value(self, metrics: dict[str, float]) -> float:
        """The quantity for one run's metrics (NaN if the key is missing or null)."""
        if callable(self.key):
            return float(self.key(metrics))
        v = metrics.get(self.key)
        return math.nan if v is None else float(v)


@dataclass(frozen=True)
class Grid:
    """A wide table: one row per index value (e.g. K), one column per quantity, cells ``mean ± 95 % half-width``.

    ``columns`` are (header, row factory): the factory turns an index value into the Row of that cell.
    """

    index: str
    values: tuple[int | str, ...]
    columns: tuple[tuple[str, Callable[[int | str], Row]], ...]


@dataclass(frozen=True)
class PerRun:
    """A table with one row per stored run (its seed first) and one column per Row (header = the Row's label),
    then a median row: for long runs where each seed matters (e.g. whether it reached a target at all)."""

    columns: tuple[Row, ...]


def _ratio(a: str, b: str) -> Callable[[dict[str, float]], float]:
    """metrics[a] / metrics[b]; NaN if either is missing or null."""

    def ratio(m: dict[str, float]) -> float:
        x, y = m.get(a), m.get(b)
        return math.nan if x is None or y is None else float(x) / float(y)

    return ratio


def _columns(key: str, fmt: str, learners: tuple[tuple[str, str], ...]) -> tuple:
    """Grid columns, one per (header, name) of ``learners``: the cell of index value v is the metric
    ``key.format(name=name, v=v)`` (e.g. ``"{name}_err_at_{v}"``) printed with ``fmt``."""
    return tuple((h, (lambda v, name=name: Row("", key.format(name=name, v=v), fmt))) for h, name in learners)


_OOD_LEARNERS = (("trained LSA, 1 layer", "lsa1"), ("1-step GD", "gd1"), ("trained LSA, 3 layers", "lsa3"),
                 ("3-step GD", "gd3"), ("3-step GD++", "gdpp3"))
"""vonoswald-ood's learners (header, key name), the same on its α and β tables."""

TABLES: dict[str, list[Row] | Grid | PerRun] = {
    "vonoswald-gd": [Row("trained LSA loss (½·MSE)", "lsa_loss", "{:.6f}"),
                     Row("one GD step loss", "gd_loss", "{:.6f}"),
                     Row("loss ratio LSA / GD", _ratio("lsa_loss", "gd_loss"), "{:.5f}"),
                     Row("sensitivity cosine", "sens_cos", "{:.5f}"), Row("mean |pred. difference|", "pred_diff"),
                     Row("GD's optimal lr", "gd_lr", "{:.4f}"),
                     Row("LSA's effective lr (slope on GD with lr 1)", "lsa_lr_effective", "{:.4f}"),
                     Row("construction error", "construction_err", "{:.2g}")],
    "mahankali-optimal": [
        Row("N = 20: learned lr", "lr_learned", "{:.4f}"), Row("N = 20: optimal lr η* (closed form)", "lr_optimal",
                                                                 "{:.4f}"),
        Row("N = 20: learned lr from the weights, tr(Γ)/d", "lr_learned_weights", "{:.4f}"),
        Row("N = 20: |lr_learned − η*| / η*", "lr_rel_err", "{:.2g}"),
        Row("N = 20: Γ anisotropy", "gamma_anisotropy", "{:.3f}"),
        Row("N = 20: trained LSA loss (½·MSE)", "lsa_loss", "{:.5f}"),
        Row("N = 20: one GD step with η*, same tasks", "optimal_gd_loss", "{:.5f}"),
        Row("N = 20: R*/2 (closed form)", "optimal_gd_risk", "{:.5f}"),
        Row("N = 20: loss ratio LSA / GD(η*)", "loss_ratio", "{:.5f}"),
        Row("N = 20: mean |ŷ_LSA − ŷ_GD(η*)|", "pred_diff", "{:.3f}"),
        *[row for n in (5, 10, 40) for row in (
            Row(f"N = {n}: learned lr", f"lr_learned_n{n}", "{:.4f}"),
            Row(f"N = {n}: η* (closed form)", f"lr_optimal_n{n}", "{:.4f}"),
            Row(f"N = {n}: trained LSA loss", f"lsa_loss_n{n}", "{:.4f}"),
            Row(f"N = {n}: R*/2 (closed form)", f"optimal_gd_risk_n{n}", "{:.4f}"))]],
    "svm-implicit-bias": [
        Row("problems (of 20) whose Frobenius SVM is feasible", "n_feasible_W", "{:.0f}"),
        Row("problems (of 20) whose nuclear SVM is feasible", "n_feasible_KQ", "{:.0f}"),
        Row("corr(W, W^mm), Frobenius SVM", "corr_W_fro", "{:.4f}"),
        Row("… lowest of a run's 20 problems", "corr_W_fro_min", "{:.4f}"),
        Row("corr(KQᵀ, W^mm_⋆), nuclear SVM, λ = 2.2e-16", "corr_KQ_nuc", "{:.4f}"),
        Row("… lowest of a run's 20 problems", "corr_KQ_nuc_min", "{:.4f}"),
        Row("corr(KQᵀ, W^mm_⋆), λ = 0", "corr_KQ_nuc_noreg", "{:.4f}"),
        Row("… lowest of a run's 20 problems", "corr_KQ_nuc_noreg_min", "{:.4f}"),
        Row("corr(KQᵀ, W^mm_⋆ in GD's own subspaces), λ = 0", "corr_KQ_nuc_own_subspace_noreg", "{:.4f}"),
        Row("cross check corr(W, W^mm_⋆)", "corr_W_nuc", "{:.3f}"),
        Row("cross check corr(KQᵀ, W^mm)", "corr_KQ_fro", "{:.3f}"),
        Row("rank of W^mm", "rank_svm_fro", "{:.2f}"),
        Row("rank of W^mm_⋆", "rank_svm_nuc", "{:.2f}"),
        Row("softmax mass on the selected tokens (W)", "mass_W", "{:.4f}"),
        Row("softmax mass on the selected tokens (KQ)", "mass_KQ", "{:.4f}"),
        Row("share of problems ending at the global selection (W)", "frac_global_W", "{:.2f}"),
        Row("share of problems ending at the global selection (KQ)", "frac_global_KQ", "{:.2f}"),
        Row("‖KQᵀ‖_F at the end, λ = 2.2e-16", "w_norm_KQ", "{:.0f}"),
        Row("‖KQᵀ‖_F at the end, λ = 0", "w_norm_KQ_noreg", "{:.0f}"),
        *[row for n, t, d in ((4, 6, 8), (8, 10, 16)) for row in (
            Row(f"(n, T, d) = ({n}, {t}, {d}): corr(W, W^mm)", f"corr_W_fro_n{n}_T{t}_d{d}", "{:.4f}"),
            Row(f"(n, T, d) = ({n}, {t}, {d}): corr(KQᵀ, W^mm_⋆), λ = 2.2e-16", f"corr_KQ_nuc_n{n}_T{t}_d{d}",
                "{:.4f}"),
            Row(f"(n, T, d) = ({n}, {t}, {d}): corr(KQᵀ, W^mm_⋆), λ = 0", f"corr_KQ_nuc_noreg_n{n}_T{t}_d{d}",
                "{:.4f}"))]],
    "vonoswald-deep": Grid("K", (1, 2, 3, 4, 5), (
        ("trained LSA", lambda k: Row("", f"lsa_loss_k{k}", "{:.4f}")),
        ("K-step GD", lambda k: Row("", f"gd_loss_k{k}", "{:.4f}")),
        ("K-step GD++", lambda k: Row("", f"gdpp_loss_k{k}", "{:.4f}")),
        ("LSA / GD++", lambda k: Row("", _ratio(f"lsa_loss_k{k}", f"gdpp_loss_k{k}"), "{:.3f}")),
        ("K-step GD++, per-layer (η, γ)", lambda k: Row("", f"gdpp_layerwise_loss_k{k}", "{:.4f}")),
        ("LSA / GD++ per layer", lambda k: Row("", _ratio(f"lsa_loss_k{k}", f"gdpp_layerwise_loss_k{k}"), "{:.3f}")),
        ("best match GD++ (share of runs)", lambda k: Row("", f"best_is_gdpp_k{k}", "{:.2f}", spread=False)),
        ("sens_cos, best match", lambda k: Row("", f"sens_cos_k{k}", "{:.4f}")),
        ("sens_cos with GD", lambda k: Row("", f"sens_cos_gd_k{k}", "{:.4f}")),
        ("sens_cos with GD++", lambda k: Row("", f"sens_cos_gdpp_k{k}", "{:.4f}")),
        ("projected construction", lambda k: Row("", f"projected_loss_k{k}", "{:.4f}")),
        ("interpolation a = ½", lambda k: Row("", f"interp_loss_k{k}", "{:.4f}")))),
    "ebt-system2": Grid("task_condition", tuple(f"{t}_{c}" for t in ("linear", "relu2")
                                                for c in ("id", "ood_noise", "ood_long")), (
        *((f"S={s}", (lambda p, s=s: Row("", f"{p}_err_at_steps_{s}", "{:.3f}"))) for s in range(1, 9)),
        *((f"self-verify K at S={s}", (lambda p, s=s: Row("", f"{p}_sv_err_at_steps_{s}", "{:.3f}")))
          for s in (1, 4, 8)),
        ("feed-forward", lambda p: Row("", f"{p}_transformer_err", "{:.3f}")),
        ("ridge", lambda p: Row("", f"{p}_ridge_err", "{:.3f}")),
        ("gain 1→8", lambda p: Row("", f"{p}_s2_gain", "{:.2f}")))),
    "garg-curves": Grid("N", (3, 5, 10, 15), _columns("{name}_err_at_{v}", "{:.3g}", (
        ("transformer", "transformer"), ("least squares (min-norm)", "ols"), ("ridge λ = σ²", "ridge"),
        ("averaging", "averaging"), ("3-NN", "knn")))),
    "garg-curves.sparse": Grid("N", (3, 5, 10, 15), _columns("{name}_err_at_{v}", "{:.3g}", (
        ("sparse transformer", "sparse_transformer"), ("LASSO", "lasso"), ("least squares", "sparse_ols")))),
    "garg-curves.summary": [Row("transformer / least squares at N = 2d = 10", "transformer_over_ols_at_10", "{:.3f}"),
                            Row("transformer below averaging at every N ≥ d/2 (1 = yes)", "transformer_below_averaging",
                                "{:.0f}"),
                            Row("worst transformer / averaging ratio", "max_transformer_over_averaging", "{:.3f}"),
                            Row("ridge λ", "ridge_lam", "{:.3g}"), Row("LASSO α (best on validation)", "lasso_alpha",
                                                                      "{:.3g}"),
                            Row("dense training wall s", "train_wall_s", "{:.0f}"),
                            Row("sparse training wall s", "sparse_train_wall_s", "{:.0f}")],
    "fu-newton": Grid("layer", (1, 2, 3, 4, 5, 6), (
        ("probe MSE", lambda l: Row("", f"layer_loss_l{l}", "{:.3f}")),
        ("best Newton iteration", lambda l: Row("", f"best_newton_iter_l{l}", "{:.0f}")),
        ("its similarity", lambda l: Row("", f"newton_sim_l{l}", "{:.3f}")),
        ("best GD steps", lambda l: Row("", f"best_gd_steps_l{l}", "{:.0f}")),
        ("its similarity", lambda l: Row("", f"gd_sim_l{l}", "{:.3f}")),
        ("its lr", lambda l: Row("", f"best_gd_lr_l{l}", "{:.3f}")))),
    "fu-newton.summary": [Row("model query MSE", "model_loss", "{:.3f}"),
                          Row("least squares query MSE", "ols_loss", "{:.1e}"),
                          Row("newton_slope (iterations per layer)", "newton_slope", "{:.2f}"),
                          Row("newton_intercept", "newton_intercept", "{:.2f}"),
                          Row("newton_r2", "newton_r2", "{:.2f}"),
                          Row("gd_log2_slope", "gd_log2_slope", "{:.2f}"), Row("gd_log2_r2", "gd_log2_r2", "{:.2f}"),
                          Row("mean best similarity, Newton", "newton_sim_mean", "{:.3f}"),
                          Row("mean best similarity, GD", "gd_sim_mean", "{:.3f}")],
    "raventos-diversity": Grid("M", (2, 8, 32, 128, 512, 2048, 8192, 32768), _columns("{name}_m{v}", "{:.3f}", (
        ("dist dMMSE (fresh)", "dist_dmmse"), ("dist ridge (fresh)", "dist_ridge"),
        ("dist dMMSE (pool)", "dist_dmmse_pool"), ("dist ridge (pool)", "dist_ridge_pool"),
        ("err model pool", "err_model_pool"), ("err model fresh", "err_model_fresh"),
        ("err dMMSE fresh", "err_dmmse_fresh"), ("err ridge fresh", "err_ridge_fresh")))),
    "raventos-diversity.summary": [Row("transition M* (closer to ridge than to dMMSE on fresh tasks)", "transition_m",
                                       "{:.1f}"),
                                   Row("log2 M*", "transition_log2m", "{:.2f}")],
    "vonoswald-recurrent": Grid("K", (1, 2, 10), (
        ("tied LSA", lambda k: Row("", f"lsa_loss_k{k}", "{:.4f}")),
        ("K-step GD", lambda k: Row("", f"gd_loss_k{k}", "{:.4f}")),
        ("K-step GD++", lambda k: Row("", f"gdpp_loss_k{k}", "{:.4f}")),
        ("LSA / GD", lambda k: Row("", _ratio(f"lsa_loss_k{k}", f"gd_loss_k{k}"), "{:.3f}")),
        ("sens_cos with GD", lambda k: Row("", f"sens_cos_gd_k{k}", "{:.4f}")),
        ("sens_cos with GD++", lambda k: Row("", f"sens_cos_gdpp_k{k}", "{:.4f}")))),
    "vonoswald-recurrent.rollout": Grid("S", (1, 2, 3, 5, 10, 20, 30, 50), (
        ("trained layer, damped roll-out", lambda s: Row("", f"rollout_loss_s{s}", "{:.4g}")),
        ("GD, lr λ·η₁ (roll-out of the construction)", lambda s: Row("", f"gd_damped_loss_s{s}", "{:.4g}")),
        ("GD, lr fitted per S", lambda s: Row("", f"gd_rollout_loss_s{s}", "{:.4g}")))),
    "vonoswald-recurrent.summary": [Row("best roll-out length S", "rollout_best_s", "{:.1f}"),
                                    Row("its loss", "rollout_best_loss", "{:.4f}"),
                                    Row("construction roll-out vs GD (relative, float64)", "construction_rollout_err",
                                        "{:.1e}")],
    "vonoswald-ood": Grid("α", ("0.25", "0.5", "0.75", "1", "1.25", "1.5", "2", "2.5", "3"),
                          _columns("{name}_loss_alpha{v}", "{:.3g}", _OOD_LEARNERS)),
    "vonoswald-ood.beta": Grid("β", ("0.25", "0.5", "1", "1.5", "2", "3", "4", "5"),
                               _columns("{name}_loss_beta{v}", "{:.3g}", _OOD_LEARNERS)),
    "vonoswald-sine": [Row("MLP + LSA (½·MSE)", "mlp_lsa_loss", "{:.4f}"), Row("plain LSA on raw x", "lsa_loss",
                                                                              "{:.4f}"),
                       Row("MLP + LSA / plain LSA", "loss_ratio_mlp_lsa_lsa", "{:.3f}"),
                       Row("GD on the learned features", "gd_features_loss", "{:.4f}"),
                       Row("sensitivity cosine, MLP + LSA vs GD on its features", "sens_cos_gd_features", "{:.3f}"),
                       Row("ridge on the learned features", "ridge_features_loss", "{:.4f}"),
                       Row("RBF kernel ridge on raw x", "kernel_ridge_loss", "{:.4f}"),
                       Row("one GD step on raw x", "gd_loss", "{:.4f}"), Row("predicting 0", "zero_loss", "{:.4f}")],
    "vonoswald-copy": [Row("model (softmax copy layer + LSA), ½·MSE", "loss", "{:.4f}"),
                       Row("one GD step, fitted lr", "gd_loss", "{:.4f}"),
                       Row("model / GD", "loss_ratio", "{:.3f}"),
                       Row("sensitivity cosine with GD", "sens_cos", "{:.4f}"),
                       Row("mean |ŷ − ŷ_GD|", "pred_diff", "{:.3g}"),
                       Row("copy mass (y-token on its own x-token)", "copy_mass", "{:.3f}"),
                       Row("copy mass under uniform attention", "copy_mass_uniform", "{:.3f}"),
                       Row("hand-built construction vs GD (relative)", "construction_err", "{:.1e}")],
    "garg-suite": Grid("N", (5, 10, 20, 30, 40), _columns("dense_{name}_err_at_{v}", "{:.3g}", (
        ("transformer (shipped d = 20 GPT)", "transformer"), ("least squares", "ols"), ("ridge", "ridge"),
        ("averaging", "averaging"), ("3-NN", "knn")))),
    "garg-suite.shifts": Grid("shift", ("skewed", "half_subspace", "noisy", "orthant", "opposite_orthant",
                                        "orthogonal", "same_point", "scale_x_0p333", "scale_x_0p5", "scale_x_2",
                                        "scale_x_3", "scale_y_0p333", "scale_y_0p5", "scale_y_2", "scale_y_3"), tuple(
        (h, (lambda name, n=n, k=k: Row("", f"shift_{name}_{k}err_at_{n}", "{:.3g}"))) for h, n, k in (
            ("transformer, N = 10", 10, ""), ("least squares, N = 10", 10, "ols_"),
            ("transformer, N = 19", 19, ""), ("least squares, N = 19", 19, "ols_"),
            ("transformer, N = 40", 40, ""), ("least squares, N = 40", 40, "ols_")))),
    "svm-local-global": Grid("d", (2, 4, 6, 8, 12, 16, 24), (
        ("global", lambda d: Row("", f"frac_global_d{d}", "{:.2f}")),
        ("locally optimal (incl. global)", lambda d: Row("", f"frac_locally_optimal_d{d}", "{:.2f}")),
        ("not local", lambda d: Row("", f"frac_other_d{d}", "{:.2f}")),
        ("global Att-SVM feasible", lambda d: Row("", f"frac_global_feasible_d{d}", "{:.2f}")))),
    "svm-local-global.summary": [Row("Spearman correlation of the global fraction with d", "global_spearman_with_d",
                                     "{:.2f}")],
    "svm-regpath": [Row("corr(W_R / R, W^mm) at R = 200, Frobenius ball (mean of 5 problems)", "corr_regpath_fro",
                        "{:.4f}"),
                    *[Row(f"… problem {i}", f"corr_regpath_fro_seed{i}", "{:.4f}") for i in range(5)],
                    Row("corr(W_R / R, W^mm_⋆) at R = 200, nuclear ball (mean of 5 problems)", "corr_regpath_nuc",
                        "{:.4f}"),
                    *[Row(f"… problem {i}", f"corr_regpath_nuc_seed{i}", "{:.4f}") for i in range(5)]],
    "ebt-system2.steps": Grid("s", (1, 2, 3, 4, 5, 6, 7, 8), (
        ("EBT, zero initial guess (linear, ID)", lambda k: Row("", f"linear_id_ebt_zero_init_err_at_steps_{k}",
                                                                "{:.3f}")),
        ("s GD steps, fitted lr", lambda k: Row("", f"linear_id_gd_err_at_steps_{k}", "{:.3f}")),
        ("sens_cos EBT vs GD", lambda k: Row("", f"linear_id_sens_cos_gd_step{k}", "{:.3f}")),
        ("sens_cos EBT vs ridge", lambda k: Row("", f"linear_id_sens_cos_ridge_step{k}", "{:.3f}")))),
    "ebt-system2.other": [Row("learned step size α (linear; initial 0.5)", "linear_alpha", "{:.2f}"),
                          Row("learned step size α (relu2)", "relu2_alpha", "{:.2f}"),
                          Row("EBT training s (linear)", "linear_ebt_train_s", "{:.0f}"),
                          Row("feed-forward twin training s (linear)", "linear_ff_train_s", "{:.0f}"),
                          Row("EBT training s (relu2)", "relu2_ebt_train_s", "{:.0f}"),
                          Row("feed-forward twin training s (relu2)", "relu2_ff_train_s", "{:.0f}")],
    "garg-d20": PerRun((Row("reached 0.05 at N = 40", "reached", "{:.0f}"),
                        Row("steps to the target", "steps_to_target", "{:.0f}"),
                        Row("wall s to the target", "wall_s_to_target", "{:.0f}"),
                        Row("curriculum complete at step", "curriculum_complete_step", "{:.0f}"),
                        Row("steps run", "steps", "{:.0f}"), Row("s / step", _ratio("train_wall_s", "steps"), "{:.3f}"),
                        Row("err at N = 10", "err_at_10", "{:.3f}"), Row("err at N = 20", "err_at_20", "{:.3f}"),
                        Row("err at N = 40", "err_at_40", "{:.4f}"),
                        Row("least squares at N = 40", "ols_err_at_40", "{:.1e}"))),
}


SUMMARY_NAME = "summary"
# the README's key numbers: (experiment, row) pairs, each computed from that experiment's stored runs
SUMMARY: list[tuple[str, Row]] = [
    ("vonoswald-gd", Row("loss ratio LSA / one GD step", _ratio("lsa_loss", "gd_loss"), "{:.5f}")),
    ("vonoswald-gd", Row("sensitivity cosine LSA vs GD", "sens_cos", "{:.5f}")),
    *[("vonoswald-deep", Row(f"K = {k}: loss ratio LSA / {k}-step GD++", _ratio(f"lsa_loss_k{k}", f"gdpp_loss_k{k}"),
                             "{:.3f}")) for k in (1, 2, 3, 4)],
    ("vonoswald-recurrent", Row("tied K = 2: loss ratio LSA / 2-step GD", _ratio("lsa_loss_k2", "gd_loss_k2"),
                                "{:.3f}")),
    ("vonoswald-ood", Row("α = 2 (out of distribution): 1-layer LSA / 1-step GD", _ratio("lsa1_loss_alpha2",
                                                                                         "gd1_loss_alpha2"), "{:.3f}")),
    ("mahankali-optimal", Row("N = 20: learned lr", "lr_learned", "{:.4f}")),
    ("mahankali-optimal", Row("N = 20: optimal lr η* (closed form)", "lr_optimal", "{:.4f}")),
    ("garg-curves", Row("d = 5: transformer / least squares at N = 2d", "transformer_over_ols_at_10", "{:.3f}")),
    ("raventos-diversity", Row("transition M* (ridge closer than dMMSE), 3000 training steps", "transition_m",
                               "{:.1f}")),
    ("svm-implicit-bias", Row("corr(W, W^mm), Frobenius", "corr_W_fro", "{:.4f}")),
    ("svm-local-global", Row("share of runs converging to the global SVM direction, d = 2", "frac_global_d2",
                             "{:.2f}")),
    ("svm-local-global", Row("… d = 24", "frac_global_d24", "{:.2f}")),
    ("svm-regpath", Row("regularization path vs W^mm at R = 200, Frobenius", "corr_regpath_fro", "{:.4f}")),
    ("svm-implicit-bias", Row("corr(KQᵀ, W^mm_⋆), nuclear, λ = 2.2e-16", "corr_KQ_nuc", "{:.4f}")),
    ("svm-implicit-bias", Row("corr(KQᵀ, W^mm_⋆), nuclear, λ = 0", "corr_KQ_nuc_noreg", "{:.4f}")),
]
