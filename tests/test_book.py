"""The book: every chapter is in the toc and paired, the runner fails loudly, and (slow) the whole
book runs through papermill with the tiny profile, writes its figures and tables, and builds to HTML."""

import json
import math
import sys
from html.parser import HTMLParser
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest

from nbgraft import book
from nbgraft.methods import COMPARED_WITH_FIELD as FIELD

REPO = Path(__file__).resolve().parents[1]

# What each chapter must write (later chapters, not listed here, must write at least one figure).
EXPECTED = {
    "01": (["01_method"], ["01_profiles"]),
    "02": (["02_few_shot_grid", "02_teacher_curves", "02_baselines"], ["02_datasets", "02_teachers", "02_baselines"]),
    "03": (["03_block_losses", "03_block_accuracy", "03_first_block"], ["03_blocks"]),
    "04": (["04_chain_accuracy", "04_net_losses", "04_student_vs_baselines"],
           ["04_chain", "04_student_vs_baselines", "04_compression", "04_fold_check"]),
    "05": (["05_results", "05_selection"], ["05_results", "05_comparisons", "selection", "selection_grid"]),
    "06": (["06_accuracy_vs_shots", "06_ablations"], ["06_sweep", "06_ablations", "06_comparisons", "robustness"]),
    "08": (["08_resnet_results", "08_resnet_units", "08_speed_frontier"],
           ["08_resnet_results", "08_resnet_units", "08_resnet_compression", "speed"]),
    "09": (["09_methods"], ["methods", "09_methods_runs"]),
    "10": (["10_layers"], ["10_modules"]),
}
TINY_PARAMETERS = {"shots": [1, 2], "seeds": [0, 1], "control_seeds": {"cifar10": [0, 1], "cifar100": [0, 1]},
                   "random_seeds": [0, 1],
                   # chapter 9 on the VGG's CIFAR-10 at N=1 only (its ResNet paths: tests/test_field_methods.py)
                   "methods_grid": {"datasets": ["cifar10"], "shots": [1], "seeds": [0, 1], "methods": list(FIELD)},
                   # chapter 6's second teacher on a grid of its own size (chapter 9 reads its verdicts back)
                   "second_teacher": True,
                   "robustness_grid": [{"datasets": "cifar10", "shots": [1], "seeds": [0, 1], "teacher_seed": t,
                                        "methods": ["netgraft", "all_at_once", "pruned_kd"]} for t in (0, 1)],
                   # chapter 8's faster students: the book's and one that drops blocks
                   "speed": True, "speed_students": ["width: stage 3 inside 28/64", "drop: keeps 3/9/9 blocks"],
                   "speed_shots": [1], "speed_seeds": [0, 1],
                   # chapter 5's choices with and without labels, on a grid at N=1 of both data sets' VGG16
                   "choose_without_labels": True,
                   "selection_settings": [["cifar10", "vgg16", [1]], ["cifar100", "vgg16", [1]]]}


def chapter_ids():
    return [p.stem[:2] for p in book.find_chapters()]


# --------------------------------------------------------------------------- fast checks
def test_every_chapter_is_in_the_toc_and_vice_versa():
    toc = book.toc_files(book.load_yaml(REPO / "_toc.yml"))
    listed = [Path(f).name for f in toc]
    on_disk = [p.stem for p in book.find_chapters()]
    for stem in on_disk:
        assert stem in listed, f"book/{stem}.py is not in _toc.yml: add `  - file: book/{stem}` under chapters"
    for f in toc:
        assert (REPO / f"{f}.py").is_file(), f"_toc.yml lists {f}, but there is no {f}.py"
    assert listed == sorted(listed), "chapters in _toc.yml are out of order"
    assert len(set(listed)) == len(listed)


@pytest.mark.parametrize("path", book.find_chapters(), ids=lambda p: p.stem)
def test_chapter_is_paired_titled_and_parameterised(path):
    nb = jupytext.read(path)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "first cell: a markdown title"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (  # else the source build finds no lexer
        f"{path.name} names no kernel: run `.venv/bin/jupytext --set-kernel python3 --sync {path.relative_to(REPO)}`")
    params = book.chapter_parameters(path)
    for name in (*book.REQUIRED_PARAMETERS, "seeds"):
        assert name in params, f"{path.name}: parameters cell lacks {name}"
    assert "dataset" in params or "datasets" in params
    assert params["profile"] == "cpu" and params["device"] == "auto"
    assert params["data_root"] == "../data" and params["output_root"] == "../outputs"
    paired = path.with_suffix(".ipynb")
    assert paired.is_file(), f"run `.venv/bin/jupytext --sync {path.relative_to(REPO)}`"
    sources = lambda n: [(c.cell_type, c.source) for c in n.cells]  # noqa: E731
    assert sources(nbformat.read(paired, as_version=4)) == sources(nb), f"{paired.name} is out of sync with {path.name}"
    assert not any(c.get("outputs") for c in nbformat.read(paired, as_version=4).cells), "paired notebook holds outputs"


def test_book_config_builds_offline_from_the_toc():
    cfg = book.load_yaml(REPO / "_config.yml")
    assert cfg["only_build_toc_files"] is True
    assert cfg["execute"]["execute_notebooks"] == "off"
    for pattern in ("_build", "outputs", "book/*.ipynb", ".*"):
        assert pattern in cfg["exclude_patterns"]
    url = (cfg.get("repository") or {}).get("url", "")
    assert not url or url.startswith("https://github.com/")
    assert (REPO / "jupytext.toml").read_text().count('formats = "ipynb,py:percent"') == 1


def test_chapter_selection_and_bad_requests():
    assert [p.stem for p in book.select_chapters(["2"])] == [book.find_chapters()[1].stem]
    assert book.select_chapters(["03_block_grafting.py", "01"]) == book.select_chapters(["01", "03"])
    with pytest.raises(ValueError, match="no chapter '99'; choose from 01_introduction"):
        book.select_chapters(["99"])
    with pytest.raises(ValueError, match="unknown profile"):
        book.run_book(profile="huge", build=False)
    with pytest.raises(ValueError, match="no selected chapter declares the parameter"):
        book.run_book(profile="tiny", chapters=["01"], extra_parameters={"shotz": [1]}, build=False)


def test_runner_uses_this_interpreter_and_names_a_failing_chapter(tmp_path):
    good = tmp_path / "08_good.py"
    good.write_text('# %% [markdown]\n# # Good\n\n# %% tags=["parameters"]\nout = "x"\n\n'
                    '# %%\nimport sys, pathlib\npathlib.Path(out).write_text(sys.executable)\n')
    target = tmp_path / "exe.txt"
    wall = book.execute_chapter(good, tmp_path / "nb" / "08_good.ipynb", {"out": str(target)}, cwd=tmp_path)
    assert wall > 0 and (tmp_path / "nb" / "08_good.ipynb").is_file()
    assert Path(target.read_text()).resolve() == Path(sys.executable).resolve(), "the kernel runs another python"
    executed = nbformat.read(tmp_path / "nb" / "08_good.ipynb", as_version=4)
    assert executed.metadata.papermill.input_path == str(good)  # not the whole in-memory notebook

    bad = tmp_path / "09_bad.py"
    bad.write_text('# %% [markdown]\n# # Bad\n\n# %%\nraise RuntimeError("the chapter broke")\n')
    with pytest.raises(book.ChapterFailed) as err:
        book.execute_chapter(bad, tmp_path / "nb" / "09_bad.ipynb", {}, cwd=tmp_path)
    msg = str(err.value)
    assert "chapter 09_bad failed" in msg and "the chapter broke" in msg and "09_bad.failed.ipynb" in msg
    assert (tmp_path / "nb" / "09_bad.failed.ipynb").is_file() and not (tmp_path / "nb" / "09_bad.ipynb").exists()
    assert not list((tmp_path / "nb").glob(".*"))  # no partial notebook left behind


# --------------------------------------------------------------------------- the whole book (slow)
@pytest.fixture(scope="session")
def tiny_book(data_root, tiny_outputs):
    """Every chapter with the tiny profile, then the HTML build; run once per session.

    Chapters 1-5 get N in {1, 2} and seeds {0, 1}; later chapters run with their own defaults
    (their budgets are their own), into the same output folder, and the build takes them all.
    """
    chapters = chapter_ids()
    ours, later = [c for c in chapters if c in EXPECTED], [c for c in chapters if c not in EXPECTED]
    kw = dict(profile="tiny", data_root=data_root, output_root=tiny_outputs, device="cpu")
    index = book.run_book(chapters=ours, extra_parameters=TINY_PARAMETERS, build=not later, **kw)
    if later:
        index = book.run_book(chapters=later, build=True, **kw)
    return tiny_outputs, index


def _check_table(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    assert len(df) > 0, f"{path.name} is empty"
    for col in df.select_dtypes("number").columns:
        # NaN is allowed where it means "nothing to report": a quoted paper number for an N the paper
        # has not, the spread of a single seed, a recipe's difference to itself or one seed's interval.
        nan_ok = (col.startswith(("paper_", "diff", "ci95")) or col == "std" or col.endswith("_std"))
        values = df[col].dropna() if nan_ok else df[col]
        assert values.map(math.isfinite).all(), f"{path.name}: non-finite values in {col}"
        if "accuracy" in col or "agreement" in col:
            assert values.between(0, 100).all(), f"{path.name}: {col} outside [0, 100]"
    return df


@pytest.mark.slow
@pytest.mark.parametrize("chapter", chapter_ids())
def test_chapter_wrote_its_figures_tables_and_notebook(tiny_book, chapter):
    out, _ = tiny_book
    figures, tables = EXPECTED.get(chapter, ([], []))
    written = sorted(p.stem for p in (out / "figures").glob(f"{chapter}_*.png"))
    assert written, f"chapter {chapter} saved no figure"
    for name in figures:
        assert name in written, f"chapter {chapter} did not save figure {name}"
    for png in (out / "figures").glob(f"{chapter}_*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    for name in tables:
        assert (out / "tables" / f"{name}.csv").is_file(), f"chapter {chapter} did not save table {name}"
    for csv in (out / "tables").glob(f"{chapter}_*.csv"):
        _check_table(csv)
    (nb_path,) = (out / "notebooks").glob(f"{chapter}_*.ipynb")
    nb = nbformat.read(nb_path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure shown in the executed notebook"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "tiny" in injected[0].source, "the runner did not inject the tiny profile"


@pytest.mark.slow
def test_reported_numbers_are_consistent(tiny_book):
    out, _ = tiny_book
    t = out / "tables"
    fold = _check_table(t / "04_fold_check.csv")
    assert (fold.max_abs_logit_diff < 1e-3).all() and fold.same_predictions.all()
    assert (fold.recorded_test_accuracy - fold.reloaded_test_accuracy).abs().max() < 1e-6
    comp = _check_table(t / "04_compression.csv").set_index("model")
    assert comp.loc["NetGraft student (folded)", "params_M"] < comp.loc["teacher", "params_M"]
    assert comp.loc["NetGraft student (folded)", "MMACs"] < comp.loc["teacher", "MMACs"]
    res = _check_table(t / "05_results.csv")
    assert set(res.dataset) == {"cifar10", "cifar100"} and set(res.shots) == set(TINY_PARAMETERS["shots"])
    assert (res.seeds == 2).all() and (res.profile == "tiny").all()
    quoted = res[res.method == "netgraft_paper"].set_index(["dataset", "shots"])["paper_netgraft_accuracy_mean"]
    assert quoted[("cifar10", 1)] == 90.74 and quoted[("cifar100", 1)] == 64.22 and math.isnan(quoted[("cifar10", 2)])
    # The fidelity table: exactly the columns, every method, both teachers.
    fid = _check_table(t / "fidelity.csv")
    assert list(fid.columns) == ["dataset", "teacher", "method", "shots", "seeds", "accuracy_mean", "accuracy_std",
                                 "teacher_accuracy"]
    assert set(fid.method) >= {"netgraft", "netgraft_paper", "kd", "scratch", "kd_inherited", "scratch_inherited"}
    assert set(fid.teacher) == {"vgg16", "resnet56"}
    vgg = fid[fid.teacher == "vgg16"]
    assert len(vgg) == len(vgg.drop_duplicates(["dataset", "method", "shots"])) == 2 * 6 * 2
    # Verdicts (issue 32): every comparison carries one; the second teacher's table has exactly the columns.
    from nbgraft.runs.compare import VERDICTS

    comparisons = _check_table(t / "05_comparisons.csv")
    assert {"netgraft - teacher", "netgraft - netgraft_paper"} <= set(comparisons.comparison)
    assert set(comparisons.verdict) <= set(VERDICTS) and set(_check_table(t / "06_ablations.csv").verdict.dropna()) \
        <= set(VERDICTS)
    robust = _check_table(t / "robustness.csv")
    assert list(robust.columns) == ["comparison", "shots", "teacher_seed", "difference_mean", "ci95_low", "ci95_high",
                                    "verdict"]
    assert set(robust.teacher_seed) == {0, 1} and set(robust.comparison) == {"all_at_once - netgraft",
                                                                              "pruned_kd - netgraft"}
    assert set(robust.verdict) <= set(VERDICTS)
    (nb9,) = (out / "notebooks").glob("09_*.ipynb")
    shown = json.dumps([c.get("outputs", []) for c in nbformat.read(nb9, as_version=4).cells])
    assert "the same on a second teacher" in shown or "a second teacher says" in shown  # chapter 9 read them back
    timings = json.loads((out / "notebooks" / "timings.json").read_text())
    assert set(timings) >= {p.stem for p in book.find_chapters()}


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


@pytest.mark.slow
def test_book_builds_to_html_with_one_page_per_chapter_and_no_missing_figure(tiny_book):
    _, index = tiny_book
    html = index.parent
    assert index.name == "index.html" and index.is_file()
    for path in book.find_chapters():
        page = html / "book" / f"{path.stem}.html"
        assert page.is_file(), f"no HTML page for {path.stem}"
        parser = _Images()
        parser.feed(page.read_text())
        assert parser.srcs, f"{page.name} shows no figure"
        for src in parser.srcs:
            assert not src.startswith(("http://", "https://", "//")), f"{page.name} fetches {src} at view time"
            if src.startswith("data:"):
                continue
            assert (page.parent / src.split("#")[0].split("?")[0]).resolve().is_file(), f"{page.name}: missing {src}"


@pytest.mark.slow
def test_one_chapter_alone_builds_a_book_of_one_page(data_root, tmp_path):
    index = book.run_book(profile="tiny", chapters=["01"], data_root=data_root, output_root=tmp_path, device="cpu")
    assert index.is_file() and (index.parent / "book" / "01_introduction.html").is_file()
    assert not list((tmp_path / "notebooks").glob(".*"))  # no hidden partial notebook left
