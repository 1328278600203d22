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
# # 3. Block grafting: one student block at a time
#
# The first stage of NetGraft trains each thin student block on its own. The block, with its
# 1x1 adapters, takes the place of the matching teacher block; every other block is the
# teacher's and stays frozen (batch-norm statistics included), and only the grafted block and
# its adapters learn, to make the hybrid network's logits match the teacher's on the N-shot
# images (augmented). The loss is the squared distance between the L2-normalised logit vectors
# of hybrid and teacher. No labels are used.
#
# Because each block is trained in a network that is otherwise the teacher, this stage asks a
# small question per block: can a half-width block do its teacher block's job from N images?
# This chapter answers it per block with two numbers: the grafting loss over training, and the
# test accuracy of the teacher with just that block grafted.

# %% tags=["parameters"]
dataset = "cifar10"
profile = "cpu"
shots = [1, 5, 10]
seeds = [0]
device = "auto"
data_root = "../data"
output_root = "../outputs"

# %%
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from nbgraft import plots, report
from nbgraft.profiles import get_profile

plots.set_theme()
prof = get_profile(profile)
sched = prof.graft_for(dataset)
runs = report.run_grid("netgraft", dataset, shots, seeds, prof, data_root=data_root, output_root=output_root,
                       device=device)
teacher_acc = runs[0]["teacher_test_accuracy"]
per_n = f" x N/{sched.lr_reference_shots}" if sched.lr_scale(1) != 1 else ""  # the paper scales learning rates with N
batch = ", ".join(f"{sched.batch_size(n, runs[0]['teacher_spec']['num_classes'])} (N={n})" for n in shots)
display(Markdown(
    f"NetGraft on **{dataset}**, profile **{prof.name}**, N in {list(shots)}, seeds {list(seeds)}: "
    f"{len(runs)} runs. Block stage: {'/'.join(map(str, sched.block_epochs))} epochs for the three blocks, Adam at "
    f"{'/'.join(f'{lr:g}' for lr in sched.block_lr)}{per_n} (adapters {sched.block_adapter_lr:g}{per_n}), "
    f"loss `{sched.loss}`, batch size {batch}; "
    f"it took {sum(m['block_stage_s'] for m in runs) / 60:.1f} min of training in all."
))

# %% [markdown]
# ## Grafting loss per block
#
# One curve per N (mean over seeds, band: one standard deviation across seeds where there are
# several). The loss is measured on the augmented N-shot images the block is trained on.

# %% tags=["hide-input"]
losses = report.loss_frame(runs, "block_losses")
labels = list(dict.fromkeys(losses["label"]))
fig, axes = plt.subplots(1, len(labels), figsize=(plots.BOOK_WIDTH_IN, 2.9), sharey=True, squeeze=False)
for ax, label in zip(axes[0], labels):
    sub = losses[losses.label == label]
    sns.lineplot(data=sub, x="epoch", y="loss", hue="shots", palette="viridis", errorbar="sd", ax=ax,
                 legend=ax is axes[0][-1])
    ax.set(title=label, xlabel="epoch", ylabel="grafting loss (normalised-logit MSE)", yscale="log")
axes[0][-1].legend(title="N", fontsize=7, title_fontsize=7)
fig.tight_layout()
plots.save_figure(fig, "03_block_losses", output_root)
plt.show()

first_last = (losses.groupby(["label", "shots", "epoch"])["loss"].mean().reset_index()
              .sort_values("epoch").groupby(["label", "shots"])["loss"].agg(["first", "last"]).reset_index())
n = max(shots)
fl = first_last[first_last.shots == n]
display(Markdown(f"With N={n}, the mean loss falls from epoch 1 to the last epoch by a factor of " + ", ".join(
    f"{r['first'] / r['last']:.1f} for {r['label']}" for _, r in fl.iterrows()) + "."))

# %% [markdown]
# ## The teacher with one block grafted
#
# After the block stage, each grafted block is scored inside the otherwise unchanged teacher:
# top-1 accuracy on the test set, and agreement (how often the hybrid predicts the teacher's
# class). The dashed line is the teacher alone.

# %% tags=["hide-input"]
blocks = report.stage_frame(runs, "blocks")
fig, ax = plt.subplots(figsize=(plots.BOOK_WIDTH_IN, 3.2))
sns.pointplot(data=blocks, x="shots", y="test_accuracy", hue="label", dodge=0.3, errorbar="sd", markers="o",
              linewidth=1.5, ax=ax)
plots.teacher_line(ax, teacher_acc)
ax.set(xlabel="images per class, N", ylabel="test accuracy (%)",
       title=f"{dataset}: the teacher with one student block grafted")
ax.legend(fontsize=7, title=None)
fig.tight_layout()
plots.save_figure(fig, "03_block_accuracy", output_root)
plt.show()

# %%
table = (blocks.groupby(["shots", "label"])
         .agg(test_accuracy_mean=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy", "std"),
              test_agreement_mean=("test_agreement", "mean"), val_accuracy_mean=("val_accuracy", "mean"),
              seeds=("seed", "nunique"))
         .reset_index().rename(columns={"label": "grafted"}))
table.insert(0, "dataset", dataset)
table["teacher_test_accuracy"] = teacher_acc
table["drop_vs_teacher"] = teacher_acc - table["test_accuracy_mean"]
plots.save_table(table, "03_blocks", output_root)
display(table.round(2))
worst = table[table.shots == n].sort_values("drop_vs_teacher").iloc[-1]
best = table[table.shots == n].sort_values("drop_vs_teacher").iloc[0]
display(Markdown(
    f"With N={n}, the closest single graft to the teacher ({teacher_acc:.2f}%) is {best['grafted']} at "
    f"{best['test_accuracy_mean']:.2f}% (a drop of {best['drop_vs_teacher']:.2f} points), the furthest {worst['grafted']} at "
    f"{worst['test_accuracy_mean']:.2f}% (a drop of {worst['drop_vs_teacher']:.2f} points); with N={min(shots)} the "
    f"drops range from {table[table.shots == min(shots)]['drop_vs_teacher'].min():.2f} to "
    f"{table[table.shots == min(shots)]['drop_vs_teacher'].max():.2f} points. Each number is one student block "
    "in an otherwise intact teacher; chapter 4 shows what happens when they are put together."
))
