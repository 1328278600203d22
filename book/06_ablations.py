# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. How many shots, and which parts of the method matter
#
# Two questions, answered from one resumable sweep over (data set, N, seed, method):
#
# 1. **How many shots?** Test accuracy of both NetGraft recipes against N, beside the four baselines
#    that see the same N images per class. The few-shot draw changes with the seed, so every point
#    is a mean ± std over seeds.
# 2. **Which parts matter?** At fixed N, the book's recipe with one piece removed or swapped: block
#    grafting alone (no net stage), the net stage alone (no block stage), the whole student grafted
#    at once instead of progressively, random student blocks instead of the teacher's, the loss on
#    the logits alone, and no mixup; and the paper's recipe with the BatchNorm student this book
#    used before.
#    Each variant runs on the same draws as the recipe it changes, so it is read as a **paired
#    difference** over seeds with a 95% t-interval; a difference is called only when its interval
#    excludes zero. The adapters are folded into the student at the end; that must change nothing,
#    and we check it on every run.
#
# The grid is defined in `nbgraft.sweep` (one per profile, plus `"full"`). The same sweep runs from the
# command line, e.g. `python -m nbgraft sweep --profile paper --grid full` on a GPU. Finished runs come
# from the experiment cache, so an interrupted sweep resumes where it stopped.

# %% tags=["parameters"]
datasets = None  # None: the grid's data sets; or a subset, e.g. ["cifar10"]
profile = "cpu"
grid = "default"  # "default": the profile's grid; "full": N in 1..10, 20, 50 x both data sets x 3 seeds (GPU)
seeds = None  # None: the grid's seeds; or a subset, e.g. [0]
device = "auto"
data_root = "../data"
output_root = "../outputs"

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from nbgraft import plots
from nbgraft.runs import report
from nbgraft.runs import sweep as S
from nbgraft.runs.experiments import check_parameters
from nbgraft.profiles import get_profile

plots.set_theme()
check_parameters(datasets=datasets, seeds=seeds, profile=profile)
prof = get_profile(profile)
the_grid = S.get_grid(grid, prof)
if datasets is not None or seeds is not None:
    the_grid = the_grid.restrict(datasets=datasets, seeds=seeds)
table = S.run_sweep(the_grid, prof, data_root=data_root, output_root=output_root, device=device,
                    table_name="06_sweep")
details = S.graft_details(table, output_root)
minutes = table.groupby("method")["wall_s"].sum() / 60
display(Markdown(
    f"Profile **{prof.name}**, grid **{grid}**: {len(table)} runs on {', '.join(sorted(table.dataset.unique()))} "
    f"({table.device.iloc[0]}). Their measured training time adds up to **{table.wall_s.sum() / 60:.1f} min** "
    f"({', '.join(f'{m}: {v:.1f}' for m, v in minutes.items())} min; each run's own `wall_s`, whenever it was "
    f"computed). The tidy table, one row per run, is `tables/06_sweep.csv`."
))


# %%
def label(method: str) -> str:
    return S.VARIANT_LABELS.get(method) or report.METHOD_LABELS[method]


def n_seeds(k) -> str:
    """'1 seed', '3 seeds'."""
    return f"{int(k)} seed{'s' if k > 1 else ''}"


def shots_axis(ax, ns) -> None:
    """Log-spaced N axis with the exact N values as ticks."""
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("images per class, N (log scale)")


# %% [markdown]
# ## Accuracy against the number of shots

# %% tags=["hide-input"]
comparison = S.summarise(table[table.method.isin(S.COMPARISON)])
teacher_acc = table.groupby("dataset")["teacher_test_accuracy"].first()
shown_ds = list(comparison.dataset.unique())
fig, axes = plt.subplots(1, len(shown_ds), figsize=(plots.BOOK_WIDTH_IN, 3.6), squeeze=False)
for ax, ds in zip(axes[0], shown_ds):
    sub = comparison[comparison.dataset == ds]
    for method in S.COMPARISON:
        m = sub[sub.method == method].sort_values("shots")
        if len(m):
            ax.errorbar(m.shots, m.accuracy_mean, yerr=m.accuracy_std.fillna(0), marker="o", capsize=3,
                        label=label(method))
    plots.teacher_line(ax, teacher_acc[ds])
    shots_axis(ax, sorted(sub.shots.unique()))
    ax.set(ylabel="test accuracy (%)", title=f"{ds} (teacher: {teacher_acc[ds]:.1f}%)", ylim=(0, 100))
    ax.legend()
plots.shared_legend(fig, axes[0], teacher_prefix="teacher", bottom=0.2)
plots.save_figure(fig, "06_accuracy_vs_shots", output_root)
plt.show()

# %% tags=["hide-input"]
lines = []
for ds in shown_ds:
    sub = comparison[comparison.dataset == ds].pivot_table(index="shots", columns="method", values="accuracy_mean")
    nseeds = comparison[comparison.dataset == ds].pivot_table(index="shots", columns="method", values="seeds")
    for n, row in sub.iterrows():
        others = [m for m in ("netgraft_paper", "kd_inherited", "kd") if m in row.index and np.isfinite(row[m])]
        if "netgraft" not in row.index or not others:
            continue
        gaps = ", ".join(f"{row['netgraft'] - row[m]:+.1f} points vs {label(m)} ({n_seeds(nseeds.loc[n, m])})"
                         for m in others)
        lines.append(f"- {ds}, N={n}: NetGraft {row['netgraft']:.1f}% ({n_seeds(nseeds.loc[n, 'netgraft'])}; "
                     f"{row['netgraft'] - teacher_acc[ds]:+.1f} points from the teacher's {teacher_acc[ds]:.1f}%); "
                     f"{gaps}.")
display(Markdown("Mean test accuracy of NetGraft (book's recipe), and the difference of its mean to the means of "
                 "the paper's recipe and the KD baselines (seed s draws the same images for every method):\n\n"
                 + "\n".join(lines)))

# %% [markdown]
# ## Ablations: which parts of NetGraft matter
#
# Each variant changes one thing and keeps the rest of its recipe. Removing a stage does not give
# its epochs to the other stage; "whole student at once" trains for as many net-stage epochs as the
# progressive schedule's steps together.

# %% tags=["hide-input"]
ablations = S.ablation_summary(table, details)
plots.save_table(ablations.assign(label=ablations.method.map(label)), "06_ablations", output_root)
diffs = ablations.dropna(subset=["difference_mean"])
groups = list(diffs.groupby(["dataset", "shots"], sort=True))
fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(plots.BOOK_WIDTH_IN, 3.6), squeeze=False, sharey=True)
for ax, ((ds, n), sub) in zip(axes[0], groups):
    y = np.arange(len(sub))[::-1]
    err = np.vstack([sub.difference_mean - sub.ci95_low, sub.ci95_high - sub.difference_mean]).clip(min=0)
    colours = ["C3" if r else "0.6" for r in sub.resolved]
    ax.barh(y, sub.difference_mean, xerr=np.nan_to_num(err), color=colours, capsize=3)
    ax.axvline(0, color="0.2", linewidth=0.8)
    ax.set_yticks(y, [label(m) for m in sub.method], fontsize=7)
    ax.set_title(f"{ds}, N={n}\n({n_seeds(sub.seeds.min())})", fontsize=9)
fig.supxlabel("variant minus its recipe (points)", fontsize=9)
fig.tight_layout()
plots.save_figure(fig, "06_ablations", output_root)
plt.show()
display(ablations.assign(
    variant=ablations.method.map(label),
    accuracy=[report.pm(m, s) for m, s in zip(ablations.accuracy_mean, ablations.accuracy_std)],
    difference=[f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(m) and np.isfinite(lo) else
                (f"{m:+.2f}" if np.isfinite(m) else "") for m, lo, hi in
                zip(ablations.difference_mean, ablations.ci95_low, ablations.ci95_high)],
)[["dataset", "shots", "variant", "seeds", "accuracy", "difference", "fold_max_abs_logit_diff",
   "fold_same_predictions"]].style.hide(axis="index"))

# %% tags=["hide-input"]
text = []
for (ds, n), sub in groups:
    called = [f"{label(r.method)} {r.difference_mean:+.1f} [{r.ci95_low:+.1f}, {r.ci95_high:+.1f}]"
              for r in sub.itertuples() if r.resolved]
    open_ = [label(r.method) for r in sub.itertuples() if not r.resolved]
    text.append(f"- {ds}, N={n}: " + (("differences resolved by their intervals: " + "; ".join(called) + ". ")
                                      if called else "no difference is resolved by its interval. ")
                + (f"Not resolved (interval contains zero, or one seed): {', '.join(open_)}." if open_ else ""))
fold_ok = bool(details.fold_same_predictions.all())
display(Markdown(
    "Paired differences in points, variant minus its recipe on the same draws, with 95% t-intervals over "
    "seeds:\n\n" + "\n".join(text) + "\n\n"
    f"**Adapters kept vs folded.** Over all {len(details)} grafting runs of this sweep, folding each adapter "
    f"pair into one 1x1 conv changed the test logits by at most {details.fold_max_abs_logit_diff.max():.2e} and "
    + ("changed no prediction: the folded student is the grafted network." if fold_ok else
       (f"changed a prediction in {int((~details.fold_same_predictions).sum())} run(s). With logit changes this "
        "small (float rounding of the folded product) that is a test image whose top two logits were tied to "
        "within rounding, not a different network; a change of 1e-3 or more would be a bug."
        if details.fold_max_abs_logit_diff.max() < 1e-3 else
        f"changed predictions in {int((~details.fold_same_predictions).sum())} run(s): a bug to fix."))
))

# %% [markdown]
# ## Beside the paper's numbers
#
# The paper's values are **quoted, not computed here** (Shen et al., AAAI 2021: VGG16 teacher and
# student, mean ± std, the best test epoch of 5 runs on one draw). Our teacher is not the paper's
# (see below), so we also report how far each student stays below its own teacher. Compared here:
# the paper's recipe as run at this profile.

# %% tags=["hide-input"]
vs = S.versus_paper(table[table.method == "netgraft_paper"].assign(method="netgraft"))
plots.save_table(vs.assign(profile=prof.name), "06_vs_paper", output_root)
if vs.empty:
    display(Markdown("This grid ran no N for which the paper reports a number (it reports N = 1, 5 and 10)."))
else:
    display(vs.assign(
        ours=[report.pm(m, s) for m, s in zip(vs.ours_mean, vs.ours_std)],
        paper_quoted=[report.pm(m, s) for m, s in zip(vs.paper_mean, vs.paper_std)],
    )[["dataset", "shots", "seeds", "ours", "our_teacher", "ours_below_teacher", "paper_quoted"]]
        .style.hide(axis="index").format(precision=2))
    gap = vs.paper_mean - vs.ours_mean
    agree = gap.abs() <= 2 * (vs.paper_std + vs.ours_std.fillna(0))
    rows = [f"- {r.dataset}, N={r.shots}: ours {report.pm(r.ours_mean, r.ours_std)}% vs the paper's "
            f"{report.pm(r.paper_mean, r.paper_std)}%: "
            + (f"**ours is {g:.1f} points lower**" if g > 0 else f"ours is {-g:.1f} points higher")
            + (" (within two standard deviations)" if a else "") + "."
            for r, g, a in zip(vs.itertuples(), gap, agree)]
    paper = get_profile("paper")
    display(Markdown(
        "\n".join(rows) + "\n\n"
        + (f"Our result disagrees with the paper's wherever it is lower by more than the spreads allow "
           f"({int((~agree).sum())} of {len(vs)} comparisons here). " if (~agree).any() else
           "All comparisons fall within two standard deviations. ")
        + f"The setting differs: profile **{prof.name}** uses a VGG16 at {prof.width:g}x the paper's width"
        + (" with batch norm in its conv blocks" if prof.batch_norm and not paper.batch_norm else "")
        + ", trained here to " + ", ".join(f"{teacher_acc[d]:.1f}% on {d}" for d in vs.dataset.unique())
        + (", and grafting schedules of its own" if prof.recipes != paper.recipes else "")
        + (f"; accuracies are on the first {prof.test_limit} test images" if prof.test_limit else "")
        + ". The absolute numbers are therefore not one-to-one comparable; the distance to the own teacher "
          "(`ours_below_teacher`) is the fairer reading."
    ))

# %% [markdown]
# ## What the sweep costs

# %% tags=["hide-input"]
cost = (table.groupby(["dataset", "method"])
        .agg(runs=("wall_s", "size"), mean_s=("wall_s", "mean"), total_min=("wall_s", lambda s: s.sum() / 60))
        .reset_index())
display(cost.style.hide(axis="index").format(precision=1))
full_runs = len(S.FULL.runs())
display(Markdown(
    f"This grid: {len(table)} runs, {table.wall_s.sum() / 60:.1f} min of measured run time on {table.device.iloc[0]} "
    "(`wall_s`: a NetGraft run's includes its evaluations, a baseline's is its training). "
    f"The full grid (`grid=\"full\"`) has {full_runs} runs and is meant for `profile=\"paper\"` on a GPU: "
    "`python -m nbgraft sweep --profile paper --grid full`."
))
