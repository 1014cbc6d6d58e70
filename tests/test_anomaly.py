"""The anomaly strategy: good-only memory bank, coreset, nearest-neighbour scores, thresholds, --defects."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from tiny_data import add_scratch, textured_part, write_overlapping_parts, write_scratched_textures

from tfx_transfer.training import anomaly
from tfx_transfer.training.anomaly import default_blocks, greedy_coreset, nearest_distances
from tfx_transfer.evaluation.metrics import choose_operating_point
from tfx_transfer.config.recipe import RecipeError
from tfx_transfer.experiments.prepare import prepare_data, training_indices
from tfx_transfer.experiments.runner import run
from tfx_transfer.experiments.sweep import compare, parse_defects

# tiny_test with random weights at 64 px: its top block is an 8x8 grid of patches. Random
# convolutions already tell a bright thin line from a woven texture; ImageNet weights are for the
# integration measurements (ELPV, in the closing note), not for unit tests.
ANOMALY = ["model.backbone=tiny_test", "model.weights=none", "model.image_size=64", "data.positive_class=scratched",
           "data.weight_column=null", "evaluation.bootstrap=50", "anomaly.coreset_fraction=0.1",
           "anomaly.border_margin=0.0", "training.strategy=anomaly"]


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    return write_scratched_textures(tmp_path_factory.mktemp("textures") / "line")


@pytest.fixture(scope="module")
def anomaly_run(textures, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run("product_defects", data=textures, overrides=ANOMALY, out=tmp_path_factory.mktemp("anomaly") / "run",
                   verbose=0)


def test_a_planted_scratch_ranks_above_clean_textures(anomaly_run, tmp_path):
    from tfx_transfer.training.anomaly import load_detector
    from tfx_transfer.data.sources import ImageTable

    predictions = np.load(anomaly_run.run_dir / "predictions.npz")
    truth, distance = predictions["test_true"], predictions["test_distance"]
    assert distance[truth == 1].min() > distance[truth == 0].max()  # every scratch above every clean part
    assert anomaly_run.metrics["roc_auc"] == 1.0
    # The same parts with and without their scratch, through the saved detector: a scratch never lowers
    # a part's score (which is its worst patch) and raises most (on one of six, the clean part's worst
    # patch lies elsewhere and stays the worst).
    detector = load_detector(anomaly_run.run_dir / "model.keras", anomaly_run.run_dir / "anomaly.npz")
    rng = np.random.default_rng(5)
    clean = np.stack([textured_part(rng) for _ in range(6)])
    scratched = np.stack([add_scratch(part, rng) for part in clean])
    table = ImageTable(paths=None, arrays=np.concatenate([clean, scratched]), labels=np.repeat([0, 1], 6),
                       class_names=["good", "scratched"], source="arrays")
    distances, maps = detector.distances(table, np.arange(12))
    assert (distances[6:] >= distances[:6]).all() and (distances[6:] > distances[:6]).sum() >= 5
    np.testing.assert_allclose(distances, maps.reshape(12, -1).max(axis=1))  # the score is the map's largest patch
    # With a border margin, patches in the outer quarter of each side do not count (the map still has them).
    detector.border_margin = 0.25
    inner, same_maps = detector.distances(table, np.arange(12))
    np.testing.assert_allclose(same_maps, maps)
    np.testing.assert_allclose(inner, maps[:, 2:6, 2:6].reshape(12, -1).max(axis=1))
    np.savez(tmp_path / "anomaly.npz", **detector.arrays())  # the margin is saved with the bank
    assert load_detector(anomaly_run.run_dir / "model.keras", tmp_path / "anomaly.npz").border_margin == 0.25


def test_the_run_learns_from_good_images_only_and_reports_the_bank(anomaly_run):
    report, facts = anomaly_run.report, anomaly_run.report["anomaly"]
    train_counts = report["data"]["train_counts"]
    assert train_counts[1] == 0 and report["data"]["n_train"] == facts["good_images"] == train_counts[0]
    assert facts["defects_ignored"] > 0 and facts["blocks"] == ["top"] and facts["grid"] == [8, 8]
    assert facts["bank_size"] == round(0.1 * facts["patches"]) and facts["bank_megabytes"] > 0
    assert report["explanations"]["method"] == "anomaly_map" and report["explanations"]["gallery"]
    info = json.loads((anomaly_run.run_dir / "model.json").read_text())
    assert info["model"] == "anomaly"
    markdown = (anomaly_run.run_dir / "report.md").read_text()
    assert "## Anomaly detection (good parts only)" in markdown and "were not used" in markdown
    assert "anomaly maps" in (anomaly_run.run_dir / "report.html").read_text()


def test_validation_without_defects_gives_the_quantile_threshold(tmp_path):
    import csv

    root = write_scratched_textures(tmp_path / "line", good=30, scratched=8)
    rows = [(str(path), path.parent.name) for path in sorted(root.glob("*/*.png"))]
    good = [row for row in rows if row[1] == "good"]
    scratched = [row for row in rows if row[1] == "scratched"]
    # validation: good parts only; test: both
    split = {row: "train" for row in good[:18]} | {row: "val" for row in good[18:24]} | \
        {row: "test" for row in good[24:] + scratched}
    with open(tmp_path / "parts.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows([*row, split[row]] for row in rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run("product_defects", data=tmp_path / "parts.csv", out=tmp_path / "run", verbose=0,
                     overrides=[*ANOMALY, "data.options={split_column: split}", "evaluation.good_quantile=0.8"])
    point = result.metrics["operating_point"]
    assert point["kind"] == "good_quantile" and point["quantile"] == 0.8
    predictions = np.load(result.run_dir / "predictions.npz")
    good_scores = np.sort(predictions["val_score"][:, 1])
    assert point["threshold"] == np.quantile(good_scores, 0.8, method="higher")
    assert (good_scores >= point["threshold"]).mean() == pytest.approx(0.2, abs=1 / 6)
    assert result.report["calibration"]["note"].startswith("not calibrated")
    assert "80.0% quantile of good images" in (result.run_dir / "report.md").read_text()


def test_the_quantile_point_needs_good_images_and_argmax_stays_the_default_fallback():
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    point = choose_operating_point(np.zeros(4, int), scores, "target_recall", 1, 0.9, good_quantile=0.75)
    assert point.kind == "good_quantile" and point.threshold == 0.4  # a quarter of good images at or above it
    assert point.predict(scores).tolist() == [0, 0, 1, 0]
    with pytest.warns(UserWarning, match="falls back to argmax"):
        assert choose_operating_point(np.zeros(4, int), scores, "target_recall", 1, 0.9).kind == "argmax"
    with pytest.raises(ValueError, match="no image at all"):
        choose_operating_point(np.zeros(0, int), np.zeros((0, 2)), "target_recall", 1, 0.9, good_quantile=0.9)


def test_greedy_coreset_keeps_rare_patches_and_covers_better_than_a_random_sample():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 0.1, (2000, 200))  # 200 dimensions: selection runs on the projection
    rare = rng.normal(0, 0.1, (5, 200)) + 3.0
    points = np.concatenate([common, rare]).astype("float32")
    chosen = greedy_coreset(points, 40)
    assert len(set(chosen.tolist())) == 40 and np.isin(np.arange(2000, 2005), chosen).any()
    random_pick = rng.choice(len(points), 40, replace=False)

    def coverage(indices):  # the largest distance from a point to its nearest chosen point
        return nearest_distances(points, points[indices]).max()

    assert coverage(chosen) < coverage(random_pick)
    assert greedy_coreset(points[:10], 50).tolist() == list(range(10))


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(1)
    queries, bank = rng.normal(size=(300, 16)), rng.normal(size=(50, 16))
    expected = np.sqrt(((queries[:, None, :] - bank[None]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_allclose(nearest_distances(queries, bank), expected, rtol=1e-4)


def test_memory_stays_bounded_when_the_bank_is_larger_than_a_batch():
    # 40,000 query patches against a bank of 20,000: the whole distance matrix would be 3.2 GB.
    code = (
        "import resource, numpy as np\n"
        "from tfx_transfer.training.anomaly import nearest_distances\n"
        "rng = np.random.default_rng(0)\n"
        "bank = rng.normal(size=(20000, 32)).astype('float32')\n"
        "queries = rng.normal(size=(40000, 32)).astype('float32')\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "distances = nearest_distances(queries, bank)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(len(distances), (after - before) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, grown_megabytes = map(int, done.stdout.split())
    assert count == 40000 and grown_megabytes < 600, done.stdout


def test_the_pool_of_patches_is_sampled_when_the_data_has_more(textures, monkeypatch):
    from tfx_transfer.data.sources import load_source

    monkeypatch.setattr(anomaly, "MAX_POOL", 500)
    table = load_source(str(textures))
    good = np.flatnonzero(table.labels == 0)
    detector = anomaly.fit_detector(table, good, "tiny_test", None, (64, 64), coreset_fraction=0.005)
    facts = detector.facts
    assert facts["patches"] == 64 * len(good) and 350 < facts["pool"] < 650
    assert facts["bank_size"] == round(0.005 * facts["patches"]) == len(detector.bank)


def test_default_blocks_take_strides_8_and_16():
    assert default_blocks({"b1": 150, "b2": 75, "b3": 38, "b4": 19, "b5": 10}, 300) == ["b3", "b4"]
    assert default_blocks({"stem": 16, "top": 8}, 64) == ["top"]
    assert default_blocks({"stem": 4, "top": 2}, 64) == ["stem"]


def test_defect_counts_are_nested_and_leave_the_good_images_alone(textures):
    from tfx_transfer.config.recipe import as_recipe

    prepared = prepare_data(as_recipe("product_defects", ANOMALY), textures)
    labels = prepared.table.labels
    every = training_indices(prepared)
    few, more = training_indices(prepared, defects=2), training_indices(prepared, defects=5)
    assert (labels[few] == 1).sum() == 2 and (labels[more] == 1).sum() == 5
    assert set(few) <= set(more) <= set(every)
    assert set(few[labels[few] == 0]) == set(every[labels[every] == 0])


def test_errors_say_what_was_expected(tmp_path, textures):
    with pytest.raises(ValueError, match=r"defect image counts like 0,5,20,all.*'5,many'"):
        parse_defects("5,many")
    assert parse_defects("all,20,0,5") == [0, 5, 20, None]
    with pytest.raises(ValueError, match="one training-set size"):
        compare("product_defects", "anomaly", [0.5, 1.0], data=textures, overrides=ANOMALY, out=tmp_path / "c",
                defects="0,5")
    with pytest.raises(ValueError, match=r"anomaly.feature_blocks names 'block9'.*Its blocks, from stem to top"):
        run("product_defects", data=textures, overrides=[*ANOMALY, "anomaly.feature_blocks=block9"],
            out=tmp_path / "r", verbose=0)
    with pytest.raises(RecipeError, match="coreset_fraction"):
        run("product_defects", data=textures, overrides=[*ANOMALY, "anomaly.coreset_fraction=0"], out=tmp_path / "r2")
    with pytest.raises(ValueError, match="not tfx-transfer train"):
        from tfx_transfer.config.strategies import TrainConfig, plan_phases

        plan_phases(TrainConfig(strategy="anomaly"))


def test_anomaly_needs_two_classes(tmp_path):
    from tiny_data import write_solid_folder

    data = write_solid_folder(tmp_path / "three")
    with pytest.raises(ValueError, match="needs two classes, good and defect"):
        run("product_defects", data=data, overrides=[*ANOMALY, "data.positive_class=null",
                                                      "evaluation.operating_point=argmax"], out=tmp_path / "r", verbose=0)


@pytest.mark.slow
def test_compare_puts_anomaly_beside_supervised_at_each_defect_count(tmp_path):
    data = write_overlapping_parts(tmp_path / "parts", count=30)
    overrides = [item for item in ANOMALY if not item.startswith(("data.positive_class", "training.strategy"))]
    overrides += ["data.positive_class=scratched", "training.epochs=3", "training.batch_size=8"]
    lines = []
    report = compare("product_defects", "anomaly,scratch", [1.0], seeds=1, data=data, overrides=overrides, out=tmp_path / "c",
                     defects="0,4,all", log=lines.append)
    names = sorted(path.name for path in (tmp_path / "c" / "runs").iterdir())
    assert names == ["anomaly_f1_s0", "scratch_d4_f1_s0", "scratch_f1_s0"]
    assert any("only the anomaly strategy can train" in line for line in lines)
    entries = report["verdict"]["defects"]["per_count"]
    assert [entry["defects"] for entry in entries] == [4, None]
    assert entries[0]["n_defects"] == 4 and entries[1]["n_defects"] > 4
    assert report["verdict"]["text"].startswith("The anomaly strategy, with no defect image, reaches roc_auc")
    markdown = (tmp_path / "c" / "report.md").read_text()
    assert "## Defect images needed: supervised vs anomaly" in markdown and "scratch, 4 defects" in markdown
    # The runs made are kept when the same comparison is run again.
    again = compare("product_defects", "anomaly,scratch", [1.0], seeds=1, data=data, overrides=overrides, out=tmp_path / "c",
                    defects="0,4,all", log=lines.append)
    assert again["verdict"]["defects"] == report["verdict"]["defects"]
    assert sum("done before, kept" in line for line in lines) == 3


def test_predict_and_recalibrate_score_new_images_as_the_run_did(anomaly_run, textures, tmp_path):
    from tfx_transfer.deploy.export import ExportError, export_run
    from tfx_transfer.deploy.predict import load_run
    from tfx_transfer.deploy.recalibrate import recalibrate

    loaded = load_run(anomaly_run.run_dir)
    saved = np.load(anomaly_run.run_dir / "predictions.npz")
    frame = loaded.predict(list(saved["test_paths"]), calibrated=False)
    np.testing.assert_allclose(frame["probability_scratched"], saved["test_score"][:, 1], rtol=1e-6)
    decided = (frame["decision"] == "scratched").to_numpy()
    assert decided.tolist() == (saved["test_true"] == 1).tolist()  # as in the run: every part right
    import shutil

    copy = shutil.copytree(anomaly_run.run_dir, tmp_path / "run")  # recalibrate writes into model.json
    site = recalibrate(copy, textures, site="line2", resamples=50)
    assert site["kind"] == "target_recall" and 0 < site["threshold"] < 1 and site["at_site_threshold"]["recall"] >= 0.9
    assert "line2" in load_run(copy).info.site_operating_points
    with pytest.raises(ExportError, match="anomaly run.*cannot be exported yet.*tfx-transfer predict"):
        export_run(anomaly_run.run_dir, "saved_model")
