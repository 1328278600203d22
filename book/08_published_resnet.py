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
# # 8. Grafting a published ResNet-56
#
# Every teacher so far was a VGG16 this book trained itself, on a CPU, at a quarter of the paper's
# width. A researcher arrives instead with a network somebody else trained, and a few images per
# class. This chapter takes such a network: the CIFAR-10 **ResNet-56** published by Yerlan Idelbayev
# (`akamaster/pytorch_resnet_cifar10`, BSD-2-Clause; 0.85 M parameters, 93.39 % on the test set), and
# grafts a thinner student into it from 1, 5 and 10 images per class. Nothing is trained on the
# teacher's side: its file is checked (md5, architecture) and scored once.
#
# Two things differ from the VGG chapters. The network is cut into *units* (the stem, each stage in
# groups of residual blocks, the head) instead of VGG blocks; grafting itself does not care (it works
# on any `BlockNet`). And the validation pool, drawn from CIFAR-10's training split, is part of the
# data this teacher was trained on: the teacher is right on almost all of it, so validation accuracy
# here measures how closely a student follows its teacher on images the student never saw, not how
# well it generalises. Every choice was made on it all the same; the test set only reports.

# %% tags=["parameters"]
dataset = "cifar10"  # the published teacher is a CIFAR-10 network
profile = "cpu"
shots = [1, 5, 10]
seeds = [0, 1, 2]
paper_seeds = [0]  # the paper's recipe (random init) costs as much as the book's: one seed by default
baselines = ["kd_inherited", "scratch_inherited"]  # from-random students of this size: see the text
baseline_seeds = [0]
speed = None  # the faster students: True runs them, False skips, None runs on a GPU and reads back when cached
speed_students = None  # names of nbgraft.runs.speed.STUDENTS (None: all of them)
speed_shots = [1, 10]
speed_seeds = [0, 1, 2]
device = "auto"
data_root = "../data"
output_root = "../outputs"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display
from torch import nn

from nbgraft import plots
from nbgraft.runs import report
from nbgraft.runs import tuning
from nbgraft.evaluate import accuracy, compression_table, count_flops, count_params, predict
from nbgraft.runs.experiments import check_parameters, load_student, prepare, student_spec_for
from nbgraft.models import family
from nbgraft.profiles import get_profile

plots.set_theme()
check_parameters(datasets=dataset, shots=shots, seeds=[*seeds, *paper_seeds, *baseline_seeds], profile=profile,
                 teacher="resnet56", methods=baselines)
prof = get_profile(profile)
TEACHER = "resnet56"
kw = dict(teacher=TEACHER, data_root=data_root, output_root=output_root, device=device)
setting = prepare(dataset, max(shots), seeds[0], prof, **kw)
teacher, tm = setting.teacher, setting.teacher_metrics
spec = teacher.spec
s_spec = student_spec_for(spec)
first, _ = family(s_spec).student_blocks(spec, s_spec)
layout = spec.layout()


def unit_name(k: int) -> str:
    u = layout[k]
    if u[0] != "stage":
        return u[0]
    return f"stage {u[1] + 1}, blocks {u[2] + 1}-{u[2] + u[3]}"


units = pd.DataFrame([{"unit": k + 1, "what": unit_name(k), "channels in": teacher.widths[k],
                       "channels out": teacher.widths[k + 1],
                       "parameters": count_params(teacher.blocks[k]),
                       "student's": "own (grafted)" if k >= first else "teacher's, kept"} for k in range(len(teacher))])
display(Markdown(
    f"The published teacher scores **{tm['test_accuracy']:.2f}%** on our test set (its author reports "
    f"{tm['published_test_accuracy']:.2f}%), read from `{tm['weights']}`. It is cut into {len(teacher)} grafting units:"))
display(units.style.hide(axis="index"))

# %% [markdown]
# ## The student
#
# The book's default student for a CIFAR ResNet keeps the teacher's residual streams and thins what
# happens inside the blocks of the last stage: each residual block's first convolution has fewer
# output channels (so the second has fewer inputs). The student has no BatchNorm of its own; a
# student started from its teacher carries the teacher's BatchNorm folded into its convolutions.
# Any other student is one argument away (`student={"widths": (16, 32, 32)}` halves stage 3's
# stream, with 1x1 adapters around every thin unit; `{"mids": ...}` sets the inner widths). How thin is a
# trade-off: on the validation pool a wider inside follows the teacher more closely and saves fewer
# parameters (the probe is in the docstring of `nbgraft.models.resnet.student_spec`); the default is the
# widest that still saves 40 % of the teacher's parameters, the saving this chapter aims at.

# %%
# The whole NetGraft grid runs here, each N's seeds trained together (cheaper than one seed first); the
# example student is the N=max run of the first seed, and the results section below reads the grid back.
netgraft_runs = report.run_grid("netgraft", dataset, shots, seeds, prof, **kw)
student_example = load_student(next(m for m in netgraft_runs if m["shots"] == max(shots) and m["seed"] == seeds[0]),
                               output_root, device)
rows = [{"model": "teacher (published ResNet-56)", "params_M": count_params(teacher) / 1e6,
         "MMACs": count_flops(teacher) / 1e6},
        {"model": "NetGraft student (folded)", "params_M": count_params(student_example) / 1e6,
         "MMACs": count_flops(student_example) / 1e6}]
size = pd.DataFrame(rows)
size["relative_params"] = size.params_M / size.params_M.iloc[0]
size["relative_MMACs"] = size.MMACs / size.MMACs.iloc[0]
display(size.round(3).style.hide(axis="index"))
display(Markdown(
    f"Student widths per stage {s_spec.widths}, inner widths {tuple(s_spec.mid(s) for s in range(3))}: "
    f"**{100 * (1 - size.relative_params.iloc[1]):.0f}% fewer parameters** than the teacher and "
    f"{100 * (1 - size.relative_MMACs.iloc[1]):.0f}% fewer multiply-accumulates. Grafting replaces units "
    f"{first + 1}-{len(teacher)}."))

# %% [markdown]
# ## NetGraft against the baselines
#
# The book's recipe (students started from the teacher, losses on the teacher's features, or on its
# logits where a part ends the network, mixup; for this teacher, no net stage), the paper's recipe at
# this budget (random student blocks, logits only), and the students that keep the
# teacher's units before the first thin one and train the rest from random weights, by KD from the
# teacher's logits or from the labels. Students trained entirely from random weights are left out by
# default: a ResNet-56-sized network trained from scratch costs minutes per run on two CPU cores,
# and chapters 2 and 5 already show how far such students get from a handful of images (pass
# `baselines=["kd", "scratch", ...]` to add them).

# %%
runs = list(netgraft_runs)
runs += report.run_grid("netgraft_paper", dataset, shots, paper_seeds, prof, **kw)
for method in baselines:
    runs += report.run_grid(method, dataset, shots, baseline_seeds, prof, **kw)
df = report.runs_frame(runs)
fidelity = report.fidelity_rows(df)
report.save_fidelity(fidelity, output_root)
shown = fidelity.assign(method=fidelity.method.map(report.METHOD_LABELS),
                        accuracy=[report.pm(m, s) for m, s in zip(fidelity.accuracy_mean, fidelity.accuracy_std)],
                        below_teacher=(fidelity.teacher_accuracy - fidelity.accuracy_mean).round(2))
display(shown[["method", "shots", "seeds", "accuracy", "below_teacher"]].style.hide(axis="index"))
plots.save_table(fidelity, "08_resnet_results", output_root)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(plots.BOOK_WIDTH_IN, 3.4))
order = [m for m in report.BOOK if m in set(df.method)]
sns.lineplot(data=df.assign(method=df.method.map(report.METHOD_LABELS)), x="shots", y="test_accuracy", hue="method",
             hue_order=[report.METHOD_LABELS[m] for m in order], marker="o", errorbar="sd", err_style="bars", ax=ax)
plots.teacher_line(ax, tm["test_accuracy"], label="published ResNet-56")
ax.set(xlabel="images per class, N", ylabel="test accuracy (%)", xticks=sorted(shots), ylim=(0, 100),
       title="CIFAR-10, ResNet-56 teacher: students from N images per class")
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()
plots.save_figure(fig, "08_resnet_results", output_root)
plt.show()

# %% tags=["hide-input"]
acc = fidelity.set_index(["method", "shots"])
t_acc = tm["test_accuracy"]
lines = []
for n in shots:
    ours = acc.loc[("netgraft", n)]
    line = (f"N={n}: NetGraft **{report.pm(ours.accuracy_mean, ours.accuracy_std)}%** over {ours.seeds} seeds "
            f"({t_acc - ours.accuracy_mean:.2f} points under the teacher)")
    if ("netgraft_paper", n) in acc.index:
        line += f"; the paper's recipe {acc.loc[('netgraft_paper', n)].accuracy_mean:.2f}%"
    for m in baselines:
        if (m, n) in acc.index:
            line += f"; {report.METHOD_LABELS[m]} {acc.loc[(m, n)].accuracy_mean:.2f}%"
    lines.append("- " + line + ".")
lines += report.untrained_controls(fidelity, tuning.tuned_recipes(prof, output_root))  # an untrained control is none
display(Markdown("\n".join(lines) + "\n\nThe paper's recipe and the baselines ran on "
                 f"{len(paper_seeds)} and {len(baseline_seeds)} seed(s) here (parameters `paper_seeds`, "
                 "`baseline_seeds`); their spread is not shown where there is a single seed."))

# %% [markdown]
# ## Where accuracy goes: each unit alone, then the growing chain
#
# After the block stage, each student unit sits alone in the otherwise intact teacher; then the chain
# of student units does, growing from the first. Scored on the validation pool (1,000 images the
# students never saw, all from the teacher's own training data): the share of images on which the
# hybrid predicts the teacher's class. A ResNet-56 costs a few seconds per scoring of the 10,000 test
# images on this CPU, and there are many hybrids per run, so this diagnosis stays on the validation pool.
#
# The book's cpu recipe for this teacher has **no net stage**: its chains are the units as the block stage
# left them, put together. On the validation pool the net stage (60 epochs per growth step) bought 0.5 points
# at N=10 and none at N=1, for half the cost of an N=10 run (the numbers are in `nbgraft/profiles.py`);
# `net_epochs=(60,)` puts it back. What it would have to absorb is what the chain loses below.

# %% tags=["hide-input"]
names = {f"block{k + 1}": f"unit {k + 1}" for k in range(len(teacher))}
parts_df = pd.concat([
    report.stage_frame(netgraft_runs, "blocks").assign(stage="alone in the teacher"),
    report.stage_frame(netgraft_runs, "chains").assign(stage="chain from the first unit"),
])
parts_df["where"] = [names.get(p, p.replace("chain", "units ")) for p in parts_df.part]
parts_df["last_unit"] = [int(w.split("-")[-1].split()[-1]) for w in parts_df["where"]]  # unit 8 .. 11, in order
parts_df = parts_df.sort_values(["stage", "last_unit", "shots"], kind="stable")
fig, ax = plt.subplots(figsize=(plots.BOOK_WIDTH_IN, 3.3))
sns.pointplot(data=parts_df, x="where", y="val_agreement", hue="shots", palette="viridis", dodge=0.3, errorbar="sd",
              ax=ax, order=list(dict.fromkeys(parts_df["where"])))
ax.set(xlabel="student units grafted into the teacher", ylabel="agreement with the teacher (%)",
       title="validation pool: each unit alone, then the chain")
ax.tick_params(axis="x", labelrotation=30, labelsize=7)
ax.legend(title="N", fontsize=7, title_fontsize=7)
fig.tight_layout()
plots.save_figure(fig, "08_resnet_units", output_root)
plt.show()
diag = (parts_df.groupby(["shots", "stage", "where"], sort=False)["val_agreement"].agg(["mean", "std"]).reset_index())
plots.save_table(diag, "08_resnet_units", output_root)
n = max(shots)
alone = diag[(diag.shots == n) & (diag.stage == "alone in the teacher")]
chain = diag[(diag.shots == n) & (diag.stage != "alone in the teacher")]
display(Markdown(
    f"With N={n}, each unit alone keeps {alone['mean'].min():.1f}-{alone['mean'].max():.1f}% agreement with the "
    f"teacher; chained, the agreement goes {' -> '.join(f'{v:.1f}' for v in chain['mean'])}%: the small errors "
    "of the units add up along the chain, " + (
        "which is what the net stage is there to absorb." if any(prof.recipe("netgraft", dataset, TEACHER).net_epochs)
        else "and this recipe has no net stage to absorb them (see above).")))

# %% [markdown]
# ## What the compression buys
#
# Parameters, multiply-accumulates and the median CPU latency of a forward pass (this machine, one
# image and a batch of 128), teacher against the folded student of the N=max run of the first seed, the teacher
# with its BatchNorms folded into its convolutions as the student's are.

# %%
threads = torch.get_num_threads()
comp = compression_table({"teacher": teacher, "NetGraft student (folded)": student_example}, repeats_128=5)
plots.save_table(comp, "08_resnet_compression", output_root)
display(comp.round(3).style.hide(axis="index"))
folds = pd.DataFrame([{"shots": m["shots"], "seed": m["seed"], "max_abs_logit_diff": m["fold_max_abs_logit_diff"],
                       "same_predictions": m["fold_same_predictions"]} for m in netgraft_runs])
# Folding only merges adapter pairs; a student whose unit boundaries keep the teacher's widths has none.
has_adapters = any(m["unfolded_params"] != m["student_params"] for m in netgraft_runs)
display(Markdown(
    f"On {threads} threads, a batch of 128 takes {comp.cpu_latency_ms_batch128.iloc[1]:.1f} ms against the teacher's "
    f"{comp.cpu_latency_ms_batch128.iloc[0]:.1f} ms. "
    + ((f"Folding the adapter pairs changed the test logits by at most {folds.max_abs_logit_diff.max():.1e} over "
        f"{len(folds)} runs" + (" and no prediction." if folds.same_predictions.all() else
                                f"; a prediction changed in {int((~folds.same_predictions).sum())} run(s) "
                                "(a tie within rounding)."))
       if has_adapters else
       "This student keeps the teacher's widths at every unit boundary (only inner widths of residual blocks "
       "change), so grafting needs no adapters and there is nothing to fold: the exported student is the "
       "grafted network as trained.")))

# %% [markdown]
# ## Students that are faster
#
# The student above saves parameters but no time: a CIFAR ResNet spends about the same number of
# multiply-accumulates in each of its 27 residual blocks, whatever the stage, and thinning the inside of stage 3's
# nine leaves every other block as it was. What a user of compression wants is speed, and a residual network keeps
# working when a whole block is removed (PRACTISE, Wang et al., CVPR 2023, compresses this way from few images).
# So the ResNet family's student can also **drop blocks**: `student={"unit_blocks": [1, 3, 3]}` keeps one of the
# three residual blocks of every unit of stage 1 and all of stages 2 and 3, each started from the teacher's; which
# blocks of a unit go is chosen on the few-shot images alone (the one without which the unit's output on them moves
# least, `nbgraft.models.resnet.kept_blocks`; the first block of a stage, which changes its shape, always stays).
# The stages are not alike. On a CPU a block of stage 1 costs the most time (the same multiply-accumulates as any
# other, on 32x32 maps of 16 channels, where moving memory dominates), and stage 3's blocks are the hardest to
# replace: with a block dropped from every unit, the grafted chain's agreement with the teacher on the validation
# pool falls mostly in stage 3. So the students below drop from the early stages first ("keeps a/b/c": blocks kept
# of each stage's nine); the layouts were compared on the validation pool of the first draw (the benchmarks' README,
# "Tuning history"). Beside them: the width-only student above, a student thinned inside every stage, and a mix of
# dropping and thinning. Each is grafted by the same recipe (not tuned on it), and timed on this machine's CPU
# against the teacher (medians of repeated timings, the two in alternation; `nbgraft.runs.speed`), the teacher with
# its BatchNorms folded into its convolutions as the students' are: folding alone makes it faster and costs a
# user nothing, so it is no student's merit. Every student that drops or thins before stage 3 is grafted
# unit by unit from the stem on, so it costs about three times a width-only run: on two CPU cores the section runs
# when asked (`speed=True`), and otherwise reads its runs back when every one is cached (`speed=None`, which runs it
# on a GPU).

# %%
from nbgraft.runs import speed as SP  # noqa: E402

chosen = {name: SP.STUDENTS[name] for name in (speed_students or SP.STUDENTS)}
speed_grid = {"students": chosen, "shots": speed_shots, "seeds": speed_seeds}
run_speed = speed if speed is not None else (setting.x.device.type == "cuda"
                                             or SP.speed_cached(chosen, speed_shots, speed_seeds, prof, **kw))
if run_speed:
    speed_runs = SP.speed_runs(chosen, speed_shots, speed_seeds, prof, **kw)
    speed_df = SP.speed_table(speed_runs, teacher, output_root)
    plots.save_table(speed_df, "speed", output_root)
    shown = speed_df.assign(accuracy=[report.pm(m, s) for m, s in zip(speed_df.accuracy_mean, speed_df.accuracy_std)])
    display(shown[["student", "shots", "seeds", "accuracy", "params_ratio", "macs_ratio", "cpu_speedup_b1",
                   "cpu_speedup_b128"]].round(3).style.hide(axis="index"))
else:
    speed_df = None
    display(Markdown("Not run here (`speed=None` on a CPU with some of its runs missing): pass `speed=True`, or run "
                     "it on a GPU."))

# %% tags=["hide-input"]
if speed_df is not None:
    n_front = max(speed_shots)
    front = speed_df[speed_df.shots == n_front]
    fig, ax = plt.subplots(figsize=(plots.BOOK_WIDTH_IN, 3.4))
    ax.errorbar(front.cpu_speedup_b128, front.accuracy_mean, yerr=front.accuracy_std.fillna(0), fmt="o", capsize=3)
    for r in front.itertuples():
        ax.annotate(r.student, (r.cpu_speedup_b128, r.accuracy_mean), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.scatter([1.0], [tm["test_accuracy"]], marker="*", s=80, color="black", zorder=3)
    ax.annotate("teacher", (1.0, tm["test_accuracy"]), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.margins(x=0.15)
    ax.set(xlabel="measured CPU speed-up over the teacher (BatchNorms folded), batch of 128 (x)",
           ylabel="test accuracy (%)",
           title=f"ResNet-56 students at N={n_front}: accuracy against speed")
    fig.tight_layout()
    plots.save_figure(fig, "08_speed_frontier", output_root)
    plt.show()
    lines = []
    for r in front.sort_values("cpu_speedup_b128").itertuples():
        at = speed_df[(speed_df.student == r.student)].set_index("shots").accuracy_mean
        lines.append(f"- **{r.student}**: {r.cpu_speedup_b128:.2f}x at batch 128 ({r.cpu_speedup_b1:.2f}x for one "
                     f"image), {100 * (1 - r.params_ratio):.0f}% fewer parameters, {100 * (1 - r.macs_ratio):.0f}% "
                     "fewer multiply-accumulates; " + ", ".join(f"{at[n]:.2f}% at N={n}" for n in sorted(at.index))
                     + f" (teacher {tm['test_accuracy']:.2f}%).")
    fast = front[front.cpu_speedup_b128 >= 1.4]
    best = fast.loc[fast.accuracy_mean.idxmax()] if len(fast) else None
    if best is not None:
        at = speed_df[speed_df.student == best.student].set_index("shots")
        lines.append(f"\nThe most accurate student at least 1.4x faster at batch 128 is **{best.student}** "
                     f"({best.cpu_speedup_b128:.2f}x): " + ", ".join(
                         f"{report.pm(at.accuracy_mean[n], at.accuracy_std[n])}% at N={n}" for n in sorted(at.index))
                     + f", {tm['test_accuracy'] - best.accuracy_mean:.2f} points under the teacher at N={n_front}.")
    display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Bring your own teacher
#
# Nothing above is specific to ResNets: the package grafts any network cut into a sequence of blocks
# with known channel widths. With a `torch.nn.Module` of your own (here the published ResNet-56 again,
# regrouped by hand into five blocks), a thin student tail and few-shot images in the teacher's input
# space, the whole method is:
#
# ```python
# from nbgraft import BlockNet, GraftParts, GraftSchedule, netgraft
#
# teacher = BlockNet([stem, stage1, stage2, stage3, head], widths=[3, 16, 16, 32, 64, 10]).eval()
# tail = [my_thin_stage3, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))]
# parts = GraftParts.around(teacher.widths, first=3, blocks=tail, student_widths=[32, 32, 10])
# student, _, _ = netgraft(teacher, parts, x_few_shot, GraftSchedule(block_epochs=(100,), net_epochs=(50,),
#                                                                    scale_lr_with_shots=False), shots=10)
# torch.save(student.state_dict(), "student.pt")  # a plain module: teacher blocks 1-3, then the student's
# ```
#
# Run here for real, on the 10-shot draw of the first seed and a short schedule (a demonstration of
# the interface, not a tuned result; the models' own `inherit_block` can start `tail` from the
# teacher as the book's recipe does):

# %%
from nbgraft.cache import cached  # noqa: E402
from nbgraft import BlockNet, GraftParts, GraftSchedule, netgraft  # noqa: E402
from nbgraft.models.resnet import BasicBlock  # noqa: E402

stages = [nn.Sequential(*[blk for u in teacher.blocks if isinstance(u, nn.Sequential) and len(u) and
                          isinstance(u[0], BasicBlock) and u[0].conv2.out_channels == w for blk in u])
          for w in spec.widths]
mine = BlockNet([teacher.blocks[0], *stages, teacher.blocks[-1]], widths=[3, 16, 16, 32, 64, 10]).eval()
torch.manual_seed(0)
tail = [nn.Sequential(BasicBlock(32, 32, 2, False, "conv"), *[BasicBlock(32, 32, 1, False, "conv") for _ in range(2)]),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))]
parts = GraftParts.around(mine.widths, first=3, blocks=tail, student_widths=[32, 32, 10]).to(setting.x.device)
demo_sched = GraftSchedule(block_epochs=(20,), net_epochs=(10,), block_lr=(3e-3,), block_adapter_lr=3e-3,
                           net_lr=1e-3, net_adapter_lr=1e-3, scale_lr_with_shots=False)


def graft_demo() -> dict:
    demo, _, _ = netgraft(mine, parts, setting.x, demo_sched, shots=max(shots))
    return {"test_accuracy": accuracy(predict(demo, setting.x_test), setting.y_test),
            "params": count_params(demo), "blocks": len(demo)}


# Cached like every run in the book (a re-run reads it back); the key names all it depends on.
demo = cached("byo_demo", {"teacher": setting.teacher_key, "shots": max(shots), "seed": seeds[0],
                           "test_limit": prof.test_limit, "cut": list(mine.widths), "tail": repr(tail),
                           "schedule": demo_sched}, graft_demo, output_root)
display(Markdown(
    f"The hand-cut teacher has {len(mine)} blocks; the grafted student ({demo['params'] / 1e6:.3f} M parameters, "
    f"{demo['blocks']} blocks, a plain `BlockNet`) reaches {demo['test_accuracy']:.2f}% test accuracy after this "
    "30-epoch demonstration from random weights with a 3-block thin stage 3 (the teacher has 9 blocks per stage)."))
