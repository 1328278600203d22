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
#     display_name: Python 3 (nbgraft)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: how the code is organised
#
# The chapters tell the story; the package `nbgraft` does the work. It is layered, and every import runs
# downhill: a module imports only from its own layer or the ones below it (a test checks that no import
# cycle exists). From the bottom:
#
# | layer | what lives there |
# | --- | --- |
# | infrastructure | `cache` (entries on disk, written atomically, checked before reuse), `data` (CIFAR, draws, validation pool), `device` (what a CPU and a GPU do differently), `training` (seeds, optimisers), `schedules` (the dataclasses a recipe is made of), `evaluate`, `plots` |
# | `models/` | networks as sequences of blocks (`BlockNet`), the `vgg` and `resnet` families, students started from their teacher (`inherit`) |
# | `grafting/` | the engine: adapters and grafted parts, the losses, what the teacher is asked about, seeds in one step, both stages written once, scores from shared activations |
# | `methods/`, `profiles` | the table of methods the book compares, the baselines, and each profile's recipe for every method |
# | `runs/` | cached runs: teachers, a run's inputs and key, NetGraft and student runs, sweeps (locally or on Ray), tuning, reports |
# | `zeroshot/` | no real image: one-stage adversarial training, the GAN, data-free distillation, inversion |
# | entry points | `cli` (`python -m nbgraft`) and `book` (papermill, Jupyter Book) |
#
# **Adding a method.** Write a module in `nbgraft/methods/` with a `train(teacher, student_spec, x, y, schedule,
# seed)` function returning the trained student (eval mode) and a log (with `first_trained_block`), add one
# `Method` entry to `nbgraft.methods.METHODS`, and give it a recipe in `nbgraft/profiles.py`. The command line's
# choices, the reports' labels, the sweeps, the tuning grid and the cache read the table. The field's methods of
# chapter 9 came that way: `fskd.py`, `mir.py` and `pruned.py` (`pruned_kd`), each a few dozen lines over the
# shared student loop of `baselines.py` and the engine's parts. **Adding a model family.** A module in
# `nbgraft/models/` with the names of the `ModelFamily` protocol (`SPEC`, `build`, `student_spec`,
# `student_blocks`, `stream_groups`, `inherit_block`), listed in `nbgraft.models.FAMILIES`; a network of your own
# needs none of it: wrap it in a `BlockNet` (README, "Bring your own teacher"). **Adding a chapter.** A paired
# percent file `book/NN_name.py` with a `parameters` cell (`profile`, `data_root`, `output_root`, `device`,
# `seeds`, a data set), listed in `_toc.yml`; it calls the package and saves what it shows under `outputs/`.
#
# The figure and table below are read from the package's own source, so they cannot drift from it.

# %% tags=["parameters"]
dataset = "cifar10"
profile = "cpu"
seeds = [0]
device = "auto"
data_root = "../data"
output_root = "../outputs"

# %%
import ast
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import nbgraft
import pandas as pd
from IPython.display import display

from nbgraft import plots
from nbgraft.methods import METHODS
from nbgraft.runs.experiments import check_parameters

plots.set_theme()
check_parameters(datasets=dataset, seeds=seeds, profile=profile)
package = Path(nbgraft.__file__).parent
LAYERS = ["infrastructure", "models", "grafting", "methods", "runs", "zeroshot", "entry points"]


def layer_of(module: str) -> str:
    """The layer of a module named relative to the package (e.g. "grafting.engine")."""
    head = module.split(".")[0]
    if head in ("models", "grafting", "methods", "runs", "zeroshot"):
        return head
    if head == "profiles":  # the recipes, keyed by the method table's names
        return "methods"
    return "entry points" if head in ("cli", "book", "__main__") else "infrastructure"


rows = []
for path in sorted(package.rglob("*.py")):
    name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    rows.append({"module": name, "layer": layer_of(name.removeprefix("nbgraft.")),
                 "lines": len(path.read_text().splitlines()), "what": doc.split("\n")[0]})
modules = pd.DataFrame(rows)
plots.save_table(modules, "10_modules", output_root)

# Module-level imports between layers (the ones inside functions are lazy and left out).
edges = Counter()
for path in package.rglob("*.py"):
    here = layer_of(".".join(path.relative_to(package).with_suffix("").parts))
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level and node.module:
            parts = path.relative_to(package).parts[:-1]
            base = list(parts[: len(parts) - node.level + 1])
            target = layer_of(".".join([*base, *node.module.split(".")]))
            if target != here:
                edges[(here, target)] += 1
fig, ax = plt.subplots(figsize=(9, 5))
ypos = {layer: k for k, layer in enumerate(LAYERS)}
for (a, b), n in edges.items():  # downhill arrows on the left, the few uphill ones on the right
    x = 0.08 if ypos[b] < ypos[a] else 0.92
    ax.annotate("", xy=(x, ypos[b]), xytext=(x, ypos[a]), zorder=1,
                arrowprops={"arrowstyle": "->", "color": "0.25", "lw": 0.5 + n / 8, "alpha": 0.5, "shrinkA": 6, "shrinkB": 6,
                            "connectionstyle": f"arc3,rad={(0.25 + 0.04 * abs(ypos[a] - ypos[b])) * (1 if x < 0.5 else -1)}"})
for layer, y in ypos.items():
    names = modules[modules.layer == layer].module.str.replace("nbgraft.", "", regex=False)
    ax.text(0.5, y, f"{layer}: " + ", ".join(n.split(".")[-1] for n in names if n != layer)[:100],
            ha="center", va="center", fontsize=7.5, zorder=2, bbox={"boxstyle": "round", "fc": "white", "ec": "0.6"})
ax.set(ylim=(-0.6, len(LAYERS) - 0.4), xlim=(0, 1), title="nbgraft's layers; arrows: module-level imports (width: count)")
ax.axis("off")
plots.save_figure(fig, "10_layers", output_root)
plt.show()
print(f"{len(modules)} modules, {modules.lines.sum():,} lines; imports between layers: "
      + ", ".join(f"{a} -> {b} {n}" for (a, b), n in sorted(edges.items(), key=lambda e: -e[1])[:8]) + ", ...")
uphill = [(a, b) for (a, b) in edges if LAYERS.index(b) > LAYERS.index(a) and not (a, b) == ("runs", "zeroshot")]
print("imports that run uphill:", uphill or "none")

# %% [markdown]
# `runs` and `zeroshot` lean on each other at the level of layers, never of modules: data-free NetGraft
# (`runs.setting`) reads the images `zeroshot.inversion` makes, and the zero-shot games read their teacher
# from `runs.teacher`. The method table, as the command line and the reports read it:

# %%
display(pd.DataFrame([{"method": m.name, "kind": m.kind, "label": m.label, "cached under": m.cache_kind,
                       "recipe": m.recipe_name, "checkpoints": ", ".join(m.files)} for m in METHODS.values()]))
