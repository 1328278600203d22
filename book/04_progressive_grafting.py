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
# # 4. Progressive grafting: growing the student inside the teacher
#
# Blocks grafted one at a time were each trained next to teacher blocks. Put side by side, a
# student block now reads another student block's output, which it never saw. The second stage
# closes that gap step by step: graft the first two student blocks together and fine-tune them
# (blocks and the adapters between them) so the hybrid again matches the teacher's logits; then
# add the next block and fine-tune the longer chain, until the chain reaches the classifier.
# The network at the end of the last step has no teacher block left after block 3: it is the
# student. Folding each pair of adapters between two student blocks into one 1x1 convolution
# makes it a standalone network.
#
# This chapter follows accuracy along the chain for both recipes (the book's trains each step on the
# teacher's features where the chain hands over to the teacher, and on the logits only once the chain
# ends in the classifier; the paper's on the logits alone), compares the final student with the teacher and the four baselines of
# chapter 2, measures what the compression buys, and checks that folding changes no prediction.

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
import torch
from IPython.display import Markdown, display

from nbgraft import data as D
from nbgraft import plots
from nbgraft.runs import report
from nbgraft.device import pick_device
from nbgraft.evaluate import compression_table
from nbgraft.evaluate import report as score
from nbgraft.runs.experiments import check_parameters, load_student
from nbgraft.profiles import get_profile
from nbgraft.runs.teacher import get_teacher

plots.set_theme()
check_parameters(datasets=dataset, shots=shots, seeds=seeds, profile=profile)
prof = get_profile(profile)
kw = dict(data_root=data_root, output_root=output_root, device=device)
RECIPES = {"netgraft": "book's recipe", "netgraft_paper": "paper's recipe"}
by_recipe = {m: report.run_grid(m, dataset, shots, seeds, prof, **kw) for m in RECIPES}
runs = by_recipe["netgraft"]
teacher_acc = runs[0]["teacher_test_accuracy"]
n = max(shots)


def net_stage(method: str) -> str:
    g = prof.graft_for(dataset, method=method)
    per_n = f" x N/{g.lr_reference_shots}" if g.net_lr_scale(1) != 1 else ""
    return (f"{RECIPES[method]}: {g.net_mode} growth, {'/'.join(map(str, g.net_epochs))} epochs per step, Adam at "
            f"{g.net_lr:g}{per_n} (adapters {g.net_adapter_lr:g}{per_n}); "
            f"{sum(m['net_stage_s'] for m in by_recipe[method]) / 60:.1f} min of net-stage training in all")


display(Markdown(f"**{dataset}**, profile **{prof.name}**, N in {list(shots)}, seeds {list(seeds)}.\n\n"
                 + "\n".join(f"- {net_stage(m)}." for m in RECIPES)))


# %% [markdown]
# ## The method's own code, at work on a toy
#
# The net stage on a toy teacher (random weights, numbers meaningless) and 20 real images: `graft_net`
# grows the chain of student units from position 1 to the logits, fine-tuning each chain inside the teacher,
# and `export_student` folds every adapter pair between two student blocks into one map, giving a plain
# `BlockNet` that runs without the teacher.

# %%
from torch import nn  # noqa: E402

from nbgraft.grafting import GraftParts, export_student, graft_blocks, graft_net  # noqa: E402
from nbgraft.models import BlockNet  # noqa: E402
from nbgraft.schedules import GraftSchedule  # noqa: E402

torch.manual_seed(0)
conv = lambda c_in, c_out: nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU())  # noqa: E731
head = lambda c: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))  # noqa: E731
toy = BlockNet([conv(3, 16), conv(16, 16), conv(16, 16), head(16)], widths=[3, 16, 16, 16, 10]).eval()
toy_parts = GraftParts.around(toy.widths, first=1, blocks=[conv(6, 6), conv(6, 6), head(6)], student_widths=[6, 6, 6, 10])
x_toy = D.to_tensor(D.load_dataset(dataset, data_root).x_train[:20], dataset)
toy_sched = GraftSchedule(block_epochs=(3,), net_epochs=(3,), scale_lr_with_shots=False)
graft_blocks(toy, toy_parts, x_toy, toy_sched, 2)
chains = graft_net(toy, toy_parts, x_toy, toy_sched, 2).losses  # chain2-3, then chain2-4: the chain grows
toy_student = export_student(toy, toy_parts)
with torch.no_grad():
    agree = (toy_student(x_toy).argmax(1) == toy(x_toy).argmax(1)).float().mean().item()
print({k: [round(v, 3) for v in vs] for k, vs in chains.items()})
print(f"exported: {len(toy_student)} blocks, {sum(p.numel() for p in toy_student.parameters())} parameters "
      f"(teacher {sum(p.numel() for p in toy.parameters())}), agrees with the toy teacher on {agree:.0%} of the images")

# %% [markdown]
# ## Accuracy as the chain grows
#
# From left to right: the first student block alone (the end of stage 1), then after each
# net-grafting step. The last point is the whole student (before folding).

# %% tags=["hide-input"]
first = min(runs[0]["blocks"], key=lambda k: int(k[5:]))
chain = pd.concat([pd.concat([report.stage_frame(r, "blocks").query("part == @first"),
                              report.stage_frame(r, "chains")]).assign(recipe=RECIPES[m])
                   for m, r in by_recipe.items()])
order = list(dict.fromkeys(chain["label"]))
fig, axes = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.2), sharey=True)
for ax, name in zip(axes, RECIPES.values()):
    sns.pointplot(data=chain[chain.recipe == name], x="label", y="test_accuracy", hue="shots", order=order,
                  palette="viridis", dodge=0.3, errorbar="sd", linewidth=1.5, ax=ax)
    plots.teacher_line(ax, teacher_acc)
    ax.set(xlabel="student blocks grafted into the teacher", ylabel="test accuracy (%)", title=name)
    ax.legend(title="N", fontsize=7, title_fontsize=7, loc="lower right")
fig.suptitle(f"{dataset}: accuracy along the progressive chain", fontsize=10)
fig.tight_layout()
plots.save_figure(fig, "04_chain_accuracy", output_root)
plt.show()
chain["step"] = chain["label"].map(order.index)
steps = (chain.groupby(["recipe", "shots", "step", "label"])
         .agg(test_accuracy_mean=("test_accuracy", "mean"), test_accuracy_std=("test_accuracy", "std"),
              test_agreement_mean=("test_agreement", "mean"), seeds=("seed", "nunique")).reset_index()
         .drop(columns="step").rename(columns={"label": "grafted"}))
steps.insert(0, "dataset", dataset)
steps["teacher_test_accuracy"] = teacher_acc
plots.save_table(steps, "04_chain", output_root)
display(steps.round(2))
walk = {name: steps[(steps.recipe == name) & (steps.shots == n)]["test_accuracy_mean"].tolist() for name in RECIPES.values()}
display(Markdown("With N=" + str(n) + ", from the first block alone to the whole student: " + "; ".join(
    f"{name} {' -> '.join(f'{v:.1f}' for v in w)}%" for name, w in walk.items()) + ". Each net step adds a student "
    "block that so far only ever read the teacher's activations; whether the step loses accuracy depends on how "
    "much of the teacher's behaviour the loss pins down on so few images."))

# %% [markdown]
# The book's recipe's loss at each net step: a step whose chain hands over to the teacher's blocks learns the
# teacher's features there (squared error relative to the teacher's, `nbgraft.grafting.losses.feature_loss`);
# the step whose chain ends in the classifier learns the logits (normalised-logit MSE). The panels' scales
# therefore differ by loss, not only by step.

# %% tags=["hide-input"]
net_losses = report.loss_frame(runs, "net_losses")
labels = list(dict.fromkeys(net_losses["label"]))
fig, axes = plt.subplots(1, len(labels), figsize=(plots.BOOK_WIDTH_IN, 2.8), sharey=True, squeeze=False)
for ax, label in zip(axes[0], labels):
    sns.lineplot(data=net_losses[net_losses.label == label], x="epoch", y="loss", hue="shots", palette="viridis",
                 errorbar="sd", ax=ax, legend=ax is axes[0][-1])
    ax.set(title=f"net step: {label}", xlabel="epoch", ylabel="net-stage loss", yscale="log")
axes[0][-1].legend(title="N", fontsize=7, title_fontsize=7)
fig.tight_layout()
plots.save_figure(fig, "04_net_losses", output_root)
plt.show()

# %% [markdown]
# ## The student against the teacher and the baselines
#
# The final, folded NetGraft students (both recipes) beside the four students of chapter 2 trained
# on the same N-shot images; same architecture, same draws, same test images.

# %%
baselines = [m for method in report.BASELINES for m in report.run_grid(method, dataset, shots, seeds, prof, **kw)]
df = report.runs_frame(runs + by_recipe["netgraft_paper"] + baselines)
final = report.summarise(df).merge(report.summarise(df, value="test_agreement"), on=["dataset", "method", "shots", "seeds"])
final["teacher_test_accuracy"] = teacher_acc
plots.save_table(final, "04_student_vs_baselines", output_root)
display(final.round(2))

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(plots.BOOK_WIDTH_IN, 3.3))
sns.lineplot(data=df.assign(method=df["method"].map(report.METHOD_LABELS)), x="shots", y="test_accuracy", hue="method",
             hue_order=[report.METHOD_LABELS[k] for k in report.BOOK], marker="o", errorbar="sd", err_style="bars",
             ax=ax)
plots.teacher_line(ax, teacher_acc)
ax.set(xlabel="images per class, N", ylabel="test accuracy (%)", xticks=sorted(shots), ylim=(0, 100),
       title=f"{dataset}: students from N images per class")
ax.legend(fontsize=7)
fig.tight_layout()
plots.save_figure(fig, "04_student_vs_baselines", output_root)
plt.show()
acc = final.set_index(["method", "shots"])["test_accuracy_mean"]
display(Markdown(" ".join(
    f"With N={k}, the NetGraft student (book's recipe) reaches **{acc[('netgraft', k)]:.2f}%** test accuracy "
    f"({teacher_acc - acc[('netgraft', k)]:.2f} points under the teacher's {teacher_acc:.2f}%), the paper's recipe "
    f"{acc[('netgraft_paper', k)]:.2f}%, KD keeping the teacher's blocks {acc[('kd_inherited', k)]:.2f}% and KD from "
    f"random {acc[('kd', k)]:.2f}%." for k in sorted({min(shots), n}))))

# %% [markdown]
# ## What the compression buys
#
# Parameters and multiply-accumulates (MACs, convolutions and linear layers, one 32x32 image)
# are counted on the models; latency is the median wall time of a forward pass on this
# machine's CPU, measured here, for one image and for a batch of 128, the teacher with its BatchNorms
# folded into its convolutions (as a deployment runs it, and as the student's own layers are). The student is
# the folded student of the N=max run of the first seed, reloaded from the cache.

# %%
m = next(r for r in runs if r["shots"] == n and r["seed"] == seeds[0])
teacher, _ = get_teacher(dataset, prof, **kw)
student = load_student(m, output_root, device)
threads = torch.get_num_threads()
compression = compression_table({"teacher": teacher, "NetGraft student (folded)": student})
plots.save_table(compression, "04_compression", output_root)
display(compression.round(3))
t, s = compression.iloc[0], compression.iloc[1]
display(Markdown(
    f"The student has {s.params_M:.3f} M parameters against the teacher's {t.params_M:.3f} M "
    f"({100 * s.relative_params:.0f}%), and {s.MMACs:.1f} against {t.MMACs:.1f} MMACs ({100 * s.relative_MMACs:.0f}%). "
    f"On this CPU ({threads} threads) one image takes {s.cpu_latency_ms_batch1:.2f} ms against "
    f"{t.cpu_latency_ms_batch1:.2f} ms, and a batch of 128 {s.cpu_latency_ms_batch128:.1f} ms against "
    f"{t.cpu_latency_ms_batch128:.1f} ms (a speed-up of {t.cpu_latency_ms_batch128 / s.cpu_latency_ms_batch128:.2f}x). Before "
    f"folding, the adapters made the student {m['unfolded_params'] / 1e6:.3f} M parameters. Latencies are measured "
    "on whatever else this machine is running at the time, so they are indicative, not benchmarks."
))

# %% [markdown]
# ## Folding changes no prediction
#
# Each run compared, on the test set, the student with its adapter pairs kept apart and the
# folded one: the largest difference of any logit, and whether any predicted class changed.
# Here, we also reload each folded student from the cache and score it again on the test set.

# %%
data = D.load_dataset(dataset, data_root)
x_test, y_test = D.test_arrays(data, prof.test_limit)
x_test = D.to_tensor(x_test, dataset, pick_device(device))
y_test = torch.from_numpy(y_test).to(x_test.device)
fold = pd.DataFrame([{"dataset": dataset, "shots": r["shots"], "seed": r["seed"],
                      "max_abs_logit_diff": r["fold_max_abs_logit_diff"],
                      "same_predictions": bool(r["fold_same_predictions"]),
                      "recorded_test_accuracy": r["test_accuracy"],
                      "reloaded_test_accuracy": score(load_student(r, output_root, device), x_test, y_test)["accuracy"]}
                     for r in runs])
plots.save_table(fold, "04_fold_check", output_root)
display(fold)
display(Markdown(
    f"Over {len(fold)} runs, the largest logit difference between folded and unfolded students is "
    f"{fold.max_abs_logit_diff.max():.2e}, and the predicted class is the same for every test image in "
    f"{int(fold.same_predictions.sum())} of {len(fold)} runs. The reloaded students score exactly what was recorded in "
    f"{int((fold.recorded_test_accuracy == fold.reloaded_test_accuracy).sum())} of {len(fold)} runs (largest difference "
    f"{(fold.recorded_test_accuracy - fold.reloaded_test_accuracy).abs().max():.2f} points)."
))
