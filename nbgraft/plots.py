"""One look for every figure of the book, and stable, byte-reproducible figure and table files."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .cache import atomic_write_bytes, default_output_root

BOOK_WIDTH_IN = 7.0  # figure width that reads well at Jupyter Book's text width
TEACHER_STYLE = {"color": "0.25", "linestyle": "--", "linewidth": 1.2}


def set_theme() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "figure.figsize": (BOOK_WIDTH_IN, BOOK_WIDTH_IN * 0.55)})


def teacher_line(ax, accuracy: float, label: str = "teacher") -> None:
    """The teacher's accuracy as the reference (ceiling) line."""
    ax.axhline(accuracy, **TEACHER_STYLE, label=f"{label} ({accuracy:.1f}%)")


def shared_legend(fig, axes, teacher_prefix: str, bottom: float) -> None:
    """One legend under a row of panels (each panel's own removed); the teacher entry loses its
    per-panel accuracy, which the panel titles give instead."""
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        ax.get_legend().remove()
    fig.legend(handles, [lab.split(" (")[0] if lab.startswith(teacher_prefix) else lab for lab in labels],
               loc="lower center", ncol=3, fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))


def save_figure(fig, name: str, output_root=None) -> Path:
    """outputs/figures/<name>.png, written atomically with no timestamp in it (byte-stable)."""
    path = Path(output_root if output_root is not None else default_output_root()) / "figures" / f"{name}.png"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return path


def table_path(name: str, output_root=None) -> Path:
    """Where the table `name` lives: <output root>/tables/<name>.csv."""
    return Path(output_root if output_root is not None else default_output_root()) / "tables" / f"{name}.csv"


def save_table(df: pd.DataFrame, name: str, output_root=None) -> Path:
    """outputs/tables/<name>.csv, written atomically."""
    path = table_path(name, output_root)
    atomic_write_bytes(path, df.to_csv(index=False, float_format="%.4g").encode())
    return path
