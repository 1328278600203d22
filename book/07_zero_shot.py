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
# # 7. Zero shots: data-free distillation, trained in one stage
#
# The book's accuracy curve runs from 50 images per class down to 1. This chapter takes it to
# **zero**: the student never sees a real training image. A generator synthesises inputs, the
# student learns to match the teacher on them, and the generator looks for inputs on which the
# two disagree most. That min-max game is *data-free adversarial distillation* (DFAD; Fang, Song,
# Shen, Wang, Chen and Song, 2019).
#
# Adversarial games are usually trained in **two stages** per iteration: a discriminator (here:
# the student) step, then a generator step that runs the discriminator forward and backward a
# second time. *Training Generative Adversarial Networks in One Stage* (Shen, Yin, Wang, Li, Song
# and Song, CVPR 2021) shows how both players can be updated from **one** forward and **one**
# backward pass. We implement the method in `nbgraft.onestage`, check that it is exact and time it
# (`nbgraft.onestage_checks`), train a small GAN on CIFAR-10 both ways (`nbgraft.gan`), and then use
# it for data-free distillation of the book's teacher (`nbgraft.dfad`).

# %% tags=["parameters"]
dataset = "cifar10"
profile = "cpu"
seeds = [0]
netgraft_seeds = [0, 1, 2]  # data-free NetGraft (section 7.5): synthetic pools, noise and real draws
images_per_class = [1, 5, 10]  # K for the synthetic and the real images
noise_images_per_class = [10]  # the noise control's K ([1, 5, 10] draws its whole curve: about 2 more minutes)
device = "auto"
data_root = "../data"
output_root = "../outputs"

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from torchvision.utils import make_grid

from nbgraft import data as D
from nbgraft.zeroshot import dfad as DF
from nbgraft.zeroshot import gan as G
from nbgraft.zeroshot import onestage as O
from nbgraft.zeroshot import inversion as I
from nbgraft import plots
from nbgraft.runs import report
from nbgraft.device import pick_device
from nbgraft.runs.experiments import check_parameters, graft_seeds, untrained_student
from nbgraft.zeroshot.checks import gradient_checks, time_schemes
from nbgraft.profiles import get_profile

if dataset != "cifar10":
    raise ValueError(f"this chapter runs on CIFAR-10 only (its GAN and its data-free student), got dataset={dataset!r}")
if len(seeds) != 1:
    raise ValueError(f"this chapter trains one seed per scheme (its budget is wall-clock); give seeds=[s], got {seeds}")
seed = seeds[0]
check_parameters(shots=[*images_per_class, *noise_images_per_class], seeds=netgraft_seeds, profile=profile)
I.check_images_per_class(images_per_class, profile)
plots.set_theme()


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


prof = get_profile(profile)
kw = dict(data_root=data_root, output_root=output_root, device=device)
dev = pick_device(device)
gan_sched, df_sched = G.gan_schedule(prof), DF.datafree_schedule(prof)
display(Markdown(
    f"Profile **{prof.name}** on **{dev.type}** ({torch.get_num_threads()} CPU thread(s)), seed {seed}."
    + ("" if dev.type == "cuda" else " No GPU is lent to this chapter's runs: every time below is CPU time.")))

# %% [markdown]
# ## 7.1 One backward pass for two players
#
# Let the discriminator give a logit $o_i = D(x_i)$ for each image, with fakes $x_i = G(z_i)$,
# $i = 1..B$. Both players' losses are means over the batch, and on the fakes they depend on
# $o_i$ alone:
#
# $$L_D = \frac1B \sum_{\text{real } r} \ell_r(o_r) + \frac1B \sum_i \ell_D(o_i), \qquad
#   L_G = \frac1B \sum_i \ell_G(o_i).$$
#
# If $o_i$ depends on $x_i$ only (no coupling between the samples of a batch), the chain rule gives
#
# $$\frac{\partial L_D}{\partial x_i} = \frac1B\,\ell_D'(o_i)\,\frac{\partial o_i}{\partial x_i}, \qquad
#   \frac{\partial L_G}{\partial x_i} = \frac1B\,\ell_G'(o_i)\,\frac{\partial o_i}{\partial x_i}
#   = \gamma_i\,\frac{\partial L_D}{\partial x_i}, \qquad \gamma_i = \frac{\ell_G'(o_i)}{\ell_D'(o_i)}.$$
#
# The generator's gradient is $\partial L_G/\partial\theta_G = \sum_i (\partial x_i/\partial\theta_G)^\top
# \partial L_G/\partial x_i$. So one backward pass of $L_D$ yields $D$'s gradient, and if the
# gradient arriving at each fake $x_i$ is multiplied by $\gamma_i$ before it flows on into $G$
# (a hook on the fake batch), it also yields $G$'s gradient. Both optimisers then step.
#
# **BatchNorm couples the samples.** In train mode a BatchNorm layer normalises with the statistics
# of the batch it is given, so every output $o_j$ depends on every input of that batch:
# $\partial L_D/\partial x_i = \frac1B \sum_j \ell_D'(o_j)\,\partial o_j/\partial x_i$, a sum over
# the whole batch. Which case survives that?
#
# * **The non-saturating GAN loss** is asymmetric: $\ell_D(o) = \operatorname{softplus}(o) = -\log(1-\sigma(o))$
#   has $\ell_D'(o) = \sigma(o)$, and $\ell_G(o) = \operatorname{softplus}(-o) = -\log\sigma(o)$ has
#   $\ell_G'(o) = -\sigma(-o) = \sigma(o) - 1$, so
#   $$\gamma_i = \frac{\sigma(o_i) - 1}{\sigma(o_i)} = -e^{-o_i}.$$
#   With coupling, $\partial L_G/\partial x_i = \frac1B \sum_j \gamma_j \ell_D'(o_j)\,\partial o_j/\partial x_i$:
#   each term needs its own sample's factor $\gamma_j$, and a hook on $x_i$ can only apply $\gamma_i$.
#   So the per-sample factor is exact only without BatchNorm in $D$, and our DCGAN discriminator
#   has none. (Where $D$ is sure a sample is fake, $o < -60$, $\sigma(o)$ underflows in float32 and
#   the factor is clamped; $D$'s own gradient there is below $10^{-26}$.)
# * **Symmetric games**, $\ell_G = -\ell_D$, such as the *minimax* GAN loss ($\ell_D(o) = \log(1+e^{o})$):
#   $\gamma_i = -1$ for every sample, a gradient-reversal hook, and the sum above is reversed
#   term by term. It is exact if and only if $L_G$ equals minus the fake part of $L_D$ *as a function
#   of the whole batch $D$ sees*. That fails when $D$ sees real and fake images in **one concatenated
#   batch**: the fake part of $L_D$ then depends on the real images too, through the shared
#   statistics, while two-stage's generator step passes the fakes alone through $D$. If $D$ sees
#   real and fake images in **separate passes**, the fakes are normalised by their own statistics
#   in both schemes, the two functions are the same, and $-1$ is exact again.
# * **DFAD** is symmetric: the student minimises $L_S = \operatorname{mean}|S(x) - T(x)|$ over the
#   logits, the generator maximises it, $L_G = -L_S$, so $\gamma = -1$. The student sees only the
#   generated batch, in both schemes, so $L_G = -L_S$ as functions of that batch and reversing the
#   gradient that reaches $x$ (through both the student and the frozen teacher) is exact, with the
#   student's BatchNorm in train mode.
#
# What one-stage training does *not* reproduce is the order of the updates. In two-stage training
# the generator's step sees the discriminator *after* its update; in one-stage training both players
# step from the same parameters, simultaneous rather than alternating gradient steps (as in the
# paper). The equivalence is therefore at equal parameters, on one batch, and that is what we test.
#
# The check below runs both schemes from the same parameters on one fixed batch of real CIFAR-10
# images (the networks of this profile, in float64) and compares the gradients of each player:
# the largest entry of $|g_\text{one} - g_\text{two}|$ over the largest entry of $|g_\text{two}|$.

# %%
checks = pd.DataFrame(gradient_checks(prof, seed, data_root=data_root, output_root=output_root))
plots.save_table(checks, "07_gradient_check", output_root)
display(checks.style.format({"discriminator": "{:.1e}", "generator": "{:.1e}"}))
exact, broken = checks[checks.exact_in_theory], checks[~checks.exact_in_theory]
bn_gan = checks[checks.game.str.startswith("GAN") & checks.batch_norm].set_index(["factor", "d_passes"]).generator
display(Markdown(
    f"Where the derivation says exact, the largest relative gap is "
    f"{exact[['discriminator', 'generator']].to_numpy().max():.1e} (float64 rounding); that includes the minimax "
    f"loss with a BatchNorm discriminator seeing real and fake images apart "
    f"({bn_gan[('-1', 'real, fake apart')]:.1e}) and data-free distillation with the student's BatchNorm in train "
    f"mode. With real and fake in one BatchNorm batch the minimax generator's one-stage gradient is off by "
    f"{bn_gan[('-1', 'one batch')]:.2f} of its scale, and the non-saturating factor with BatchNorm is off by "
    f"{bn_gan[('-exp(-o)', 'real, fake apart')]:.2f} even with separate passes. The discriminator's own "
    f"gradient matches in every row (at most {checks.discriminator.max():.1e}): only the generator's is rescaled."))

# %% [markdown]
# ## 7.2 Time per iteration
#
# Counting passes as the paper does (its Figure 2): two-stage training runs $G$ forward twice
# (fresh noise for the generator step, as in Goodfellow et al.'s algorithm), $G$ backward once and
# $D$ forward and backward three times (real, fake, fake again); one-stage runs each network
# forward and backward once, on real and fake together. With equal unit costs that is 9 against
# 6, the paper's 1.5x. We time three two-stage variants against one-stage:
#
# * **two-stage**, the count above, with $D$ frozen in the generator step (no weight gradients
#   computed for it);
# * **two-stage, D not frozen**: the same, but $D$'s weight gradients are computed in the generator
#   step and thrown away at $D$'s next step, as the official two-stage codes (DCGAN's PyTorch
#   example, DFAD) do;
# * **two-stage, fakes reused**: the generator step reuses the discriminator step's fakes ($D$
#   frozen), one $G$ forward less, as in the PyTorch DCGAN example.
#
# A data-free iteration is DFAD's: **five student steps and one generator step**. In one-stage
# training the generator step is done in one pass together with the fifth student step, and the
# other four are plain student steps. Counting a student step as three units ($G$ forward,
# student-and-teacher forward and backward) and a generator step as four, that is
# $3 \cdot 5 + 4 = 19$ units against $3 \cdot 4 + 4 = 16$: with equal unit costs the one-stage
# saving shrinks from a third to a sixth. Each scheme trains its own copy of the same networks on
# the same batches, in one process, blocks of iterations interleaved, after a warm-up; we report
# the median.

# %%
LABELS = {"two_stage": "two-stage", "two_stage_unfrozen": "two-stage, D not frozen",
          "two_stage_reuse": "two-stage, fakes reused", "one_stage": "one-stage"}
timing = {game: time_schemes(game, prof, seed, **kw) for game in ("gan", "datafree")}
time_table = pd.DataFrame([
    {"game": game, "scheme": LABELS[s], "median_ms_per_iteration": 1000 * t["median_s"][s],
     "iterations_timed": len(t["times_s"][s]), "batch_size": t["batch_size"], "student_steps": t["d_steps"],
     "one_stage_over_this": t["median_s"]["one_stage"] / t["median_s"][s], "device": t["device"],
     "threads": t["torch_threads"]}
    for game, t in timing.items() for s in O.SCHEMES])
plots.save_table(time_table, "07_iteration_time", output_root)
display(time_table.round(3))

fig, axes = plt.subplots(2, 1, figsize=(plots.BOOK_WIDTH_IN, 4.2))
for ax, (game, title) in zip(axes, [("gan", "DCGAN on CIFAR-10"),
                                    ("datafree", f"data-free distillation ({df_sched.student_steps} student steps "
                                                 "per generator step)")]):
    rows = time_table[time_table.game == game]
    ax.barh(rows.scheme, rows.median_ms_per_iteration, color=["C0", "C1", "C7", "C2"])
    for y, (v, r) in enumerate(zip(rows.median_ms_per_iteration, rows.one_stage_over_this)):
        ax.text(v, y, f" {v:.0f} ms" + (f"  (one-stage: x{r:.2f})" if r != 1 else ""), va="center", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, rows.median_ms_per_iteration.max() * 1.5)
    ax.invert_yaxis()
axes[1].set_xlabel("median time per iteration (ms)")
fig.tight_layout()
plots.save_figure(fig, "07_iteration_time", output_root)
plt.show()

ratios = {game: t["ratios"] for game, t in timing.items()}
r_gan, r_df = ratios["gan"]["one_stage/two_stage"], ratios["datafree"]["one_stage/two_stage"]
med = {game: {s: 1000 * v for s, v in t["median_s"].items()} for game, t in timing.items()}
g_med = med["gan"]
g_fwd = g_med["two_stage"] - g_med["two_stage_reuse"]  # one generator forward (no gradient)
d_second = g_med["two_stage_reuse"] - g_med["one_stage"]  # D's second pass over the fakes, input gradients only
d_weights = g_med["two_stage_unfrozen"] - g_med["two_stage"]  # D's weight gradients in the generator step


def over_each(game):
    r = ratios[game]
    return (f"{r['one_stage/two_stage']:.2f} (two-stage), {r['one_stage/two_stage_unfrozen']:.2f} (D not frozen) "
            f"and {r['one_stage/two_stage_reuse']:.2f} (fakes reused)")


display(Markdown(
    f"One-stage over each two-stage variant, time per iteration: for the GAN {over_each('gan')}; for data-free "
    f"distillation {over_each('datafree')}. The paper reports about 1.5x for the GAN, a ratio of 0.67; the pass "
    f"count predicts 0.67 against the paper's two-stage and 6/8 = 0.75 against the variant that reuses its "
    f"fakes, and 16/19 = 0.84 for data-free distillation at five student steps. The unit costs are not equal on "
    f"this CPU: the generator forward that reusing saves costs {g_fwd:.0f} ms, "
    f"{100 * g_fwd / g_med['two_stage']:.0f}% of a two-stage iteration (1/9 = 11% in the count), and "
    f"the discriminator's second pass over the fakes, which one-stage saves against the reuse variant, costs "
    f"{d_second:.0f} ms, {100 * d_second / g_med['two_stage_reuse']:.0f}% of that variant's iteration (2/8 = 25% "
    f"in the count). Computing the discriminator's weight gradients in the generator step, as the official "
    f"code does, adds {d_weights:.0f} ms ({100 * d_weights / g_med['two_stage']:.0f}%), so one-stage gains "
    f"{'more' if ratios['gan']['one_stage/two_stage_unfrozen'] < r_gan else 'no more'} against that two-stage. "
    f"Data-free distillation's five student steps are the same in every scheme, so its saving is diluted: "
    f"{100 * (1 - r_df):.0f}% of the iteration against the two-stage one, where the count says "
    f"{100 * 3 / 19:.0f}%."))

# %% [markdown]
# ## 7.3 A GAN on CIFAR-10, two stages and one
#
# A DCGAN-shaped generator and discriminator (transposed convolutions up from 4x4, strided
# convolutions down, Adam at 2e-4 with $\beta_1 = 0.5$, the non-saturating loss; no BatchNorm in
# the discriminator, see above) train on the CIFAR-10 training images outside the validation
# pool. The two-stage run (with $D$ frozen in the generator step) trains for a fixed number of
# iterations; the one-stage run then gets the same number of **training seconds** and records its
# state when it passes the same **iteration count** on the way, so both comparisons come from one
# run each.
#
# **Quality score.** No Inception network is available offline, so this is **not the standard
# FID**: it is the Fréchet distance between Gaussians fitted to the *book's own CIFAR-10 teacher*'s
# penultimate features (its classifier's hidden layer) of generated images and of the held-out
# validation pool. Lower is better; it is only comparable within this chapter and profile. For
# scale we also give the distance between real training images and the validation pool.

# %%
display(Markdown(
    f"This profile's GAN: generator and discriminator of width {gan_sched.width} (DCGAN's is 64), noise of "
    f"{gan_sched.z_dim} dimensions, batch {gan_sched.batch_size}, {gan_sched.iterations} two-stage iterations, "
    f"Adam at {gan_sched.lr:g} with beta1 = {gan_sched.beta1}, the {gan_sched.loss} loss; the Fréchet distance "
    f"every {gan_sched.eval_every} iterations on {gan_sched.fd_samples} samples (at most the pool's size)."))
gan = {s: G.run_gan(s, prof, seed, **kw) for s in ("two_stage", "one_stage")}


def at_iteration(run, it):
    """The checkpoint of `run` at iteration `it` (the last one before, if it stopped earlier)."""
    return [c for c in run["checkpoints"] if c["iteration"] <= it][-1]


n_two = gan["two_stage"]["iterations"]
gan_table = pd.DataFrame([
    {"scheme": LABELS[s], "iterations": r["iterations"], "train_s": r["train_s"],
     "ms_per_iteration": 1000 * r["s_per_iteration"],
     "frechet_at_equal_iterations": at_iteration(r, n_two)["frechet"],
     "frechet_at_equal_time": r["frechet"], "frechet_real_vs_real": r["frechet_real_vs_real"],
     "fd_samples": r["fd_samples"], "feature_dim": r["feature_dim"]}
    for s, r in gan.items()])
plots.save_table(gan_table, "07_gan", output_root)
display(gan_table.round(2))

# %%
def smooth(values, window):
    v = np.asarray(values, dtype=float)
    w = max(1, min(window, len(v)))
    return np.convolve(v, np.ones(w) / w, mode="valid"), np.arange(w, len(v) + 1)


fig, axes = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.2))
window = max(1, n_two // 30)
for s, r in gan.items():
    colour = "C0" if s == "two_stage" else "C2"
    for ax, key in zip(axes, ("d_loss", "g_loss")):
        y, x = smooth(r["losses"][key], window)
        ax.plot(x, y, color=colour, label=LABELS[s])
axes[0].set(title="discriminator", xlabel="iteration", ylabel=f"loss (mean of {window} iterations)")
axes[1].set(title="generator (non-saturating)", xlabel="iteration", ylabel="loss")
axes[0].legend()
fig.tight_layout()
plots.save_figure(fig, "07_gan_losses", output_root)
plt.show()

fig, ax = plt.subplots(figsize=(plots.BOOK_WIDTH_IN, 3.4))
for s, r in gan.items():
    c = pd.DataFrame(r["checkpoints"])
    ax.plot(c.train_s, c.frechet, "o-", color="C0" if s == "two_stage" else "C2", label=LABELS[s], ms=4)
ax.axhline(gan["two_stage"]["frechet_real_vs_real"], **plots.TEACHER_STYLE,
           label=f"real vs real ({gan['two_stage']['frechet_real_vs_real']:.2f})")
ax.axvline(gan["one_stage"]["checkpoints"][-1]["train_s"], color="0.6", lw=0.8)
ax.set(xlabel="training time (s, evaluation excluded)", yscale="log",
       ylabel="Fréchet distance, teacher features\n(not FID; lower is better)")
ax.legend()
plots.save_figure(fig, "07_gan_frechet", output_root)
plt.show()

# %%
fig, axes = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.8))
for ax, (s, r) in zip(axes, gan.items()):
    grid = make_grid(G.load_samples(r, output_root), nrow=8, padding=1, pad_value=255)
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_title(f"{LABELS[s]}: {r['iterations']} iterations, {duration(r['train_s'])}", fontsize=9)
    ax.axis("off")
fig.tight_layout()
plots.save_figure(fig, "07_gan_samples", output_root)
plt.show()

g2, g1 = gan_table.iloc[0], gan_table.iloc[1]
display(Markdown(
    f"In the same {duration(g2.train_s)} of training the one-stage GAN ran {g1.iterations:.0f} iterations "
    f"against {g2.iterations:.0f}. At the two-stage run's {n_two} iterations its Fréchet distance was "
    f"{g1.frechet_at_equal_iterations:.2f} (two-stage: {g2.frechet_at_equal_iterations:.2f}); at equal time it is "
    f"{g1.frechet_at_equal_time:.2f}. Over the whole runs one-stage took "
    f"{g1.ms_per_iteration / g2.ms_per_iteration:.2f} of the two-stage time per iteration "
    f"(the timing above: {r_gan:.2f}). Real training images sit at {g1.frechet_real_vs_real:.2f} from the validation "
    f"pool, so both generators are still far from the data after {duration(g2.train_s)} of training. This is one seed "
    f"per scheme, so a small difference in the distances between the schemes is no evidence either way; the "
    f"time per iteration is the measured gain."))

# %% [markdown]
# ## 7.4 Zero real images: data-free distillation
#
# The teacher is the book's CIFAR-10 teacher of this profile. The student has the book's student
# architecture (blocks 4 and 5 at half width) and, like NetGraft's students, **keeps the teacher's
# blocks 1-3**, copied and frozen (DFAD's student has no such notion; its ResNet-18 learns
# everything). Its own blocks start from random weights and keep their BatchNorm in train mode
# (the $-1$ factor is exact with it, section 7.1). The shared blocks run once per batch, through
# the teacher, in eval mode.
#
# The generator has the DCGAN shape and ends as DFAD's does: Tanh, then a BatchNorm without
# learnable scale and shift, so that its images reach the teacher already normalised, with
# per-channel mean 0 and standard deviation 1 over the batch, like normalised CIFAR-10. Without
# it, a freshly initialised generator's images are nearly flat grey (measured below). The
# optimisers are DFAD's (SGD with momentum at 0.1 for the student, Adam at 1e-3 for the generator)
# at a constant learning rate, with DFAD's **five student steps per generator step**; the one-stage
# scheme merges the generator step with the fifth student step (section 7.2), so both schemes make
# the same number of updates per iteration. The test set only reports; the number we quote is the
# last iterate, not the best one. Besides test accuracy we report the student's **agreement with
# the teacher on synthetic images**: the share of 500 fresh generated images (noise never used in
# training) on which the student predicts the teacher's class, the quantity the game trains.

# %%
with torch.no_grad():
    torch.manual_seed(seed)
    z = torch.randn(500, df_sched.z_dim)
    views = {"CIFAR-10 test images": D.to_tensor(D.test_arrays(D.load_dataset("cifar10", data_root), 500)[0],
                                                 "cifar10"),
             "DCGAN generator (Tanh), untrained": G.to_teacher_input(G.Generator(df_sched.z_dim, df_sched.width)(z)),
             "DFAD generator (Tanh, BatchNorm), untrained":
                 G.Generator(df_sched.z_dim, df_sched.width, normalise=True)(z)}
input_stats = pd.DataFrame([
    {"images": name, **{f"std_{c}": v for c, v in zip("RGB", x.std(dim=(0, 2, 3)).tolist())},
     "std_of_image_means": x.mean(dim=(1, 2, 3)).std().item()}
    for name, x in views.items()])
plots.save_table(input_stats, "07_generator_inputs", output_root)
display(input_stats.round(3))
display(Markdown(
    f"In the teacher's input space, what the teacher and the student see: per-channel standard deviation and the "
    f"spread of the images' mean brightness. The DCGAN generator's images have a standard deviation of "
    f"{input_stats.iloc[1][['std_R', 'std_G', 'std_B']].min():.2f}-"
    f"{input_stats.iloc[1][['std_R', 'std_G', 'std_B']].max():.2f} where real images have about 1; the "
    f"normalising generator's have "
    f"{input_stats.iloc[2][['std_R', 'std_G', 'std_B']].mean():.2f} by construction."))

# %%
display(Markdown(
    f"This profile's data-free run: generator of width {df_sched.width} with {df_sched.z_dim}-dimensional noise, "
    f"batch {df_sched.batch_size}, {df_sched.iterations} two-stage iterations of {df_sched.student_steps} student "
    f"steps and one generator step, student SGD at {df_sched.lr_student:g} (momentum {df_sched.momentum}, weight "
    f"decay {df_sched.weight_decay:g}), generator Adam at {df_sched.lr_generator:g}; scores every "
    f"{df_sched.eval_every} iterations. The generator width and the batch size were chosen for this time budget "
    f"without a real image or label, by the student's agreement with the teacher on CutMix blends of the teacher's "
    f"own inverted images (`benchmarks/dfad_sizing.py`, `nbgraft.evaluate.label_free_score`; the table is "
    f"in `nbgraft.zeroshot.dfad`)."))
df = {s: DF.run_datafree(s, prof, seed, **kw) for s in ("two_stage", "one_stage")}
n_df = df["two_stage"]["iterations"]
teacher_acc = df["two_stage"]["teacher_test_accuracy"]
df_table = pd.DataFrame([
    {"scheme": LABELS[s], "iterations": r["iterations"], "student_updates": r["iterations"] * df_sched.student_steps,
     "train_s": r["train_s"], "ms_per_iteration": 1000 * r["s_per_iteration"], "batch_size": df_sched.batch_size,
     "real_images": r["real_images"],
     "test_accuracy_at_equal_iterations": at_iteration(r, n_df)["test_accuracy"],
     "test_accuracy_at_equal_time": r["test_accuracy"], "test_agreement_at_equal_time": r["test_agreement"],
     "synthetic_agreement_at_equal_iterations": at_iteration(r, n_df)["synthetic_agreement"],
     "synthetic_agreement_at_equal_time": r["synthetic_agreement"],
     "synthetic_classes_at_end": r["synthetic_classes"], "teacher_test_accuracy": teacher_acc}
    for s, r in df.items()])
plots.save_table(df_table, "07_datafree", output_root)
display(df_table.round(2))

fig, axes = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.4), sharey=True)
for s, r in df.items():
    c = pd.DataFrame(r["checkpoints"])
    colour = "C0" if s == "two_stage" else "C2"
    for ax, x in zip(axes, (c.train_s / 60, c.iteration)):
        ax.plot(x, c.test_accuracy, "o-", color=colour, ms=3, label=f"{LABELS[s]}, test images")
        ax.plot(x, c.synthetic_agreement, "^--", color=colour, ms=3, alpha=0.7,
                label=f"{LABELS[s]}, agreement on synthetic")
for ax in axes:
    plots.teacher_line(ax, teacher_acc)
    ax.axhline(10, color="0.6", lw=0.8, ls=":", label="chance (10%)")
axes[0].set(xlabel="training time (min, evaluation excluded)", ylabel="student accuracy / agreement (%)",
            ylim=(0, 100))
axes[1].set(xlabel="iteration")
axes[1].axvline(n_df, color="0.6", lw=0.8)
axes[0].legend(fontsize=7)
fig.tight_layout()
plots.save_figure(fig, "07_datafree_accuracy", output_root)
plt.show()

# %% [markdown]
# What the student learns from is what the generator shows it. At every checkpoint we also
# count the classes the teacher assigns to the 500 generated images: if they all fall into one or
# two classes, the student is taught little about the other eight.

# %%
fig, axes = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.4), gridspec_kw={"width_ratios": [1.3, 1]})
for s, r in df.items():
    c = pd.DataFrame(r["checkpoints"])
    axes[0].plot(c.iteration, c.synthetic_classes, "o-", ms=3, color="C0" if s == "two_stage" else "C2",
                 label=LABELS[s])
axes[0].set(xlabel="iteration", ylabel=f"teacher classes among {DF.SYNTHETIC_SAMPLES}\ngenerated images",
            ylim=(0, 10.5), yticks=range(0, 11, 2))
axes[0].legend(fontsize=8)
axes[1].imshow(make_grid(G.load_samples(df["one_stage"], output_root), nrow=8, padding=1, pad_value=255)
               .permute(1, 2, 0).numpy())
axes[1].set_title("one-stage generator, last iteration", fontsize=9)
axes[1].axis("off")
fig.tight_layout()
plots.save_figure(fig, "07_datafree_samples", output_root)
plt.show()

d2, d1 = df_table.iloc[0], df_table.iloc[1]
cov1 = pd.Series([c["synthetic_classes"] for c in df["one_stage"]["checkpoints"][1:]])
swing = [c["test_accuracy"] for c in df["one_stage"]["checkpoints"][-3:]]
display(Markdown(
    f"With no real image, the two-stage student reaches **{d2.test_accuracy_at_equal_time:.1f}%** test accuracy after "
    f"{d2.iterations:.0f} iterations ({d2.student_updates:.0f} student updates, {duration(d2.train_s)}, batch "
    f"{df_sched.batch_size}); the one-stage student reaches {d1.test_accuracy_at_equal_iterations:.1f}% after the "
    f"same iterations and **{d1.test_accuracy_at_equal_time:.1f}%** after the same training time "
    f"({d1.iterations:.0f} iterations). Chance is 10%, the teacher {teacher_acc:.1f}%. On fresh synthetic images the "
    f"students agree with the teacher on {d2.synthetic_agreement_at_equal_time:.1f}% (two-stage) and "
    f"{d1.synthetic_agreement_at_equal_time:.1f}% (one-stage) of them, on the test images on "
    f"{d2.test_agreement_at_equal_time:.1f}% and {d1.test_agreement_at_equal_time:.1f}%: "
    + ("matching the teacher on what the generator shows carries over to real images only partly. "
       if min(d1.synthetic_agreement_at_equal_time - d1.test_agreement_at_equal_time,
              d2.synthetic_agreement_at_equal_time - d2.test_agreement_at_equal_time) > 5
       else "agreement is lower on the synthetic images, which the generator draws to where student and teacher "
            "disagree, than on real ones. "
       if max(d1.synthetic_agreement_at_equal_time - d1.test_agreement_at_equal_time,
              d2.synthetic_agreement_at_equal_time - d2.test_agreement_at_equal_time) < -2
       else "the students agree with the teacher about as well on real images as on synthetic ones. ")
    + f"At the last checkpoint the teacher puts the 500 generated images into {df['one_stage']['synthetic_classes']} "
    f"(one-stage) and {df['two_stage']['synthetic_classes']} (two-stage) of the 10 classes; over the run the "
    f"one-stage generator covered {cov1.min()} to {cov1.max()} classes at a time (median {cov1.median():.0f}). "
    f"The generator's images are not meant to look like CIFAR-10: they are the inputs on which student and teacher "
    f"currently disagree most. DFAD's own schedule is hundreds of times longer than ours (section 7.6). "
    f"This is one seed per scheme, and the test accuracy swings from checkpoint to checkpoint (the one-stage run's "
    f"last three: {', '.join(f'{c:.1f}' for c in swing)}%), so the schemes' difference at equal time "
    f"({d1.test_accuracy_at_equal_time - d2.test_accuracy_at_equal_time:+.1f} points) is no evidence either way; "
    f"the time per iteration is the measured gain."))

# %% [markdown]
# ## 7.5 Data-free NetGraft: the teacher's own images
#
# NetGraft needs few images, and it never reads their labels: it matches the teacher's logits. So the
# images need not be real, only informative about the teacher. Here they are made from the teacher
# alone, by **model inversion** in the manner of DeepInversion (Yin et al., "Dreaming to Distill",
# CVPR 2020): a batch of K images per class starts as Gaussian noise and Adam changes its pixels until
# the frozen teacher puts every image in its target class (cross-entropy), while the mean and variance
# the batch produces at each of the teacher's BatchNorm layers approach the running statistics the
# teacher stored from its training data, under a smoothness prior (total variation) and with random
# jitter and flips. The images are rounded to 8 bits and handed to NetGraft **unchanged**: the same
# recipe, schedule and seeds as the real-image runs of chapter 5, with K synthetic images per class in
# place of N real ones. No real image enters the synthesis or the training, and every run reports its last
# epoch. The two choices this chapter makes use no real image or label either: the inversion's length
# (`benchmarks/inversion_length.py`) and DFAD's generator size (section 7.4, `benchmarks/dfad_sizing.py`)
# were chosen by the label-free score of chapter 5's "What choosing costs"
# (`nbgraft.evaluate.label_free_score`: the student's agreement with the teacher on CutMix blends of the
# teacher's own inverted images, held out from training).
# The real validation pool, read beside them as a check only, puts the two best options within half a point
# of each other in both cases; the test images only score.
#
# Distilling on inverted images is not new: DeepInversion itself (inverted images, then KD), ZSKD (Nayak
# et al. 2019, class impressions from the classifier's weights), DAFL (Chen et al. 2019, a generator trained
# on the teacher's activations) and DFAD (section 7.4, a generator against the student) train a student
# *from scratch* on synthetic inputs, and PRACTISE (Wang et al., CVPR 2023) already recovers a
# teacher-initialised (pruned) student on DeepInversion images. What this section adds is NetGraft's
# block-then-chain grafting on them, with the book's recipe unchanged: the student starts from the teacher's
# blocks and only has to match the teacher where the thin blocks differ.
#
# A teacher without BatchNorm in its conv blocks (the paper profile's, like the official VGG16) has
# no stored statistics to match; there the class term and the image prior are all that remain
# (DeepDream-style inversion, which DeepInversion's ablation shows to give far less natural images).
# The controls: NetGraft on K **real** images per class (chapter 5's runs, same seeds) and on K
# images of **uniform pixel noise**, the same number of images, which tells how much of the result
# the images carry at all and how much the teacher-started student brings by itself.

# %%
inv = I.inversion_schedule(prof)
pools = [I.synthetic_pool(dataset, s, prof, **kw) for s in netgraft_seeds]
synth = pd.DataFrame([{
    "seed": p["metrics"]["seed"], "images": p["metrics"]["images"], "iterations": p["metrics"]["iterations"],
    "wall_s": p["metrics"]["wall_s"], "s_per_image": p["metrics"]["s_per_image"],
    "teacher_accuracy_on_synthetic": p["metrics"]["teacher_accuracy_on_synthetic"],
    "teacher_classes_hit": p["metrics"]["teacher_classes_hit"], "bn_layers": p["metrics"]["bn_layers"],
    "device": p["metrics"]["device"], "threads": p["metrics"]["torch_threads"]} for p in pools])
plots.save_table(synth, "07_synthetic", output_root)
display(synth.round(3))

fig, axes = plt.subplots(1, 2, figsize=(plots.BOOK_WIDTH_IN, 3.6), gridspec_kw={"width_ratios": [1, 1.15]})
terms = {"ce": ("C0", "cross-entropy"), "bn": ("C2", "BatchNorm statistics"), "tv": ("C7", "total variation")}
for term, (colour, name) in terms.items():
    for k, p in enumerate(pools):
        log = p["metrics"]["losses"]
        axes[0].plot(log["iteration"], log[term], color=colour, lw=1, label=name if k == 0 else None)
axes[0].set(xlabel="iteration", ylabel="loss term (unweighted)", yscale="log",
            title=f"inversion, {len(pools)} seed(s)")
axes[0].legend(fontsize=8)
x0, y0 = pools[0]["x"], pools[0]["y"]
order = np.argsort(y0, kind="stable")  # one row per class
grid = make_grid(torch.from_numpy(x0[order]).permute(0, 3, 1, 2), nrow=inv.pool_per_class, padding=1, pad_value=255)
axes[1].imshow(grid.permute(1, 2, 0).numpy())
axes[1].set_title(f"seed {pools[0]['metrics']['seed']}: one row per class", fontsize=9)
axes[1].axis("off")
fig.tight_layout()
plots.save_figure(fig, "07_synthetic_images", output_root)
plt.show()

display(Markdown(
    f"Each seed's {synth.images.iloc[0]} images ({inv.pool_per_class} per class, {inv.iterations} Adam steps on "
    f"the pixels, matching {synth.bn_layers.iloc[0]} BatchNorm layers) took {synth.wall_s.mean():.0f} s, "
    f"**{synth.s_per_image.mean():.2f} s per image** on {synth.device.iloc[0]} ({synth.threads.iloc[0]} threads). "
    f"The teacher puts {synth.teacher_accuracy_on_synthetic.mean():.1f}% of its own synthetic images "
    f"(after rounding to 8 bits) in their target class. A set of K per class takes the first K of each class "
    f"of its seed's pool, so K = 1, 5 and 10 are nested, like the real draws."))

# %% [markdown]
# NetGraft then runs on K = 1, 5 and 10 synthetic images per class, beside the real images at the same N
# and, at K = 10, the noise control; three seeds each (the seed picks the synthetic pool, the noise and the
# real draw, and the student's initialisation). The data-free runs score their grafted parts on the
# validation pool only (the chapter reports each student's last epoch; `experiments.recipe_for`), which
# saves a sixth of their time.

# %%
ks = {"synthetic": images_per_class, "noise": noise_images_per_class, "real": images_per_class}
runs = {src: {k: graft_seeds(dataset, k, netgraft_seeds, prof, source=src, **kw) for k in ks[src]} for src in ks}
dfn = report.source_rows([m for by_k in runs.values() for ms in by_k.values() for m in ms])
plots.save_table(dfn, "07_datafree_netgraft", output_root)
display(dfn.round(2))

fig, ax = plt.subplots(figsize=(plots.BOOK_WIDTH_IN, 3.4))
styles = {"real": ("C1", "o", "real images (chapter 5)"), "synthetic": ("C2", "s", "synthetic (teacher alone)"),
          "noise": ("C7", "^", "uniform noise")}
for src, (colour, marker, label) in styles.items():
    rows = dfn[dfn.source == src]
    ax.errorbar(rows.images_per_class, rows.accuracy_mean, yerr=rows.accuracy_std.fillna(0), fmt=marker + "-",
                color=colour, capsize=3, label=label)
for s, r in df.items():
    ax.plot([0], [r["test_accuracy"]], "D" if s == "one_stage" else "P", ms=6, color="C0" if s == "one_stage" else "C9",
            label=f"DFAD, {LABELS[s]} (K = 0)")
plots.teacher_line(ax, teacher_acc)
ax.set_xscale("symlog", linthresh=1)
ticks = [0, *images_per_class]
ax.set_xticks(ticks, [str(t) for t in ticks])
ax.set(xlabel="images per class given to NetGraft (K)", ylabel="student test accuracy (%)", ylim=(0, 100))
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
plots.save_figure(fig, "07_datafree_netgraft", output_root)
plt.show()


def cell(src, k):
    r = dfn[(dfn.source == src) & (dfn.images_per_class == k)].iloc[0]
    return r.accuracy_mean, r.accuracy_std


k_top, n_top = max(images_per_class), max(noise_images_per_class)
start = pd.DataFrame([untrained_student(dataset, n_top if src == "noise" else k_top, s, prof, source=src, **kw)
                      for src in styles for s in netgraft_seeds])
start_mean = start.groupby("image_source").test_accuracy.mean()
(s_m, s_s), (r_m, r_s), (n_m, n_s) = cell("synthetic", k_top), cell("real", k_top), cell("noise", n_top)
met = s_m >= 60 and r_m - s_m <= 10
display(Markdown(
    f"At K = {k_top} the data-free student reaches **{report.pm(s_m, s_s)}%** against {report.pm(r_m, r_s)}% with "
    f"real images and {report.pm(n_m, n_s)}% with noise at K = {n_top} ({len(netgraft_seeds)} seeds; teacher "
    f"{teacher_acc:.1f}%). "
    f"The chapter's target (at least 60%, and within 10 points of real-image NetGraft) is "
    f"**{'met' if met else 'missed'}**: the synthetic images cost {r_m - s_m:.2f} points against real ones. "
    + " ".join(f"At K = {k}: synthetic {report.pm(*cell('synthetic', k))}, real {report.pm(*cell('real', k))}"
               + (f", noise {report.pm(*cell('noise', k))}." if k in noise_images_per_class else ".")
               for k in images_per_class if k != k_top)
    + f" Before any grafting step the student scores {start_mean['real']:.1f}% (channels chosen on real images), "
    f"{start_mean['synthetic']:.1f}% (synthetic) and {start_mean['noise']:.1f}% (noise): the starting point alone "
    f"is near chance and the grafting steps do the work: on noise they add "
    f"{n_m - start_mean['noise']:.0f} points where on the inverted images they add {s_m - start_mean['synthetic']:.0f}. "
    + (f"So for grafting, what the teacher's BatchNorm statistics and its classifier put into the images is "
       f"within {r_m - s_m:.1f} points of what real images carry." if r_m - s_m < 2 else
       f"So the inverted images carry part of what real images do: {r_m - s_m:.1f} points are still missing.")))


# %% [markdown]
# ## 7.6 Our numbers beside the papers'
#
# The papers ran on GPUs with full-size networks and budgets hundreds of times ours; the table
# puts their quoted figures next to what this chapter measured, and says what differs.

# %%
papers = pd.DataFrame([
    {"quantity": "one-stage speed-up, GAN",
     "paper": "about 1.5x (time ratio about 0.67): Shen et al. 2021, abstract; 9 vs 6 passes, their Fig. 2",
     "ours": f"{1 / r_gan:.2f}x (ratio {r_gan:.2f}; {ratios['gan']['one_stage/two_stage_unfrozen']:.2f} against "
             f"D not frozen, {ratios['gan']['one_stage/two_stage_reuse']:.2f} against fakes reused)",
     "what differs": f"DCGAN width {gan_sched.width} at 32x32, batch {gan_sched.batch_size}, "
                     f"{timing['gan']['torch_threads']} CPU thread(s) ({timing['gan']['device']}) vs GPUs"},
    {"quantity": "one-stage speed-up, data-free distillation",
     "paper": "shown to apply to data-free distillation (Shen et al. 2021); no figure quoted here",
     "ours": f"{1 / r_df:.2f}x (ratio {r_df:.2f}; {ratios['datafree']['one_stage/two_stage_unfrozen']:.2f} against "
             f"student not frozen)",
     "what differs": f"x{prof.width:g} VGG16 teacher and its student (blocks 1-3 shared), "
                     f"{df_sched.student_steps} student steps per generator step, batch {df_sched.batch_size}, CPU"},
    {"quantity": "NetGraft on images inverted from the teacher, CIFAR-10",
     "paper": "none (new as far as we know); DeepInversion's own data-free transfer: 93.26% (Adaptive DeepInversion, "
              "ResNet-34 teacher, ResNet-18 student from scratch; Yin et al. 2020)",
     "ours": f"{cell('synthetic', k_top)[0]:.1f}% at K = {k_top} ({len(netgraft_seeds)} seeds), real images "
             f"{cell('real', k_top)[0]:.1f}% (teacher {teacher_acc:.1f}%)",
     "what differs": f"{len(pools[0]['y'])} images per seed, {inv.iterations} inversion steps each, on 2 CPU threads; "
                     f"the student keeps the teacher's blocks 1-3 and grafts the rest"},
    {"quantity": "data-free student accuracy, CIFAR-10",
     "paper": "93.3% (ResNet-34 teacher, ResNet-18 student; Fang et al. 2019)",
     "ours": f"{df['one_stage']['test_accuracy']:.1f}% one-stage, {df['two_stage']['test_accuracy']:.1f}% two-stage "
             f"(teacher {teacher_acc:.1f}%)",
     "what differs": f"DFAD's code: 500 x 50 generator iterations, 5 student steps each, batch 256 (150,000 updates); "
                     f"ours: {df['one_stage']['iterations']} iterations of {df_sched.student_steps} + 1 updates, "
                     f"batch {df_sched.batch_size}, the teacher's blocks 1-3 kept"},
])
plots.save_table(papers, "07_papers", output_root)
display(papers)
share = 100 * df["one_stage"]["iterations"] * (df_sched.student_steps + 1) / 150_000
display(Markdown(
    f"On this machine one-stage training {'is' if max(r_gan, r_df) < 1 else 'is not always'} faster per iteration "
    f"({r_gan:.2f} and {r_df:.2f} of the two-stage time; the paper's 1.5x is a ratio of 0.67), and its gradients "
    f"match the two-stage ones wherever the derivation says they should. The data-free student is another matter: "
    f"its {df['one_stage']['iterations']} iterations are {share:.2g}% of the updates DFAD's recipe makes, and it "
    f"reaches {df['one_stage']['test_accuracy']:.1f}% against the paper's 93.3% with a stronger teacher. It is "
    f"reported as it is, with the budget that produced it, not as a reproduction of that number."))
