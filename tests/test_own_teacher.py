"""A CIFAR ResNet checkpoint a user brings (another depth, no name nbgraft knows) goes through the experiments
layer as the built-in teachers do: cached runs keyed by the file's checksum, the ResNet family's recipes, tables
naming it, the command line's --teacher-weights; the published file given by its path is the published teacher."""

from pathlib import Path

import pytest
import torch

from nbgraft import load_teacher
from nbgraft.cli import main
from nbgraft.models import resnet as R
from nbgraft.profiles import get_profile, recipe_family
from nbgraft.runs.experiments import results_frame, run_entry, run_method
from nbgraft.runs.teacher import check_teacher, teacher_entry, teacher_label

PUBLISHED = Path(__file__).resolve().parents[2] / "shared" / "teachers" / "resnet56-4bfd9763.th"


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory) -> Path:
    """A ResNet-20 in the published format (the ResNet-56's stem, first three blocks per stage and head), saved
    without num_batches_tracked as such files are."""
    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    raw = torch.load(PUBLISHED, map_location="cpu", weights_only=True)["state_dict"]
    small = {k: v for k, v in raw.items() if not k.startswith("module.layer") or int(k.split(".")[2]) < 3}
    path = tmp_path_factory.mktemp("teachers") / "my_resnet20.th"
    torch.save({"state_dict": small}, path)
    return path


def test_a_checkpoint_is_a_teacher_of_the_experiments_layer(resnet20, data_root, tmp_path):
    """Given by its path or as the network load_teacher returned, the same cached run, named by depth and checksum;
    a grafting method and a student method both run; tables list it."""
    kw = {"data_root": data_root, "output_root": tmp_path, "device": "cpu"}
    label = f"resnet20-{R.file_md5(resnet20)[:8]}"
    assert teacher_label(str(resnet20)) == label and recipe_family(str(resnet20)) == "resnet"
    m = run_method("netgraft", "cifar10", 1, 0, "tiny", teacher=str(resnet20), **kw)
    assert m["teacher_name"] == label and 0 <= m["test_accuracy"] <= 100
    assert m["schedule"]["init"] == get_profile("tiny").recipe("netgraft", "cifar10", "resnet56").init
    again = run_method("netgraft", "cifar10", 1, 0, "tiny", teacher=load_teacher(resnet20, arch="resnet20"), **kw)
    assert again["cache_key"] == m["cache_key"] and again["finished_at"] == m["finished_at"]  # read back
    assert run_entry("netgraft", "cifar10", 1, 0, "tiny", teacher=resnet20, data_root=data_root,
                     output_root=tmp_path).key == m["cache_key"]
    kd = run_method("pruned_kd", "cifar10", 1, 0, "tiny", teacher=resnet20, **kw)
    assert kd["teacher_name"] == label and kd["student_spec"]["depth"] == 20
    frame = results_frame(tmp_path, profile="tiny", teacher=resnet20)
    assert set(frame.teacher_name) == {label} and set(frame.method) == {"netgraft", "pruned_kd"}


def test_the_command_line_grafts_a_checkpoint_and_checks_its_depth(resnet20, data_root, tmp_path, capsys):
    common = ["--profile", "tiny", "--device", "cpu", "--data-root", str(data_root), "--output-root", str(tmp_path)]
    assert main(["graft", "--teacher-weights", str(resnet20), "--arch", "resnet20", "--shots", "1", *common]) == 0
    assert f"resnet20-{R.file_md5(resnet20)[:8]} cifar10 N=1 seed=0 netgraft" in capsys.readouterr().out
    assert main(["graft", "--teacher-weights", str(resnet20), "--arch", "resnet56", *common]) == 2
    assert "holds a ResNet-20" in capsys.readouterr().err
    assert main(["graft", "--teacher-weights", str(resnet20), *common]) == 2
    assert "needs --arch" in capsys.readouterr().err
    assert main(["graft", "--arch", "resnet20", *common]) == 2
    assert "goes with --teacher-weights" in capsys.readouterr().err


def test_what_cannot_be_a_teacher_says_what_to_do(resnet20, tmp_path):
    raw = torch.load(resnet20, map_location="cpu", weights_only=True)["state_dict"]
    raw["module.linear.weight"], raw["module.linear.bias"] = torch.zeros(100, 64), torch.zeros(100)
    hundred = tmp_path / "resnet20_c100.th"
    torch.save({"state_dict": raw}, hundred)
    with pytest.raises(ValueError, match="has 100 classes, cifar10 has 10"):
        check_teacher(str(hundred), "cifar10")
    assert check_teacher(str(hundred), "cifar100") == str(hundred)
    with pytest.raises(ValueError, match="unknown teacher .*--teacher-weights"):
        check_teacher(str(tmp_path / "missing.th"), "cifar10")
    with pytest.raises(ValueError, match="through its checkpoint file"):
        check_teacher(R.build(R.teacher_spec(20)), "cifar10")


def test_the_published_file_by_path_is_the_published_teacher(data_root):
    """Same name, same teacher key, same run keys: the book's ResNet-56 cache serves a user who passes the file."""
    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    assert teacher_label(PUBLISHED) == "resnet56"
    by = {t: teacher_entry("cifar10", "cpu", teacher=t, data_root=data_root).key for t in ("resnet56", str(PUBLISHED))}
    assert len(set(by.values())) == 1
    keys = {run_entry("netgraft", "cifar10", 10, 1, "cpu", teacher=t, data_root=data_root).key
            for t in ("resnet56", PUBLISHED)}
    assert len(keys) == 1
