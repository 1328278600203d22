"""Run the book: execute every chapter with papermill, then build the Jupyter Book HTML offline.

Chapters are the jupytext sources `book/NN_name.py`. Each is converted in memory, given its
parameters (profile, data and output folders as absolute paths, device, extras) and executed with
the kernel's working directory in `book/`. Executed notebooks go to `<output_root>/notebooks/`,
never back into the paired `book/*.ipynb`. The HTML is built from those executed notebooks with
execution off, from a staging copy of the root `_config.yml` and `_toc.yml`.

The kernel is the `python3` kernelspec; jupyter_client starts it with the interpreter running this
code (it swaps a bare `python` in the spec's argv for sys.executable), so the venv's packages are
the ones the chapters import. Without the kernelspec: `python -m ipykernel install --sys-prefix`.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .cache import atomic_write_bytes, atomic_write_json, default_output_root
from .data import default_data_root

REPO = Path(__file__).resolve().parents[1]
BOOK_DIR = REPO / "book"
KERNEL = "python3"
REQUIRED_PARAMETERS = ("profile", "data_root", "output_root", "device")
# Kernels: no progress bars in pages, and no tqdm notice that ipywidgets is absent (it would print to every page).
KERNEL_ENV = {"NBGRAFT_QUIET": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
KERNEL_WARNING_FILTERS = ("ignore:IProgress not found",)


class ChapterFailed(RuntimeError):
    """A chapter raised; the message names it and the executed notebook holding the traceback."""


class BuildFailed(RuntimeError):
    """The HTML build failed; the message holds its warnings."""


def find_chapters(book_dir: Path = BOOK_DIR) -> list[Path]:
    """The chapter sources, book/[0-9][0-9]_*.py, in order."""
    return sorted(Path(book_dir).glob("[0-9][0-9]_*.py"))


CHAPTERS = find_chapters()


def select_chapters(names=None, book_dir: Path = BOOK_DIR) -> list[Path]:
    """Chapters by number ("2", "02") or name ("02_few_shot_setup", with or without .py); all if None."""
    available = find_chapters(book_dir)
    if not available:
        raise FileNotFoundError(f"no chapters (NN_name.py) under {book_dir}")
    if not names:
        return available
    picked = []
    for name in names:
        key = Path(str(name)).stem
        hits = [p for p in available if p.stem == key or (key.isdigit() and p.stem[:2] == f"{int(key):02d}")]
        if len(hits) != 1:
            raise ValueError(f"no chapter {name!r}; choose from {', '.join(p.stem for p in available)} "
                             "(by number, e.g. 02, or by name)")
        if hits[0] not in picked:
            picked.append(hits[0])
    return sorted(picked)


def read_chapter(path: Path):
    """The chapter as an nbformat notebook (jupytext percent format), with the python3 kernel."""
    import jupytext

    nb = jupytext.read(path, fmt="py:percent")
    nb.metadata.setdefault("kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"})
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def chapter_parameters(path: Path) -> dict:
    """Name -> default value of the chapter's `parameters`-tagged cell (literals only)."""
    nb = read_chapter(path)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name} needs exactly one cell tagged parameters (# %% tags=[\"parameters\"]), "
                         f"found {len(cells)}")
    out = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


@contextlib.contextmanager
def _environment(values: dict):
    """Environment variables for the kernels started inside the block (they inherit ours)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_kernel() -> None:
    """Fail early, with the fix, if no `python3` kernelspec can be found."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise BuildFailed(f"no Jupyter kernel named {KERNEL!r}: run `pip install -e '.[book]'` and "
                          f"`{sys.executable} -m ipykernel install --sys-prefix`") from None


def execute_chapter(path: Path, notebook: Path, parameters: dict, cwd: Path = BOOK_DIR,
                    progress_bar: bool = False) -> float:
    """Execute one chapter into `notebook` (written atomically); returns its wall time in seconds.

    On an error the partly executed notebook is kept beside it as `<name>.failed.ipynb` and
    ChapterFailed names both.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path, notebook = Path(path), Path(notebook)
    notebook.parent.mkdir(parents=True, exist_ok=True)
    partial = notebook.with_name(f".{notebook.stem}.partial.ipynb")
    failed = notebook.with_name(f"{notebook.stem}.failed.ipynb")
    t0 = time.perf_counter()
    try:
        filters = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), *KERNEL_WARNING_FILTERS]))
        with _environment({**KERNEL_ENV, "PYTHONWARNINGS": filters}):
            nb = papermill.execute_notebook(read_chapter(path), str(partial), parameters=parameters,
                                            kernel_name=KERNEL, cwd=str(cwd), progress_bar=progress_bar)
    except PapermillExecutionError as err:
        _finish_notebook(nbformat.read(partial, as_version=4), path, failed)
        partial.unlink(missing_ok=True)
        raise ChapterFailed(f"chapter {path.stem} failed in cell {err.exec_count} with {err.ename}: {err.evalue}\n"
                            f"the executed notebook with the traceback is {failed}") from None
    except BaseException:  # Ctrl-C, a dead kernel: leave no hidden half-written notebook behind
        partial.unlink(missing_ok=True)
        raise
    finally:
        wall = time.perf_counter() - t0
    _finish_notebook(nb, path, notebook)
    partial.unlink(missing_ok=True)
    failed.unlink(missing_ok=True)
    return wall


def _finish_notebook(nb, source: Path, dest: Path) -> None:
    """Record the .py source (papermill stores a whole in-memory notebook there) and write atomically."""
    import nbformat

    nb.metadata.setdefault("papermill", {})["input_path"] = str(source)
    nb.metadata["papermill"]["output_path"] = str(dest)
    atomic_write_bytes(dest, nbformat.writes(nb).encode())


def run_book(profile: str = "cpu", chapters=None, data_root=None, output_root=None, device: str = "auto",
             build: bool = True, extra_parameters: dict | None = None, build_root=None) -> Path:
    """Execute the chapters in order with papermill, then build the HTML book.

    profile: "cpu" (default, 2-core machines), "paper" (GPU) or "tiny" (smoke tests).
    chapters: numbers or names ("02", "03_block_grafting"); None runs them all.
    data_root / output_root: CIFAR folder and where cache, figures, tables and executed
        notebooks go (defaults: ./data, ./outputs or $NBGRAFT_DATA, $NBGRAFT_OUTPUTS).
    extra_parameters: more papermill parameters (e.g. {"shots": [1, 5], "seeds": [0, 1]}); each
        chapter gets those its parameters cell declares.
    build / build_root: build the HTML into <build_root>/_build/html (default: the repository
        when output_root is ./outputs, else output_root itself).

    Executed notebooks: <output_root>/notebooks/NN_name.ipynb; wall times in timings.json there.
    Returns the HTML index.html when built, else the notebooks folder.
    """
    from .profiles import get_profile

    get_profile(profile)  # an unknown profile fails here, not inside every chapter
    selected = select_chapters(chapters)
    out = Path(output_root if output_root is not None else default_output_root()).resolve()
    data = Path(data_root if data_root is not None else default_data_root()).resolve()
    common = {"profile": profile, "data_root": str(data), "output_root": str(out), "device": device or "auto"}
    extra = dict(extra_parameters or {})
    declared = {p: chapter_parameters(p) for p in selected}
    for p, names in declared.items():
        missing = [k for k in REQUIRED_PARAMETERS if k not in names]
        if missing:
            raise ValueError(f"{p.name}'s parameters cell lacks {missing}; every chapter declares "
                             f"{', '.join(REQUIRED_PARAMETERS)}")
    unused = [k for k in extra if not any(k in names for names in declared.values())]
    if unused:
        raise ValueError(f"no selected chapter declares the parameter(s) {unused}")
    check_kernel()
    notebooks = out / "notebooks"
    timings_path = notebooks / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    quiet = bool(os.environ.get("NBGRAFT_QUIET"))
    for p in selected:
        params = {**common, **{k: v for k, v in extra.items() if k in declared[p]}}
        print(f"running {p.stem} ({', '.join(f'{k}={v}' for k, v in params.items() if k in ('profile', *extra))})",
              flush=True)
        wall = execute_chapter(p, notebooks / f"{p.stem}.ipynb", params, progress_bar=not quiet)
        timings[p.stem] = {"wall_s": round(wall, 1), "profile": profile}
        atomic_write_json(timings_path, timings)
        print(f"  done in {wall / 60:.1f} min -> {notebooks / (p.stem + '.ipynb')}", flush=True)
    total = sum(timings[p.stem]["wall_s"] for p in selected)
    print("chapter wall times (min): " + ", ".join(f"{p.stem} {timings[p.stem]['wall_s'] / 60:.1f}"
                                                   for p in selected) + f"; total {total / 60:.1f}")
    if not build:
        return notebooks
    if build_root is None:
        build_root = REPO if out == (REPO / "outputs").resolve() else out
    index = build_html(notebooks, build_root)
    print(f"book: {index}")
    return index


def toc_files(toc: dict) -> list[str]:
    """Every `root`/`file` entry of a Jupyter Book toc, in reading order."""
    files = [toc["root"]] if "root" in toc else []

    def walk(items):
        for item in items or []:
            if "file" in item:
                files.append(item["file"])
            walk(item.get("sections"))
            walk(item.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    return files


def load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def build_html(notebooks_dir, build_root, warnings_as_errors: bool = True) -> Path:
    """Build the HTML book from executed notebooks into <build_root>/_build/html; returns index.html.

    The root `_toc.yml` and `_config.yml` are copied to <build_root>/_build/source with the executed
    notebooks at the toc's paths (execution off, no `.py` sources); chapters never executed are
    left out of that copy of the toc, with a note. Parameter cells are folded away (hide-cell).
    """
    import nbformat
    import yaml

    notebooks_dir, build_root = Path(notebooks_dir).resolve(), Path(build_root).resolve()
    toc = load_yaml(REPO / "_toc.yml")
    config = load_yaml(REPO / "_config.yml")
    wanted = toc_files(toc)
    have = [f for f in wanted if (notebooks_dir / f"{Path(f).name}.ipynb").is_file()]
    if not have:
        raise FileNotFoundError(f"no executed chapter notebooks in {notebooks_dir}; run the chapters first")
    stage = build_root / "_build" / "source"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "book").mkdir(parents=True)
    for f in have:
        nb = nbformat.read(notebooks_dir / f"{Path(f).name}.ipynb", as_version=4)
        for cell in nb.cells:
            tags = cell.metadata.get("tags", [])
            if ("parameters" in tags or "injected-parameters" in tags) and "hide-cell" not in tags:
                cell.metadata["tags"] = [*tags, "hide-cell"]
        nbformat.write(nb, stage / f"{f}.ipynb")
    if have != wanted:
        print(f"not in this build (never executed): {', '.join(sorted(set(wanted) - set(have)))}")
        toc = {"format": toc.get("format", "jb-book"), "root": have[0]}
        if len(have) > 1:  # jupyter-book rejects an empty chapter list
            toc["chapters"] = [{"file": f} for f in have[1:]]
    config["exclude_patterns"] = ["_build", ".*", "**.ipynb_checkpoints"]
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (config.get("sphinx", {}).get("config") or {}).pop("nb_custom_formats", None)
    (stage / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    html = build_root / "_build" / "html"
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(stage),
           "--path-output", str(build_root), "--builder", "html", "--all"]
    if warnings_as_errors:
        cmd += ["-W", "--keep-going"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (html / "index.html").is_file():
        log = (proc.stdout + proc.stderr).strip().splitlines()
        warnings = [line for line in log if "WARNING" in line or "ERROR" in line]
        raise BuildFailed("the Jupyter Book build failed (" + " ".join(cmd[3:]) + "):\n"
                          + "\n".join(warnings[:20] or log[-30:]))
    print(f"built the HTML book in {time.perf_counter() - t0:.0f} s")
    return html / "index.html"
