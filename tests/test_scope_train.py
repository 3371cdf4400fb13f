"""The scope gate's training side (train/scope.py) and its ONNX output: fitted on the training cells only, the
threshold accepts the asked share of val, metrics.json `scope`, and the exported `ood` against an independent
NumPy Mahalanobis distance."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow
SIZE = 64


@pytest.fixture(scope="module")
def scope_run(tmp_path_factory):
    """A small CNN run (64 px, 8 epochs, 10 subjects x 16 cells) with --scope-accept 0.9."""
    from typer.testing import CliRunner

    from leuk_edge.cli import app
    from leuk_edge.synth.cells import write_synthetic_cnmc

    tmp = tmp_path_factory.mktemp("scope")
    root = write_synthetic_cnmc(tmp / "data", subjects=10, cells_per_subject=16, final_cells=2, seed=5)["root"]
    run = tmp / "run"
    res = CliRunner().invoke(app, ["train", "--data", root, "--out", str(run), "--epochs", "8", "--batch-size", "16",
                                   "--image-size", str(SIZE), "--patience", "6", "--scope-accept", "0.9"])
    assert res.exit_code == 0, res.output
    return run


def _split_items(run, split):
    from leuk_edge.train.data import load_dataset, make_splits

    cfg = json.loads((run / "config.json").read_text())
    return make_splits(load_dataset(cfg["data_root"]), cfg["val_fraction"], cfg["seed"])[split]


def _split_images(run, split):
    from leuk_edge.edge.preprocess import load_image

    items = _split_items(run, split)
    return np.stack([load_image(it.path, SIZE, SIZE, "area") for it in items]), np.array([it.label for it in items])


def _loso_scale(f, y, subjects):
    """By hand: each cell's squared Mahalanobis distance (scipy) under class means and a Ledoit-Wolf covariance
    fitted WITHOUT its subject (leave one subject out: 5 subjects, 5 folds); -> (mean, std) of those distances."""
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import ledoit_wolf

    d = np.empty(len(y))
    for s in np.unique(subjects):
        rest, held = subjects != s, subjects == s
        fr, yr = f[rest], y[rest]
        means = [fr[yr == c].mean(0) for c in (0, 1)]
        vi = np.linalg.inv(ledoit_wolf(fr - np.array(means)[yr], assume_centered=True)[0])
        d[held] = [min(mahalanobis(v, mu, vi) ** 2 for mu in means) for v in f[held]]
    return d.mean(), d.std()


def test_mahalanobis_reference_is_the_textbook_formula():
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import ledoit_wolf

    from leuk_edge.train import scope

    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 5)) + np.repeat([[0.0] * 5, [3.0] * 5], 100, axis=0)
    y = np.repeat([0, 1], 100)
    subjects = np.tile(np.arange(5), 40)  # 5 subjects: grouped folds = leave one subject out
    stats = scope.fit(f, y, groups=subjects)
    x = rng.normal(size=(7, 5))

    means = [f[y == c].mean(0) for c in (0, 1)]
    cov, _ = ledoit_wolf(np.r_[f[:100] - means[0], f[100:] - means[1]], assume_centered=True)
    vi = np.linalg.inv(cov)

    def dist(v):
        return min(mahalanobis(v, mu, vi) ** 2 for mu in means)

    centre, spread = _loso_scale(f, y, subjects)  # the tap's scale: distances of cells held out by subject
    expected = (np.array([dist(v) for v in x]) - centre) / spread
    np.testing.assert_allclose(scope.ood(stats, x), expected, rtol=1e-9)
    # the whitened form the ONNX graph computes is the same distance
    tap = stats.taps[0]
    w = tap.whitening
    alt = np.min([((x @ w - mu @ w) ** 2).sum(1) for mu in tap.means], axis=0)
    np.testing.assert_allclose(alt, [dist(v) for v in x], rtol=1e-9)


def test_the_farthest_tap_decides_each_on_its_held_out_scale():
    """Two taps: the score is the maximum of each tap's distance standardised by held-out training distances."""
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import ledoit_wolf

    from leuk_edge.train import scope

    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 60)
    subjects = np.tile(np.arange(5), 24)
    f1 = rng.normal(size=(120, 3)) + y[:, None] * 2.0
    f2 = rng.normal(size=(120, 6)) * 5.0  # a far bigger scale: it must not drown the first tap
    stats = scope.fit([f1, f2], y, ["a", "b"], groups=subjects)
    x1, x2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 6)) * 5.0
    z = []
    for f, x in ((f1, x1), (f2, x2)):
        means = [f[y == c].mean(0) for c in (0, 1)]
        vi = np.linalg.inv(ledoit_wolf(f - np.array(means)[y], assume_centered=True)[0])
        d_x = np.array([min(mahalanobis(v, mu, vi) ** 2 for mu in means) for v in x])
        centre, spread = _loso_scale(f, y, subjects)
        z.append((d_x - centre) / spread)
    np.testing.assert_allclose(scope.ood(stats, [x1, x2]), np.maximum(*z), rtol=1e-9)
    assert stats.names == ["a", "b"] and stats.metadata()["method"] == "mahalanobis-layers-max"


def test_a_narrow_tap_flags_what_a_wide_tap_of_new_subjects_hides():
    """Each subject shifts a 100-dimensional tap (its own stain, as in C-NMC); a 3-dimensional tap separates the
    classes. A cell of a new subject, 4 sd out in the narrow tap, must score above 99 % of fresh in-scope cells of
    new subjects. Scaled by the cells fitted and summed (the gate before), the new subjects' shift in the wide tap
    outweighed it (score 70 against a 99th percentile of 88)."""
    from leuk_edge.train import scope

    rng = np.random.default_rng(7)

    def cells(labels, subjects):
        offsets = {s: rng.normal(size=100) for s in np.unique(subjects)}
        return [rng.normal(size=(len(labels), 3)) + labels[:, None] * 3.0,
                rng.normal(size=(len(labels), 100)) + np.stack([offsets[s] for s in subjects])]

    y, subjects = np.repeat([0, 1], 50), np.tile(np.arange(5), 20)
    stats = scope.fit(cells(y, subjects), y, ["narrow", "wide"], groups=subjects)
    fresh = scope.ood(stats, cells(np.repeat([0, 1], 200), np.tile(np.arange(10, 14), 100)))
    out = cells(np.array([0]), np.array([20]))
    out[0] = np.array([[4.0, -4.0, 4.0]])  # ~4 sd from both class means in the narrow tap
    assert scope.ood(stats, out)[0] > np.quantile(fresh, 0.99)


def test_inception_taps_and_the_graph_that_computes_them():
    """InceptionV3 (random weights, 75 px): the taps are the mean and std of mixed1, mixed3 and mixed7 and the mean
    of the last maps, here read straight off the base's own layers; the `ood` of the export graph equals the NumPy
    reference (train.scope.ood) on those features."""
    import keras

    from leuk_edge.train import scope
    from leuk_edge.train.graph import explain_model
    from leuk_edge.train.models import build

    keras.utils.set_random_seed(2)
    model, base = build("inception", 75, weights=None)
    blocks = ("mixed1", "mixed3", "mixed7")
    names = scope.default_taps(model)
    assert names == [f"{st}:{base.name}/{b}" for b in blocks for st in ("mean", "std")] + ["mean:last"]
    x = np.random.default_rng(0).uniform(0, 1, size=(44, 75, 75, 3)).astype(np.float32)
    probe = keras.Model(base.inputs, [base.get_layer(b).output for b in (*blocks, "mixed10")])
    maps = [np.asarray(m, np.float64) for m in probe.predict(x * 2.0 - 1.0, verbose=0)]  # the model's Rescaling
    feats = [f for m in maps[:3] for f in (m.mean(axis=(1, 2)), m.std(axis=(1, 2)))] + [maps[3].mean(axis=(1, 2))]
    for want, got in zip(feats, scope.features_of(model, x, names)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    y, subjects = np.tile([0, 1], 16), np.repeat(np.arange(4), 8)
    stats = scope.fit([f[:32] for f in feats], y, names, groups=subjects)
    expected = scope.ood(stats, [f[32:] for f in feats])
    got = np.asarray(explain_model(model, scope=stats)(x[32:])[-1], np.float64)
    assert np.all(np.abs(got - expected) <= 1e-3 * np.maximum(1.0, np.abs(expected))), (got, expected)


def test_a_summed_gate_file_keeps_its_score(tmp_path):
    """scope.npz of the summed gate (method 'mahalanobis-layers') loads and scores as it did: the taps' standardised
    distances summed. By hand: tap a (identity precision, means (0,0) and (2,0), centre 1, spread 2) and tap b
    (precision 4, means 0 and 1, centre 0, spread 1); x_a = (1, 1), x_b = 0.5 -> (2 - 1)/2 + (1 - 0)/1 = 1.5."""
    from leuk_edge.train import scope

    np.savez(tmp_path / "scope.npz", means_0=np.array([[0.0, 0.0], [2.0, 0.0]]), precision_0=np.eye(2),
             means_1=np.array([[0.0], [1.0]]), precision_1=np.array([[4.0]]), names=np.array(["a", "b"]),
             centres=[1.0, 0.0], spreads=[2.0, 1.0], threshold=3.0, accept=0.95, accept_rate_val=0.95,
             n_train=10, method="mahalanobis-layers")
    stats = scope.load(tmp_path / "scope.npz")
    np.testing.assert_allclose(scope.ood(stats, [np.array([[1.0, 1.0]]), np.array([[0.5]])]), [1.5])
    assert stats.metadata()["method"] == "mahalanobis-layers"


def test_a_first_format_scope_file_keeps_its_raw_distance(tmp_path):
    """scope.npz of the first gate (one tap, method 'mahalanobis') loads and scores exactly as it did."""
    from leuk_edge.train import scope

    means, prec = np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 0.5]])
    np.savez(tmp_path / "scope.npz", means=means, precision=prec, threshold=3.0, accept=0.95,
             accept_rate_val=0.95, n_train=10, method="mahalanobis")
    stats = scope.load(tmp_path / "scope.npz")
    x = np.array([[1.0, 1.0], [2.0, 2.0]])
    # by hand: (1,1) -> min(2*1 + 0.5*1, 2*1 + 0.5*1) = 2.5; (2,2) -> min(2*4 + 0.5*4, 0 + 0.5*4) = 2.0
    np.testing.assert_allclose(scope.ood(stats, x), [2.5, 2.0])
    assert stats.names == ["penultimate"] and stats.metadata()["method"] == "mahalanobis"


def test_the_penultimate_tap_is_scaled_on_val_cells_and_keeps_that_on_disk(tmp_path):
    """scale_on_val: the penultimate tap takes the mean and std of its distances on the val cells; a map tap keeps
    its held-out training scale; under 4 val cells nothing changes. By hand: tap precision I, class means 0 and
    10 (1-D); val cells at 1, 2, 3, 4 -> squared distances 1, 4, 9, 16 -> centre 7.5, spread sqrt(32.25)."""
    from leuk_edge.train import scope

    means, prec = np.array([[0.0], [10.0]]), np.eye(1)
    stats = scope.ScopeStats(taps=[scope.Tap("mean:last", means, prec, 2.0, 3.0),
                                   scope.Tap("penultimate", means, prec, 2.0, 3.0)], threshold=1.0, n_train=8)
    val = np.array([[1.0], [2.0], [3.0], [4.0]])
    scope.scale_on_val(stats, [val[:3], val[:3]])  # 3 val cells: too few to scale on
    assert [(t.centre, t.spread, t.scaled_on) for t in stats.taps] == [(2.0, 3.0, "train")] * 2
    scope.scale_on_val(stats, [val, val])
    assert (stats.taps[0].centre, stats.taps[0].spread, stats.taps[0].scaled_on) == (2.0, 3.0, "train")
    pen = stats.taps[1]
    assert pen.scaled_on == "val" and pen.centre == pytest.approx(7.5) and pen.spread == pytest.approx(32.25 ** 0.5)
    back = scope.load(scope.save(stats, tmp_path / "scope.npz"))
    assert [(t.centre, t.spread, t.scaled_on) for t in back.taps] == [(t.centre, t.spread, t.scaled_on)
                                                                      for t in stats.taps]
    # x = 5: distances 25 on both; z = (25 - 2)/3 = 7.67 (map tap) and (25 - 7.5)/5.68 = 3.08: the maximum
    np.testing.assert_allclose(scope.ood(back, [np.array([[5.0]])] * 2), [23.0 / 3.0])


def test_threshold_accepts_the_asked_share_of_val():
    from leuk_edge.train.scope import choose_threshold

    v = np.random.default_rng(1).gamma(3.0, size=200)
    t, rate = choose_threshold(v, 0.95)
    assert rate == pytest.approx(0.95) and np.mean(v <= t) == rate
    t, rate = choose_threshold(v, 1.0)
    assert rate == 1.0 and t > v.max()
    # standardised scores can all be negative: accepting every val cell still puts the threshold above them all
    t, rate = choose_threshold(-v, 1.0)
    assert rate == 1.0 and t > (-v).max()


def _tap_features(model, x):
    """The CNN's scope taps, read straight off its layers (not through train.scope): the mean and the standard
    deviation over space (NumPy) of the last two max-pooling outputs and of the maps the global pooling reads, and
    the penultimate features (the input of p_all's Dense layer)."""
    import keras

    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)][-2:]
    gap = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)][0]
    probe = keras.Model(model.inputs[0], [model.get_layer(pools[0]).output, model.get_layer(pools[1]).output,
                                          gap.input, model.get_layer("p_all").input])
    maps = [np.asarray(m, np.float64) for m in probe.predict(x, verbose=0)]
    names, feats = [], []
    for src, m in zip([*pools, "last"], maps[:3]):
        names += [f"mean:{src}", f"std:{src}"]
        feats += [m.mean(axis=(1, 2)), m.std(axis=(1, 2))]
    return names + ["penultimate"], feats + [maps[3]]


def test_scope_is_fitted_on_training_cells_only(scope_run):
    import keras

    from leuk_edge.train import scope

    stats = scope.load(scope_run / scope.FILENAME)
    model = keras.saving.load_model(scope_run / "model.keras")
    x, y = _split_images(scope_run, "train")
    # independently: the train split's images from disk, each tap's features from the model's own layers
    names, feats = _tap_features(model, x)
    assert stats.names == names  # mean and std of the last two pooling stages and of the last maps; penultimate
    ref = scope.fit(feats, y, names, groups=[it.subject for it in _split_items(scope_run, "train")])
    assert stats.n_train == len(y)
    # the penultimate tap's scale: its distances on the val cells (the network fitted the training cells' own)
    pen = ref.taps[-1]
    d_val = pen.distance(_tap_features(model, _split_images(scope_run, "val")[0])[1][-1])
    pen.centre, pen.spread = d_val.mean(), d_val.std()
    assert [t.scaled_on for t in stats.taps] == ["train"] * 6 + ["val"]
    for tap, want in zip(stats.taps, ref.taps):
        np.testing.assert_allclose(tap.means, want.means, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(tap.precision, want.precision, rtol=1e-3,
                                   atol=1e-3 * np.abs(want.precision).max())
        assert tap.centre == pytest.approx(want.centre, rel=1e-3) and tap.spread == pytest.approx(want.spread, rel=1e-3)


def test_metrics_scope_entry_and_val_accept_rate(scope_run):
    from leuk_edge.edge.run_metrics import split_metrics
    from leuk_edge.train import scope

    metrics = json.loads((scope_run / "metrics.json").read_text())
    entry = metrics["scope"]
    assert "scope" not in split_metrics(metrics)  # describes the run, not a split
    assert entry["method"] == "mahalanobis-layers-max" and entry["fitted_on"] == "train" and entry["accept"] == 0.9
    assert entry["taps"] == scope.load(scope_run / scope.FILENAME).names and 0 <= entry["other_flagged"] <= 1
    assert json.loads((scope_run / "config.json").read_text())["scope_accept"] == 0.9
    stats = scope.load(scope_run / scope.FILENAME)
    assert entry["threshold"] == pytest.approx(stats.threshold)
    n_val = metrics["val"]["n"]
    assert 0.9 <= entry["accept_rate_val"] <= 0.9 + 1.0 / n_val + 1e-9
    assert entry["in_scope_rate"]["val"] == entry["accept_rate_val"] and 0 <= entry["in_scope_rate"]["test"] <= 1
    # drawn out-of-scope cells lie farther from the training cells than in-scope test cells
    assert entry["n_other"] >= 9 and entry["auroc_other"] > 0.6, entry


# ------------------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(scope_run):
    from leuk_edge.export.exporter import export_model

    result = export_model(scope_run / "model.keras", scope_run / "model.onnx", parity_n=12, int8=True,
                          variant_n=32)
    assert result.fp32.passed, result.fp32.parity.summary()
    return scope_run / "model.onnx", result


def test_the_model_card_states_the_scope_gate_and_its_figures(scope_run, exported):
    entry = json.loads((scope_run / "metrics.json").read_text())["scope"]
    card = (scope_run / "model.card.md").read_text()
    section = card.split("## Scope gate", 1)[1].split("\n## ", 1)[0]
    assert "mahalanobis-layers-max" in section and f"{entry['auroc_other']:.4f}" in section
    assert f"{entry['in_scope_rate']['test']:.4f}" in section and "`other`" in section


def test_onnx_ood_matches_an_independent_mahalanobis(scope_run, exported):
    import keras
    from scipy.spatial.distance import mahalanobis

    from leuk_edge.edge import Classifier
    from leuk_edge.train import scope

    path, result = exported
    clf = Classifier(path)
    stats = scope.load(scope_run / scope.FILENAME)
    assert clf.has_scope and clf.scope == {"method": "mahalanobis-layers-max", "taps": stats.names,
                                           "threshold": pytest.approx(stats.threshold), "fitted_on": "train",
                                           "accept_rate_val": stats.accept_rate_val}
    assert [o.name for o in clf.session.get_outputs()] == ["p_all", "cam", "ood"]
    x, _ = _split_images(scope_run, "test")
    model = keras.saving.load_model(scope_run / "model.keras")
    _, feats = _tap_features(model, x)
    z = []
    for tap, f in zip(stats.taps, feats):  # scipy's distance per tap, on the tap's saved scale; the farthest tap
        d = np.array([min(mahalanobis(v, mu, tap.precision) ** 2 for mu in tap.means) for v in f])
        z.append((d - tap.centre) / tap.spread)
    expected = np.max(z, axis=0)
    got = clf.infer(x).ood
    assert np.all(np.abs(got - expected) <= 1e-3 * np.maximum(1.0, np.abs(expected))), (got, expected)
    ood = result.fp32.parity.ood
    assert ood["checked"] and ood["passed"] and ood["agreement"] == 1.0
    assert json.loads(result.fp32.parity_path.read_text())["ood"]["max_rel_diff"] <= 1e-3
    # the INT8 variant keeps the gate and is judged on it: its in/out decisions against FP32's (on this tiny run,
    # at --scope-accept 0.9, 1-2 of 32 val cells near the threshold may flip: then the variant fails, as it must)
    int8 = result.variants[0].parity
    assert int8.ood["checked"] and int8.ood["min_agreement"] == 0.98
    assert int8.passed == (int8.ood["agreement"] >= 0.98 and int8.decision_agreement >= 0.98)


def test_drawn_out_of_scope_cells_score_higher_and_are_labelled_other(scope_run, exported):
    from sklearn.metrics import roc_auc_score

    from leuk_edge.edge import Classifier
    from leuk_edge.synth.others import draw_other_tile

    clf = Classifier(exported[0])
    x, _ = _split_images(scope_run, "test")
    ood_in = clf.infer(x).ood
    rng = np.random.default_rng(3)
    neutrophils = [draw_other_tile("neutrophil", rng)[0] for _ in range(12)]
    ood_out = clf.infer_rgb(neutrophils).ood
    auroc = roc_auc_score(np.r_[np.zeros(len(ood_in)), np.ones(len(ood_out))], np.r_[ood_in, ood_out])
    assert auroc > 0.6, auroc
    # hand-made patterns that are plainly not cells: labelled `other` by the Classifier's decision rule
    patterns = [draw_other_tile(kind, rng)[0] for kind in ("disc", "checkerboard") for _ in range(4)]
    labels = clf.labels(clf.infer_rgb(patterns))
    assert labels.count("other") >= 6, (labels, clf.infer_rgb(patterns).ood, clf.ood_threshold)


def test_tampered_ood_constants_fail_the_gate(scope_run, exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    from leuk_edge.export.parity import check_parity, check_variant
    from leuk_edge.train import scope

    proto = onnx.load(str(exported[0]))
    stats = scope.load(scope_run / scope.FILENAME)
    hits = []
    for tap in stats.taps:  # every tap's whitened class means in the graph (under the maximum, a tap that never
        target = (tap.means @ tap.whitening).astype(np.float32)  # wins on the checked cells would not show)
        found = [init for init in proto.graph.initializer if int(np.prod(init.dims)) == target.size
                 and np.allclose(numpy_helper.to_array(init).reshape(target.shape), target, rtol=1e-5)]
        assert len(found) == 1, tap.name
        hits += found
    original = {h.name: numpy_helper.to_array(h).copy() for h in hits}

    def scale(factor):
        for h in hits:
            h.CopyFrom(numpy_helper.from_array(original[h.name] * np.float32(factor), h.name))
        onnx.save(proto, str(bad))

    bad = tmp_path / "tampered.onnx"
    scale(1.05)
    report = check_parity(scope_run / "model.keras", bad, n=8, pipeline=False)
    assert not report.passed and report.max_abs_diff <= 1e-4  # P(all) untouched: only the scope score fails
    assert any("ood differs" in f for f in report.failures), report.failures
    # a variant whose distances moved that far fails its in/out agreement with the FP32 model
    scale(3.0)
    variant = check_variant(exported[0], bad, n=32, min_agreement=0.5)
    assert not variant.passed and variant.decision_agreement == 1.0, variant.summary()
    assert variant.ood["agreement"] < 0.98


def test_evaluate_reports_the_runs_scope_gate(scope_run):
    from leuk_edge.train.evaluate import evaluate

    cfg = json.loads((scope_run / "config.json").read_text())
    saved = json.loads((scope_run / "metrics.json").read_text())["scope"]
    again = evaluate(scope_run, cfg["data_root"])["scope"]
    assert again["threshold"] == saved["threshold"]  # the trained gate, not refitted
    for split in ("val", "test"):
        assert again["in_scope_rate"][split] == pytest.approx(saved["in_scope_rate"][split])
    assert again["auroc_other"] == pytest.approx(saved["auroc_other"], abs=1e-6)
