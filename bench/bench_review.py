"""The data review on ELPV, measured: label-error enrichment, planted flips, relabelling, selection, drift.

ELPV's experts gave 401 of 2,624 cells a defect probability of 1/3 or 2/3: those labels are truly
uncertain. This script writes ELPV as a CSV with a seeded `split` column (70/15/15, stratified) so
every part below uses the same test images, then measures, in one run:

1. enrichment: the share of uncertain-label cells among the review's top-100 suspected label errors
   against their share among the reviewed (training and validation) cells, with a bootstrap
   interval over the 100;
2. planted noise: 5% (`--flip-share`) of the certain labels of training and validation flipped (seeded; test left
   clean): precision and recall of the review's flags against the flips; then the recipe's run
   (feature extraction) on the noisy data, on the noisy data `--relabel`led with the review's
   suggestions and with its suspects excluded (`exclude_flagged.csv`), and on the clean data: test
   ROC-AUC with intervals;
3. selection: from 10% of the training split labelled, 5 rounds of 50 images chosen by
   `select_for_labelling` (uncertainty at the validation-chosen target-recall threshold times
   novelty) against the 50 most uncertain and 50 at random, a linear head on frozen features
   refitted each round, the test ROC-AUC of the three curves (3 seeds);
4. drift: `predict` on the test cells as they are, brightened and flattened, and blurred.

Run (about 15 minutes on 2 CPU cores):

    python bench/bench_review.py [--work /tmp/bench_review] [--image-size 300]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np


def _write_csv(rows: list[dict], path: Path, labels: list[str]) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["path", "label", "split", "label_confidence"])
        writer.writeheader()
        for row, label in zip(rows, labels):
            writer.writerow({"path": row["path"], "label": label, "split": row["split"],
                             "label_confidence": row["label_confidence"]})
    return path


def _elpv_rows(seed: int = 0) -> list[dict]:
    from sklearn.model_selection import train_test_split

    from tfx_transfer.data.embedded import prepare

    root = prepare("elpv")
    with open(root / "labels.csv") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        row["path"] = str(root / row["path"])
        row["uncertain"] = abs(float(row["defect_probability"]) - 0.5) < 0.3
    index = np.arange(len(rows))
    strata = [f"{row['label']}-{row['uncertain']}" for row in rows]
    rest, test = train_test_split(index, test_size=0.15, stratify=strata, random_state=seed)
    train, val = train_test_split(rest, test_size=0.15 / 0.85, stratify=[strata[i] for i in rest], random_state=seed)
    for name, part in (("train", train), ("val", val), ("test", test)):
        for i in part:
            rows[i]["split"] = name
    return rows


def _interval(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _flagged(review_dir: Path) -> tuple[list[str], set[str]]:
    with open(review_dir / "review.csv") as file:
        rows = list(csv.DictReader(file))
    ranked = [row["path"] for row in rows if "label" in row["issue"].split(";")]
    return ranked, set(ranked)


def enrichment(rows, review_dir: Path) -> dict:
    ranked, _ = _flagged(review_dir)
    uncertain = {row["path"] for row in rows if row["uncertain"]}
    reviewed = [row for row in rows if row["split"] != "test"]
    base = np.mean([row["uncertain"] for row in reviewed])
    result = {"reviewed": len(reviewed), "flagged": len(ranked), "base_share": float(base)}
    for top in (100, 200, len(ranked)):
        hits = np.array([path in uncertain for path in ranked[:top]], float)
        low, high = _interval(hits)
        result[f"top_{top}"] = {"share": float(hits.mean()), "enrichment": float(hits.mean() / base),
                                "interval": [low / base, high / base]}
    return result


def planted(rows, work: Path, image_size: int, seed: int = 1, share: float = 0.05) -> dict:
    import tfx_transfer as tt

    labels = [row["label"] for row in rows]
    certain = [i for i, row in enumerate(rows) if row["split"] != "test" and not row["uncertain"]]
    flips = set(np.random.default_rng(seed).choice(certain, size=int(share * len(certain)), replace=False).tolist())
    noisy = [("good" if label == "defective" else "defective") if i in flips else label for i, label in enumerate(labels)]
    clean_csv = _write_csv(rows, work / "elpv_clean.csv", labels)
    noisy_csv = _write_csv(rows, work / "elpv_noisy.csv", noisy)
    overrides = [f"model.image_size={image_size}"]
    started = time.perf_counter()
    tt.review("product_defects", data=noisy_csv, overrides=overrides, out=work / "review-noisy", log=lambda *a: None)
    review_seconds = time.perf_counter() - started
    ranked, flagged = _flagged(work / "review-noisy")
    planted_paths = {rows[i]["path"] for i in flips}
    uncertain = {row["path"] for row in rows if row["uncertain"]}
    hits = len(flagged & planted_paths)
    top = set(ranked[:len(planted_paths)])
    result = {"flips": len(flips), "flagged": len(flagged), "found": hits, "review_seconds": review_seconds,
              "precision": hits / max(len(flagged), 1), "recall": hits / len(flips),
              "precision_counting_uncertain_cells": len(flagged & (planted_paths | uncertain)) / max(len(flagged), 1),
              "precision_at_number_of_flips": len(top & planted_paths) / len(planted_paths), "runs": {}}
    review = work / "review-noisy"
    for name, data, extra in (("clean", clean_csv, []), ("noisy", noisy_csv, []),
                              ("noisy + relabel", noisy_csv, [f"data.relabel={review / 'review.csv'}"]),
                              ("noisy + exclude", noisy_csv, [f"data.relabel={review / 'exclude_flagged.csv'}"])):
        out = work / f"run-{name.replace(' + ', '-')}"
        started = time.perf_counter()
        report = tt.run("product_defects", data=data, strategy="feature_extraction", overrides=overrides + extra,
                        out=out, resume=out.exists(), verbose=0).report
        primary = report["metrics"]["primary"]
        result["runs"][name] = {"roc_auc": primary["value"], "interval": [primary["low"], primary["high"]],
                                "seconds": time.perf_counter() - started, "run_dir": str(out)}
    return result


def selection(rows, work: Path, image_size: int, seeds=(0, 1, 2), rounds: int = 5, per_round: int = 50) -> dict:
    """Learning curves: a linear head on frozen features, labelled set grown by selection or at random."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import tfx_transfer as tt
    from tfx_transfer.evaluation.metrics import bootstrap_interval, choose_operating_point, roc_auc
    from tfx_transfer.evaluation.selection import select_for_labelling, uncertainty
    from tfx_transfer.experiments.prepare import prepare_data, train_config
    from tfx_transfer.models.classifier import build_classifier
    from tfx_transfer.training.features import extract_features

    recipe = tt.load_recipe("product_defects").with_overrides({"model.image_size": image_size,
                                                              "data.source": str(work / "elpv_clean.csv")})
    prepared = prepare_data(recipe)
    config = train_config(recipe, prepared.table.class_names)
    classifier = build_classifier(config.backbone, prepared.table.num_classes, config.weights, config.image_size,
                                  pooling=config.pooling, seed=0)
    splits, labels, positive = prepared.splits, prepared.table.labels, prepared.positive_index
    features = {name: extract_features(classifier, prepared.table, getattr(splits, name), config, verbose=0)
                for name in ("train", "val", "test")}
    y = {name: labels[getattr(splits, name)] for name in ("train", "val", "test")}
    # "uncertain": the most uncertain alone, to show what the novelty term changes.
    curves = {"select": [], "uncertain": [], "random": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        start = rng.choice(len(y["train"]), size=len(y["train"]) // 10, replace=False)
        for arm in curves:
            labelled, curve = list(start), []
            for step in range(rounds + 1):
                head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, random_state=seed))
                head.fit(features["train"][labelled], y["train"][labelled])
                test_score = head.predict_proba(features["test"])
                low, high = bootstrap_interval("roc_auc", y["test"], test_score, choose_operating_point(
                    y["val"], head.predict_proba(features["val"]), "argmax", positive), 500, seed)
                curve.append({"labelled": len(labelled), "roc_auc": roc_auc(y["test"], test_score), "low": low,
                              "high": high})
                if step == rounds:
                    break
                pool = np.setdiff1d(np.arange(len(y["train"])), labelled)
                point = choose_operating_point(y["val"], head.predict_proba(features["val"]), "target_recall",
                                               positive, recipe.evaluation.target_recall)
                if arm == "random":
                    chosen = rng.choice(pool, size=per_round, replace=False)
                elif arm == "uncertain":
                    chosen = pool[np.argsort(-uncertainty(head.predict_proba(features["train"][pool]), point),
                                             kind="stable")[:per_round]]
                else:
                    picks = select_for_labelling(head.predict_proba(features["train"][pool]), features["train"][pool],
                                                 per_round, point, features["train"][labelled])
                    chosen = pool[picks]
                labelled += [int(i) for i in chosen]
            curves[arm].append(curve)
    summary = {arm: [{"labelled": runs[0][k]["labelled"],
                      "roc_auc_mean": float(np.mean([run[k]["roc_auc"] for run in runs])),
                      "roc_auc_by_seed": [round(run[k]["roc_auc"], 4) for run in runs],
                      "interval_seed0": [runs[0][k]["low"], runs[0][k]["high"]]} for k in range(rounds + 1)]
               for arm, runs in curves.items()}
    return summary


def drift(rows, work: Path, run_dir: Path) -> dict:
    from PIL import Image, ImageEnhance, ImageFilter

    from tfx_transfer.deploy.predict import load_run

    test = [Path(row["path"]) for row in rows if row["split"] == "test"]
    changes = {"unchanged": None,
               "brighter, less contrast": lambda im: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.3)).enhance(0.7),
               "blurred": lambda im: im.filter(ImageFilter.GaussianBlur(2))}
    run = load_run(run_dir)
    result = {}
    for name, change in changes.items():
        folder = work / f"drift-{name.split(',')[0].replace(' ', '-')}"
        folder.mkdir(exist_ok=True)
        inputs = test if change is None else []
        if change is not None:
            for path in test:
                target = folder / path.name
                if not target.exists():
                    change(Image.open(path).convert("L")).save(target)
                inputs.append(target)
        check = run.check_drift(run.predict_batch([str(p) for p in inputs]))
        result[name] = check.to_dict()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/bench_review")
    parser.add_argument("--image-size", type=int, default=300)
    parser.add_argument("--parts", default="enrichment,planted,selection,drift")
    parser.add_argument("--flip-share", type=float, default=0.05, help="share of certain labels flipped (planted part)")
    args = parser.parse_args()
    os.environ.setdefault("TFX_TRANSFER_OFFLINE", "1")
    import tfx_transfer as tt

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = _elpv_rows()
    labels = [row["label"] for row in rows]
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    parts = args.parts.split(",")
    if "enrichment" in parts:
        csv_path = _write_csv(rows, work / "elpv_clean.csv", labels)
        started = time.perf_counter()
        tt.review("product_defects", data=csv_path, overrides=[f"model.image_size={args.image_size}"],
                  out=work / "review-clean", log=lambda *a: None)
        results["enrichment"] = dict(enrichment(rows, work / "review-clean"), seconds=time.perf_counter() - started)
        print("enrichment", json.dumps(results["enrichment"], indent=1), flush=True)
        results_file.write_text(json.dumps(results, indent=1))
    if "planted" in parts:
        results["planted"] = planted(rows, work, args.image_size, share=args.flip_share)
        print("planted", json.dumps(results["planted"], indent=1), flush=True)
        results_file.write_text(json.dumps(results, indent=1))
    if "selection" in parts:
        results["selection"] = selection(rows, work, args.image_size)
        print("selection", json.dumps(results["selection"], indent=1), flush=True)
        results_file.write_text(json.dumps(results, indent=1))
    if "drift" in parts:
        results["drift"] = drift(rows, work, work / "run-clean")
        print("drift", json.dumps(results["drift"], indent=1), flush=True)
        results_file.write_text(json.dumps(results, indent=1))
    results_file.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
