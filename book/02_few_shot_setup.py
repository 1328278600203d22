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
# # 2. The few-shot setup: data, teacher and baselines
#
# Everything later in the book rests on four things fixed here: the data sets and how they are
# split, the N images per class a student may see, the teacher being compressed, and the
# students NetGraft has to beat on those same N images.

# %% tags=["parameters"]
datasets = ["cifar10", "cifar100"]
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

from nbgraft import data as D
from nbgraft import plots
from nbgraft.runs import report
from nbgraft.evaluate import count_params
from nbgraft.runs.experiments import check_parameters
from nbgraft.profiles import get_profile
from nbgraft.runs.teacher import get_teacher

plots.set_theme()
check_parameters(datasets=datasets, shots=shots, seeds=seeds, profile=profile)
prof = get_profile(profile)
kw = dict(data_root=data_root, output_root=output_root, device=device)
display(Markdown(f"Profile **{prof.name}**, data sets {', '.join(datasets)}, N in {list(shots)}, "
                 f"few-shot seeds {list(seeds)}."))

# %% [markdown]
# ## Data and splits
#
# Both data sets are the real CIFAR images. From each training split we hold out a fixed,
# class-balanced **validation pool**; it is the same for every seed and is the only data used
# to look at training progress. The teacher trains on the rest of the training split. The
# N-shot images are drawn, per class and per seed, from outside the validation pool. The test
# split is only ever used to report numbers.

# %%
rows = []
loaded = {}
for ds in datasets:
    data = loaded[ds] = D.load_dataset(ds, data_root)
    split = D.make_split(data, prof.val_per_class[ds])
    limit = prof.teacher_for(ds).train_limit
    x_test, _ = D.test_arrays(data, prof.test_limit)
    rows.append({"dataset": ds, "classes": data.num_classes, "train_images": len(data.y_train),
                 "validation_pool": len(split.val), "teacher_train_images": min(len(split.teacher_train), limit or 10**9),
                 "test_images_reported": len(x_test), "source": data.source})
datasets_table = pd.DataFrame(rows)
plots.save_table(datasets_table, "02_datasets", output_root)
display(datasets_table)

# %% [markdown]
# ## The N-shot draws
#
# A draw is deterministic in (N, seed) and nested: the N=1 images of a seed are the first
# column of its N=10 images. Below, the largest N of this run for the first seed and the first
# ten classes of the first data set (one row per class).

# %% tags=["hide-input"]
ds0, seed0, n_max = datasets[0], seeds[0], max(shots)
data = loaded[ds0]
val = D.validation_pool(data.y_train, prof.val_per_class[ds0])
draws = {n: D.few_shot_indices(data.y_train, n, seed0, exclude=val) for n in shots}
nested = all(set(draws[a]) <= set(draws[b]) for a in shots for b in shots if a <= b)
classes = list(range(min(10, data.num_classes)))
cols = min(n_max, 10)
idx = draws[n_max]
cell = min(0.7, (plots.BOOK_WIDTH_IN - 1.6) / cols)  # inches per thumbnail
fig, axes = plt.subplots(len(classes), cols, figsize=(cell * cols + 1.6, cell * len(classes) + 0.6), squeeze=False)
for r, c in enumerate(classes):
    picks = idx[data.y_train[idx] == c][:cols]
    for k in range(cols):
        ax = axes[r, k]
        ax.imshow(data.x_train[picks[k]])
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 0:
            name = D.CLASS_NAMES_CIFAR10[c] if ds0 == "cifar10" else f"class {c}"
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        if r == 0:
            ax.set_title(f"shot {k + 1}", fontsize=8)
fig.suptitle(f"{ds0}: the N={n_max} draw of seed {seed0} (first {len(classes)} classes)", fontsize=10)
fig.tight_layout()
plots.save_figure(fig, "02_few_shot_grid", output_root)
plt.show()
display(Markdown(f"Each draw of N images per class holds N x classes images (e.g. {len(draws[n_max])} for N={n_max} "
                 f"on {ds0}); the draws for N in {list(shots)} are nested: **{nested}**; none of them touches the "
                 f"{len(val)}-image validation pool: **{not set(idx) & set(val)}**."))

# %% [markdown]
# ## The teacher
#
# A VGG16 (at the profile's width) trained with SGD, warm-up and cosine decay, crop-and-flip
# augmentation and label smoothing. It is trained once per data set and profile and then read
# from the cache. Its test accuracy, measured once at the end, is the ceiling every student is
# compared with (the dashed line in later figures).

# %%
teachers = {}
hist = []
for ds in datasets:
    model, m = get_teacher(ds, prof, **kw)
    teachers[ds] = m
    hist += [{"dataset": ds, **h} for h in m["history"]]
    m["params_M"] = count_params(model) / 1e6
hist = pd.DataFrame(hist)
teacher_table = pd.DataFrame([{"dataset": ds, "width": prof.width, "epochs": len(m["history"]), "params_M": m["params_M"],
                               "train_images": m["train_images"], "val_accuracy": m["val_accuracy"],
                               "test_accuracy": m["test_accuracy"], "train_min": m["wall_s"] / 60, "device": m["device"]}
                              for ds, m in teachers.items()])
plots.save_table(teacher_table, "02_teachers", output_root)
display(teacher_table.round(2))

# %% tags=["hide-input"]
fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.0))
sns.lineplot(data=hist, x="epoch", y="train_loss", hue="dataset", marker="o", ax=ax_l)
ax_l.set(xlabel="epoch", ylabel="training loss (cross-entropy, nats)", title="training loss")
acc = hist.melt(id_vars=["dataset", "epoch"], value_vars=["train_accuracy", "val_accuracy"], var_name="split",
                value_name="accuracy")
acc["split"] = acc["split"].str.replace("_accuracy", "")
sns.lineplot(data=acc, x="epoch", y="accuracy", hue="dataset", style="split", marker="o", ax=ax_a)
for k, (ds, m) in enumerate(teachers.items()):
    ax_a.axhline(m["test_accuracy"], **{**plots.TEACHER_STYLE, "color": f"C{k}", "linestyle": ":"})
ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (dotted: final test accuracy)")
ax_a.legend(fontsize=7)
fig.tight_layout()
plots.save_figure(fig, "02_teacher_curves", output_root)
plt.show()
display(Markdown(" ".join(
    f"The {ds} teacher reaches **{m['test_accuracy']:.2f}%** test accuracy after {len(m['history'])} epochs "
    f"({m['wall_s'] / 60:.1f} min on {m['device']}; validation {m['val_accuracy']:.2f}%)." for ds, m in teachers.items()
)))

# %% [markdown]
# ## Four baselines on the same N shots
#
# All four train the student architecture on the N-shot images only, with the augmentation the book's
# NetGraft uses (random crops and flips, images blended pairwise by mixup), SGD with warm-up and
# cosine decay, at a learning rate and length chosen on the validation pool (chapter 5):
#
# * **labels, from random**: the whole student from random weights, on the images' labels (cross-entropy);
# * **KD, from random**: the same from the teacher's softened logits on the images, no labels (Hinton's
#   distillation), the natural few-shot competitor of NetGraft;
# * **labels / KD, teacher's blocks kept**: the NetGraft student keeps the teacher's blocks before the
#   first thin one. These two do too (frozen, exactly the teacher's) and train only the rest from random
#   weights, so that "NetGraft beats KD" does not mix grafting with inheriting trained blocks.

# %%
runs = [m for method in report.BASELINES for m in report.run_grid(method, datasets, shots, seeds, prof, **kw)]
df = report.runs_frame(runs)
summary = report.summarise(df).merge(
    df.groupby("dataset")["teacher_test_accuracy"].first().reset_index(), on="dataset")
plots.save_table(summary, "02_baselines", output_root)
display(summary.round(2))

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, len(datasets), figsize=(plots.BOOK_WIDTH_IN, 3.6), squeeze=False)
for ax, ds in zip(axes[0], datasets):
    sub = df[df.dataset == ds].assign(method=lambda d: d["method"].map(report.METHOD_LABELS))
    sns.lineplot(data=sub, x="shots", y="test_accuracy", hue="method", marker="o", errorbar="sd", err_style="bars",
                 hue_order=[report.METHOD_LABELS[m] for m in report.BASELINES], ax=ax)
    plots.teacher_line(ax, teachers[ds]["test_accuracy"])
    ax.set(xlabel="images per class, N", ylabel="test accuracy (%)", xticks=sorted(shots), ylim=(0, 100),
           title=f"{ds} (teacher: {teachers[ds]['test_accuracy']:.1f}%)")
plots.shared_legend(fig, axes[0], teacher_prefix="teacher", bottom=0.16)
plots.save_figure(fig, "02_baselines", output_root)
plt.show()

# %% tags=["hide-input"]
lines = []
for ds in datasets:
    s = summary[summary.dataset == ds].set_index(["method", "shots"])["test_accuracy_mean"]
    n = max(shots)
    lines.append(f"On {ds} with N={n}: " + ", ".join(f"{report.METHOD_LABELS[m]} {s[(m, n)]:.2f}%"
                                                    for m in report.BASELINES)
                 + f", against {teachers[ds]['test_accuracy']:.2f}% for the teacher (mean over {df.seed.nunique()} "
                 "seed(s)).")
display(Markdown(" ".join(lines) + " Keeping the teacher's first blocks is worth most of what these students "
                 "reach; NetGraft is measured against both kinds in chapters 4 and 5."))
