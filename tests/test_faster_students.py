"""Students that drop residual blocks: their layout, which blocks the few-shot images choose, a start from the
teacher that is exact where the dropped blocks do nothing, and the speed table's columns."""

import json

import pytest
import torch

from nbgraft import grafting as G
from nbgraft.cache import config_hash
from nbgraft.models import build
from nbgraft.models import resnet as R
from helpers import randomise_bn

from test_models import PUBLISHED, _float_tol


def _silence(block: R.BasicBlock) -> None:
    """A residual block whose branch adds nothing (its last BN scales to zero): the block is the identity."""
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()


def test_a_student_that_drops_blocks_has_fewer_in_each_unit_and_grafts_from_the_first_such_unit():
    t = R.teacher_spec(56)
    s = R.student_spec(t, unit_blocks=(2, 3, 1))
    sizes = [u[3] for u in s.layout() if u[0] == "stage"]
    assert sizes == [2, 2, 2, 3, 3, 3, 1, 1, 1] and s.widths == t.widths and s.mids is None
    assert R.first_grafted(t, s) == 1 and R.first_grafted(t, R.student_spec(t, unit_blocks=(3, 3, 2))) == 7
    net = build(s)
    assert sum(isinstance(m, R.BasicBlock) for m in net.modules()) == 6 + 9 + 3
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # a spec without the option keeps the cache key it had before the option existed
    assert "unit_blocks" not in R.student_spec(t).cache_fields()
    assert config_hash({"s": R.student_spec(t)}) != config_hash({"s": R.student_spec(t, unit_blocks=(3, 3, 3))})
    with pytest.raises(ValueError, match="at least one"):
        R.student_spec(t, unit_blocks=(0, 2, 2))


def test_the_images_choose_the_blocks_whose_removal_moves_the_unit_least():
    torch.manual_seed(0)
    teacher = build(R.teacher_spec(20))  # units of one block
    t56 = randomise_bn(build(R.teacher_spec(56)))
    unit = t56.blocks[5]  # stage 2, blocks 4-6: none changes the stream's shape
    _silence(unit[1])
    x = torch.randn(8, 32, 16, 16)
    assert R.kept_blocks(unit, 2, x) == [0, 2]
    assert R.kept_blocks(unit, 2) == [0, 1]  # without images: the last block goes
    first_of_stage = t56.blocks[4]  # its first block halves the resolution: always kept
    _silence(first_of_stage[0])
    assert 0 in R.kept_blocks(first_of_stage, 1, torch.randn(8, 16, 32, 32))
    with pytest.raises(ValueError, match="no fewer than 1"):
        R.kept_blocks(teacher.blocks[4], 0)


def test_started_from_the_teacher_a_student_without_its_idle_blocks_computes_the_teacher():
    """Every unit's middle block silenced: the student keeping 2 of 3 blocks per unit, started from the teacher on
    images, drops exactly those and gives the teacher's logits (then folds to the same network)."""
    torch.manual_seed(1)
    teacher = randomise_bn(build(R.teacher_spec(56)))
    for unit in teacher.blocks[1:-1]:
        _silence(unit[1])
    s_spec = R.student_spec(teacher.spec, unit_blocks=(2, 2, 2))
    x = torch.randn(16, 3, 32, 32)
    parts = G.new_parts(teacher, s_spec, seed=0, init="teacher", x=x)
    student = G.export_student(teacher, parts, folded=True)
    with torch.no_grad():
        want = teacher(x)
        torch.testing.assert_close(student(x), want, rtol=0, atol=_float_tol(want, len(teacher)))
    assert sum(isinstance(m, R.BasicBlock) for m in student.modules()) == 18


def test_fskd_refuses_a_student_that_drops_blocks():
    t56 = build(R.teacher_spec(56))
    with pytest.raises(ValueError, match="keeps the teacher's blocks"):
        R.branch_ends(t56.blocks[1], R.build_unit(R.student_spec(t56.spec, unit_blocks=(2, 2, 2)), 1))


def test_the_speed_table_has_its_columns_and_measures_what_it_says(data_root, tmp_path):
    """Two students on the published ResNet-56 (tiny recipe): speed.csv's columns exactly, accuracy over the seeds,
    the MACs a block-dropping student saves (18 of 27 blocks), speed-ups as positive ratios (timings themselves are
    benchmarks, not tests)."""
    from nbgraft.runs.speed import COLUMNS, speed_runs, speed_table
    from nbgraft.runs.teacher import get_teacher

    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    students = {"width": {}, "drop": {"unit_blocks": [2, 2, 2]}}
    kw = {"data_root": data_root, "output_root": tmp_path, "device": "cpu"}
    runs = speed_runs(students, shots=(1,), seeds=(0, 1), profile="tiny", **kw)
    teacher, tm = get_teacher("cifar10", "tiny", teacher="resnet56", **kw)
    table = speed_table(runs, teacher, tmp_path, rounds=1)
    assert list(table.columns) == COLUMNS and list(table.student) == ["width", "drop"]
    assert set(table.seeds) == {2} and set(table.teacher) == {"resnet56"}
    assert table.teacher_accuracy.iloc[0] == pytest.approx(tm["test_accuracy"])
    for name, g in table.groupby("student"):
        accs = [r["test_accuracy"] for r in runs if r["student"] == name]
        assert g.accuracy_mean.iloc[0] == pytest.approx(sum(accs) / len(accs))
    drop = table.set_index("student").loc["drop"]
    assert drop.macs_ratio == pytest.approx(18 / 27, abs=0.01) and drop.params_ratio < 0.75
    assert (table[["cpu_speedup_b1", "cpu_speedup_b128"]] > 0).all().all()


def test_the_command_line_grafts_a_student_of_its_options(data_root, tmp_path, capsys):
    """`nbgraft graft --student JSON` grafts that student (chapter 8's faster one here); options the family's student
    does not take, or text that is not a JSON object, are refused with what to write instead."""
    from nbgraft.cli import main

    if not PUBLISHED.is_file():
        pytest.skip(f"the published ResNet-56 is not at {PUBLISHED}")
    common = ["graft", "--teacher", "resnet56", "--shots", "1", "--profile", "tiny", "--device", "cpu",
              "--data-root", str(data_root), "--output-root", str(tmp_path)]
    assert main([*common, "--student", '{"unit_blocks": [1, 3, 3]}', "--json"]) == 0
    out = capsys.readouterr().out
    m = json.loads(out[out.index("\n[") + 1:])[0]
    assert m["student_spec"]["unit_blocks"] == [1, 3, 3] and m["student_params"] < m["teacher_params"]
    assert main([*common, "--student", '{"depth_of_field": 3}']) == 2
    assert "takes no options ['depth_of_field']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--student", "[2, 2, 3]"])
    assert "--student takes a JSON object" in capsys.readouterr().err


def test_the_teacher_is_timed_with_its_batchnorms_folded():
    """fold_batchnorms: the same outputs with no BatchNorm left (a ResNet-56 and a VGG16 with BN statistics away from
    their defaults), the original untouched; a network whose BatchNorm does not follow the conv before it raises."""
    from nbgraft.models import fold_batchnorms
    from nbgraft.models import vgg

    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    for spec in (R.teacher_spec(56), vgg.teacher_spec(10, 0.25, batch_norm=True)):
        net = randomise_bn(build(spec))
        want = net(x)
        folded = fold_batchnorms(net, x)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        torch.testing.assert_close(folded(x), want, rtol=0, atol=_float_tol(want, len(net)))

    class NormFirst(torch.nn.Module):  # conv registered first, but its BatchNorm normalises the input
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.bn(x))

    with pytest.raises(ValueError, match="time it unfolded"):
        fold_batchnorms(randomise_bn(NormFirst()), x)
