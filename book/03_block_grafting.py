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
# its adapters learn, to make the hybrid network match the teacher on the N-shot images
# (augmented). No labels are used.
#
# Because each block is trained in a network that is otherwise the teacher, this stage asks a
# small question per block: can a thin block do its teacher block's job from N images? This
# chapter answers it for both recipes of the book. The **paper's** starts every student block from
# random weights and matches the teacher's logits (the squared distance of the L2-normalised
# logit vectors). The **book's** starts each student block as its teacher block restricted to the
# channels it keeps (BatchNorm folded in, the adapters as selection and embedding maps, so the
# hybrid starts as the pruned teacher), matches the teacher's features where the block hands over
# to the next teacher block, and blends pairs of augmented images (mixup) so the few images give
# more points to match the teacher on.

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
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from nbgraft import plots
from nbgraft.runs import report
from nbgraft.runs.experiments import check_parameters
from nbgraft.profiles import get_profile

plots.set_theme()
check_parameters(datasets=dataset, shots=shots, seeds=seeds, profile=profile)
prof = get_profile(profile)
kw = dict(data_root=data_root, output_root=output_root, device=device)
RECIPES = {"netgraft": "book's recipe", "netgraft_paper": "paper's recipe"}
runs = {m: report.run_grid(m, dataset, shots, seeds, prof, **kw) for m in RECIPES}
teacher_acc = runs["netgraft"][0]["teacher_test_accuracy"]


def describe(method: str) -> str:
    g = prof.graft_for(dataset, method=method)
    per_n = f" x N/{g.lr_reference_shots}" if g.lr_scale(1) != 1 else ""
    loss = (f"features at the block's exit (weight {g.feature_weight:g})" + (" and logits" if g.logit_weight else "")
            if g.feature_weight else f"logits (`{g.loss}`)")
    return (f"{RECIPES[method]}: init `{g.init}`, {'/'.join(map(str, g.block_epochs))} epochs, Adam at "
            f"{'/'.join(f'{lr:g}' for lr in g.block_lr)}{per_n} (adapters {g.block_adapter_lr:g}{per_n}), loss on "
            f"{loss}{', mixup' if g.mixup else ''}; {sum(m['block_stage_s'] for m in runs[method]) / 60:.1f} min of "
            "block-stage training in all")


display(Markdown(f"**{dataset}**, profile **{prof.name}**, N in {list(shots)}, seeds {list(seeds)}.\n\n"
                 + "\n".join(f"- {describe(m)}." for m in RECIPES)))


# %% [markdown]
# ## The method's own code, at work on a toy
#
# Beside the real runs, the package's own pieces on a toy teacher of three blocks (random weights, so its
# numbers mean nothing) and 20 real training images: `GraftParts.around` builds the thin student tail
# from position 1 on with a 1x1 adapter wherever the widths differ, and `graft_blocks` trains each grafted
# unit (adapter, block, adapter) alone inside the frozen teacher. The loss printed per epoch is what this
# chapter plots for the real teacher below.

# %%
import torch  # noqa: E402
from torch import nn  # noqa: E402

from nbgraft import data as D  # noqa: E402
from nbgraft.grafting import GraftParts, graft_blocks  # noqa: E402
from nbgraft.models import BlockNet  # noqa: E402
from nbgraft.schedules import GraftSchedule  # noqa: E402

torch.manual_seed(0)
toy = BlockNet([nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()),  # widths: 3 in, 16, 16, 10 logits
                nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))], widths=[3, 16, 16, 10]).eval()
thin = [nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))]
toy_parts = GraftParts.around(toy.widths, first=1, blocks=thin, student_widths=[6, 6, 10])
x_toy = D.to_tensor(D.load_dataset(dataset, data_root).x_train[:20], dataset)
toy_sched = GraftSchedule(block_epochs=(5,), net_epochs=(0,), scale_lr_with_shots=False)
print(toy_parts.unit(1))  # what takes teacher block 1's place
{unit: [round(v, 3) for v in losses] for unit, losses in graft_blocks(toy, toy_parts, x_toy, toy_sched, 2).losses.items()}

# %% [markdown]
# ## The teacher with one block grafted
#
# After the block stage, each grafted block is scored inside the otherwise unchanged teacher:
# top-1 accuracy on the test set. The dashed line is the teacher alone.

# %% tags=["hide-input"]
blocks = pd.concat([report.stage_frame(r, "blocks").assign(recipe=RECIPES[m]) for m, r in runs.items()])
fig, axes = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.3), sharey=True)
for ax, (m, name) in zip(axes, RECIPES.items()):
    sns.pointplot(data=blocks[blocks.recipe == name], x="shots", y="test_accuracy", hue="label", dodge=0.3,
                  errorbar="sd", markers="o", linewidth=1.5, ax=ax)
    plots.teacher_line(ax, teacher_acc)
    ax.set(xlabel="images per class, N", ylabel="test accuracy (%)", title=name)
    ax.legend(fontsize=7, title=None, loc="lower right")
fig.suptitle(f"{dataset}: the teacher with one student block grafted", fontsize=10)
fig.tight_layout()
plots.save_figure(fig, "03_block_accuracy", output_root)
plt.show()

table = (blocks.groupby(["recipe", "shots", "label"])
         .agg(test_accuracy_mean=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy", "std"),
              test_agreement_mean=("test_agreement", "mean"), val_accuracy_mean=("val_accuracy", "mean"),
              seeds=("seed", "nunique"))
         .reset_index().rename(columns={"label": "grafted"}))
table.insert(0, "dataset", dataset)
table["teacher_test_accuracy"] = teacher_acc
table["drop_vs_teacher"] = teacher_acc - table["test_accuracy_mean"]
plots.save_table(table, "03_blocks", output_root)
display(table.round(2))

n0, n1 = min(shots), max(shots)
first = table.grafted.iloc[0]
by = table.set_index(["recipe", "shots", "grafted"])["drop_vs_teacher"]
worst = {name: table[(table.recipe == name) & (table.shots == n0)].sort_values("drop_vs_teacher").iloc[-1]
         for name in RECIPES.values()}
display(Markdown(
    f"With the paper's recipe, the block that costs most on its own at N={n0} is **{worst[RECIPES['netgraft_paper']].grafted}** "
    f"({worst[RECIPES['netgraft_paper']].drop_vs_teacher:.2f} points under the teacher; at N={n1}: "
    f"{by[(RECIPES['netgraft_paper'], n1, worst[RECIPES['netgraft_paper']].grafted)]:.2f}). Started from the teacher, "
    f"the same block costs {by[(RECIPES['netgraft'], n0, worst[RECIPES['netgraft_paper']].grafted)]:.2f} points at N={n0} "
    f"and {by[(RECIPES['netgraft'], n1, worst[RECIPES['netgraft_paper']].grafted)]:.2f} at N={n1}; the later blocks "
    "cost little either way."
))

# %% [markdown]
# ## Why the first thin block is the hard one
#
# Every few epochs of the block stage, each block alone in the teacher was scored on the
# validation pool (never the test set). Next to its grafting loss, this shows what the block
# learns. The first thin block sits earliest: everything the teacher computes after it depends on
# its output, so it has the most to get right, and from a random start the N-shot images pin down
# little of it: its loss keeps falling while the validation accuracy stalls far below the teacher.
# Started from the teacher, it begins at the pruned teacher's accuracy and the dense feature target
# (every channel at every position, not 10 logits per image) keeps it close to the teacher.

# %% tags=["hide-input"]
curves = pd.DataFrame([{"recipe": RECIPES[m], "shots": r["shots"], "seed": r["seed"],
                        "label": report.part_label(part), "epoch": e, "val_accuracy": v}
                       for m, rs in runs.items() for r in rs for part, pts in r.get("block_val_curves", {}).items()
                       for e, v in pts])
losses = pd.concat([report.loss_frame(r, "block_losses").assign(recipe=RECIPES[m]) for m, r in runs.items()])
fig, axes = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.0))
if len(curves):
    sub = curves[curves.label == first]
    sns.lineplot(data=sub, x="epoch", y="val_accuracy", hue="shots", style="recipe", palette="viridis",
                 errorbar="sd", ax=axes[0])
    plots.teacher_line(axes[0], runs["netgraft"][0]["teacher_val_accuracy"], label="teacher")
    axes[0].set(title=f"{first} alone: validation accuracy", ylabel="validation accuracy (%)", xlabel="block-stage epoch")
    axes[0].legend(fontsize=6)
sub = losses[losses.label == first]
sns.lineplot(data=sub, x="epoch", y="loss", hue="shots", style="recipe", palette="viridis", errorbar="sd", ax=axes[1],
             legend=False)
axes[1].set(title=f"{first}: grafting loss", yscale="log", xlabel="block-stage epoch",
            ylabel="training loss (each recipe its own)")
fig.tight_layout()
plots.save_figure(fig, "03_first_block", output_root)
plt.show()
if len(curves):
    last_ep = curves.groupby(["recipe", "shots", "label"])["epoch"].transform("max")
    ends = curves[(curves.epoch == last_ep) & (curves.label == first)].groupby(["recipe", "shots"])["val_accuracy"].mean()
    starts = curves[(curves.epoch == 0) & (curves.label == first)].groupby(["recipe", "shots"])["val_accuracy"].mean()
    display(Markdown(" ".join(
        f"{name}, N={n}: {first} alone starts at {starts[(name, n)]:.1f}% and ends at {ends[(name, n)]:.1f}% on the "
        "validation pool." for name in RECIPES.values() for n in (n0, n1) if (name, n) in ends.index)))

# %% [markdown]
# ## Grafting loss per block, book's recipe
#
# One curve per N (mean over seeds, band: one standard deviation where there are several). The
# loss is measured on the (augmented, mixed) N-shot images the block is trained on.

# %% tags=["hide-input"]
book_losses = losses[losses.recipe == RECIPES["netgraft"]]
labels = list(dict.fromkeys(book_losses["label"]))
fig, axes = plt.subplots(1, len(labels), figsize=(plots.BOOK_WIDTH_IN, 2.9), sharey=True, squeeze=False)
for ax, label in zip(axes[0], labels):
    sns.lineplot(data=book_losses[book_losses.label == label], x="epoch", y="loss", hue="shots", palette="viridis",
                 errorbar="sd", ax=ax, legend=ax is axes[0][-1])
    ax.set(title=label, xlabel="epoch", ylabel="grafting loss", yscale="log")
axes[0][-1].legend(title="N", fontsize=7, title_fontsize=7)
fig.tight_layout()
plots.save_figure(fig, "03_block_losses", output_root)
plt.show()
