"""C-NMC layout reading, subject names, subject-disjoint splits, unreadable images, inspect."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app
from leuk_edge.train.data import DataError, load_dataset, make_splits, split_by_subject, subject_of


def test_subject_names():
    assert subject_of("UID_H10_43_1_hem.bmp") == "H10"
    assert subject_of("UID_11_10_1_all.bmp") == "11"
    assert subject_of("UID_H3_2_12_HEM.BMP") == "H3"
    assert subject_of("cell_007.png") == "cell_007"


def test_reads_exact_cnmc_layout(synth_cnmc):
    ds = load_dataset(synth_cnmc.parent)  # --data may be the folder above C-NMC_Leukemia
    assert ds.root == synth_cnmc and ds.layout == "cnmc" and ds.synthetic
    # 8 subjects: 3 hem (H1..H3) and 5 all; one subject per class goes to the prelim test set
    assert {it.subject for it in ds.train} == {"1", "2", "3", "4", "H1", "H2"}
    assert {it.fold for it in ds.train} == {"fold_0", "fold_1", "fold_2"}
    for it in ds.train:  # label from the folder agrees with the name suffix
        assert it.path.endswith("_all.bmp") == (it.label == 1)
    # prelim set: renamed 1..N.bmp, labels and original subject from the CSV
    assert len(ds.test) == 12 and {it.subject for it in ds.test} == {"5", "H3"}
    rows = (synth_cnmc / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv").read_text().splitlines()
    assert rows[0] == "Patient_ID,new_names,labels"
    by_new = {r.split(",")[1]: r.split(",") for r in rows[1:]}
    for it in ds.test:
        orig, _, lab = by_new[it.path.rsplit("/", 1)[1]]
        assert int(lab) == it.label and orig.startswith(f"UID_{it.subject}_")
    assert len(ds.final) == 3


def test_splits_are_subject_disjoint_and_stratified(synth_cnmc):
    ds = load_dataset(synth_cnmc)
    for seed in range(5):
        splits = make_splits(ds, 0.2, seed)
        subjects = {k: {it.subject for it in v} for k, v in splits.items()}
        assert not subjects["train"] & subjects["val"]
        assert not (subjects["train"] | subjects["val"]) & subjects["test"]
        for name in ("train", "val", "test"):
            assert {it.label for it in splits[name]} == {0, 1}, name
    assert make_splits(ds, 0.2, 3) == make_splits(ds, 0.2, 3)  # seeded


def test_plain_folder_gets_three_disjoint_splits(tmp_path, synth_cnmc):
    src = load_dataset(synth_cnmc)
    for i, it in enumerate(src.train + src.test):
        cls = "all" if it.label else "hem"
        (tmp_path / cls).mkdir(exist_ok=True)
        shutil.copy(it.path, tmp_path / cls / f"UID_{it.subject}_{i}_1_{cls}.bmp")
    ds = load_dataset(tmp_path)
    assert ds.layout == "plain" and not ds.test
    splits = make_splits(ds, 0.2, 0)
    subjects = [{it.subject for it in v} for v in splits.values()]
    assert len(splits) == 3 and sum(map(len, subjects)) == len(set().union(*subjects))


def test_too_few_subjects_is_a_clear_error(synth_cnmc):
    items = [it for it in load_dataset(synth_cnmc).train if it.subject in {"1", "H1", "H2"}]
    with pytest.raises(DataError, match="class 'all' has 1 subject"):
        split_by_subject(items, {"val": 0.2})


def test_corrupt_image_is_listed_and_skipped(tmp_path, synth_cnmc):
    root = tmp_path / "C-NMC_Leukemia"
    shutil.copytree(synth_cnmc, root)
    bad = root / "training_data" / "fold_0" / "all" / "UID_1_99_1_all.bmp"
    bad.write_bytes(b"BM this is not a bitmap")
    (root / "training_data" / "fold_0" / "hem" / "UID_H1_99_1_hem.bmp").write_bytes(b"")
    ds = load_dataset(tmp_path)
    assert {p.rsplit("/", 1)[1] for p, _ in ds.unreadable} == {"UID_1_99_1_all.bmp", "UID_H1_99_1_hem.bmp"}
    assert all(it.path != str(bad) for it in ds.train)
    result = CliRunner().invoke(app, ["data", "inspect", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["unreadable"]) == 2 and report["image_sizes"] == {"450x450": 51}


def test_missing_class_and_missing_folder_are_clear_errors(tmp_path):
    (tmp_path / "all").mkdir()
    (tmp_path / "hem").mkdir()
    from leuk_edge.synth.cells import write_bmp, render_cnmc_image
    import numpy as np

    write_bmp(tmp_path / "all" / "UID_1_1_1_all.bmp", render_cnmc_image(np.random.default_rng(0), "all"))
    with pytest.raises(DataError, match="class 'hem' has no readable training images"):
        load_dataset(tmp_path)
    result = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "data folder not found" in result.output
