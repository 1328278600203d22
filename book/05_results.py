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
# # 5. Results beside the paper's
#
# The headline comparison: the NetGraft student's test accuracy for each data set and N, as the
# mean and standard deviation over the few-shot seeds that were run, next to the numbers the
# paper reports for its VGG16 on CIFAR-10 and CIFAR-100, and next to our two baselines.

# %% tags=["parameters"]
datasets = ["cifar10", "cifar100"]
profile = "cpu"
shots = [1, 5, 10]
seeds = [0]
device = "auto"
data_root = "../data"
output_root = "../outputs"

# %% [markdown]
# The paper's numbers are **quoted, not computed here**: NetGraft's top-1 test accuracy (%) with
# a VGG16 teacher and its half-width student, mean ± std, from Shen et al., AAAI 2021.

# %%
PAPER_QUOTED = {  # (data set, N) -> (mean, std) in %, copied from the paper; no run of ours produced these
    ("cifar10", 1): (90.74, 0.49), ("cifar10", 5): (92.88, 0.07), ("cifar10", 10): (92.89, 0.06),
    ("cifar100", 1): (64.22, 0.17), ("cifar100", 5): (68.16, 0.20), ("cifar100", 10): (68.86, 0.03),
}

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from nbgraft import plots, report
from nbgraft.profiles import PROFILES, get_profile

plots.set_theme()
prof = get_profile(profile)
kw = dict(data_root=data_root, output_root=output_root, device=device)
runs = [m for method in report.METHODS for m in report.run_grid(method, datasets, shots, seeds, prof, **kw)]
df = report.runs_frame(runs)
teacher_acc = df.groupby("dataset")["teacher_test_accuracy"].first()
summary = report.summarise(df)
display(Markdown(f"Profile **{prof.name}**: {len(runs)} runs ({', '.join(datasets)}; N in {list(shots)}; "
                 f"seeds {list(seeds)}; NetGraft, KD and scratch), {df.wall_s.sum() / 60:.1f} min of training in all."))

# %% tags=["hide-input"]
# unstack, not pivot_table: a single seed's std is all NaN, and pivot_table would drop that column
wide = summary.set_index(["dataset", "shots", "method"])[["test_accuracy_mean", "test_accuracy_std"]].unstack("method")
results = pd.DataFrame({"dataset": [d for d, _ in wide.index], "shots": [n for _, n in wide.index]})
results["seeds"] = summary.groupby(["dataset", "shots"])["seeds"].min().to_numpy()
results["teacher_accuracy"] = results["dataset"].map(teacher_acc)
for method in report.METHODS:
    results[f"{method}_accuracy_mean"] = wide[("test_accuracy_mean", method)].to_numpy()
    results[f"{method}_accuracy_std"] = wide[("test_accuracy_std", method)].to_numpy()
quoted = [PAPER_QUOTED.get((d, n), (np.nan, np.nan)) for d, n in zip(results.dataset, results.shots)]
results["paper_netgraft_accuracy_mean"] = [q[0] for q in quoted]
results["paper_netgraft_accuracy_std"] = [q[1] for q in quoted]
results["profile"] = prof.name
plots.save_table(results, "05_results", output_root)

shown = pd.DataFrame({
    "data set": results.dataset, "N": results.shots, "seeds": results.seeds,
    "teacher (ours)": results.teacher_accuracy.map("{:.2f}".format),
    **{f"{report.METHOD_LABELS[k]} (ours)": [report.pm(m, s) for m, s in
                                            zip(results[f"{k}_accuracy_mean"], results[f"{k}_accuracy_std"])]
       for k in report.METHODS},
    "NetGraft, paper (quoted)": [report.pm(m, s) if np.isfinite(m) else "not reported" for m, s in
                                 zip(results.paper_netgraft_accuracy_mean, results.paper_netgraft_accuracy_std)],
})
display(shown.style.hide(axis="index"))

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, len(datasets), figsize=(plots.BOOK_WIDTH_IN, 3.6), squeeze=False)
for ax, ds in zip(axes[0], datasets):
    sub = df[df.dataset == ds].assign(method=lambda d: d["method"].map(report.METHOD_LABELS))
    sns.lineplot(data=sub, x="shots", y="test_accuracy", hue="method", hue_order=[report.METHOD_LABELS[k] for k in
                 report.METHODS], marker="o", errorbar="sd", err_style="bars", ax=ax)
    paper = [(n, *PAPER_QUOTED[(ds, n)]) for n in sorted(shots) if (ds, n) in PAPER_QUOTED]
    if paper:
        ns, means, stds = zip(*paper)
        ax.errorbar(ns, means, yerr=stds, fmt="D", mfc="white", mec="black", ecolor="black", ms=6,
                    label="NetGraft, paper (quoted)")
    plots.teacher_line(ax, teacher_acc[ds], label="our teacher")
    ax.set(xlabel="images per class, N", ylabel="test accuracy (%)", title=f"{ds} (our teacher: {teacher_acc[ds]:.1f}%)",
           xticks=sorted(shots), ylim=(0, 100))
plots.shared_legend(fig, axes[0], teacher_prefix="our teacher", bottom=0.13)
plots.save_figure(fig, "05_results", output_root)
plt.show()

# %% [markdown]
# ## How far our setting is from the paper's

# %% tags=["hide-input"]
paper = PROFILES["paper"]
net = df[df.method == "netgraft"]
devices = sorted({m["device"] for m in runs})
gaps = []
for ds in datasets:
    r = results[(results.dataset == ds) & results.paper_netgraft_accuracy_mean.notna()]
    for _, row in r.iterrows():
        gaps.append(f"{ds} N={row.shots}: {row.netgraft_accuracy_mean:.2f}% vs {row.paper_netgraft_accuracy_mean:.2f}%")
best = results.loc[results.groupby("dataset")["shots"].idxmax()]
ratio = "; ".join(f"{row.dataset} at N={row.shots}: {100 * row.netgraft_accuracy_mean / row.teacher_accuracy:.1f}% of our "
                  f"teacher's accuracy (KD: {100 * row.kd_accuracy_mean / row.teacher_accuracy:.1f}%)"
                  for _, row in best.iterrows())
differs = []
if prof.width != paper.width or prof.batch_norm != paper.batch_norm:
    differs.append(f"our teacher is a VGG16 at {prof.width:g}x the paper's width"
                   f"{' with batch norm in its conv blocks' if prof.batch_norm and not paper.batch_norm else ''}, trained for "
                   + " and ".join(f"{prof.teacher_for(d).epochs} epochs on {d} ({teacher_acc[d]:.2f}%)" for d in datasets)
                   + ", on the training split minus our validation pool")
else:
    differs.append("our teacher has the paper's architecture, trained here to "
                   + " and ".join(f"{teacher_acc[d]:.2f}% on {d}" for d in datasets))
for d in datasets:
    ours, theirs = prof.graft_for(d), paper.graft_for(d)
    if (ours.block_epochs, ours.net_epochs) != (theirs.block_epochs, theirs.net_epochs):
        differs.append(f"on {d} grafting runs {'/'.join(map(str, ours.block_epochs))} block and "
                       f"{'/'.join(map(str, ours.net_epochs))} net epochs instead of the paper's "
                       f"{'/'.join(map(str, theirs.block_epochs))} and {'/'.join(map(str, theirs.net_epochs))}")
    lrs = lambda g: (g.block_lr[0], g.net_lr, g.lr_scale(1))  # noqa: E731
    if lrs(ours) != lrs(theirs):
        differs.append(f"on {d} the learning rates are {ours.block_lr[0]:g} (blocks) and {ours.net_lr:g} (net)"
                       f"{'' if ours.lr_scale(1) != 1 else ', the same for every N'}, where the paper uses "
                       f"{theirs.block_lr[0]:g} and {theirs.net_lr:g}{' scaled by N/10' if theirs.lr_scale(1) != 1 else ''}")
if prof.test_limit:
    differs.append(f"accuracies are on the first {prof.test_limit} test images only")
differs.append(f"everything ran on {', '.join(devices)}")
differs.append(f"our means are over {df.seed.nunique()} few-shot seed(s)"
               + (" (a single seed: no spread here; chapter 6 repeats the sweep over seeds)" if df.seed.nunique() == 1 else ""))
display(Markdown(
    ("Side by side, NetGraft: " + "; ".join(gaps) + ". " if gaps else "")
    + "What differs from the paper: " + "; ".join(differs) + ". "
    + "Because the teachers differ, the absolute accuracies are not comparable one to one, so we also read each "
    f"student against its own teacher: {ratio}."
))
