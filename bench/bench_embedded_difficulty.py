"""How hard is each recipe's built-in data? A logistic regression on raw pixels, on the recipe's
own splits, is the floor a transfer-learning model has to clear clearly.

Prints test accuracy, macro-F1 and ROC-AUC (binary) of the pixel baseline per recipe. Run:

    python bench/bench_embedded_difficulty.py [--size 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tfx_transfer.data.images import read_image
from tfx_transfer.config.recipe import list_recipes, load_recipe
from tfx_transfer.experiments.prepare import prepare_data


def pixels(table, indices, size: int) -> np.ndarray:
    from PIL import Image

    rows = []
    for i in indices:
        roi = None if table.rois is None else tuple(table.rois[i])
        image = Image.fromarray(read_image(table.paths[i], roi)).resize((size, size), Image.BILINEAR)
        rows.append(np.asarray(image, np.float32).ravel() / 255.0)
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32, help="side in pixels the images are shrunk to")
    args = parser.parse_args()
    for path in list_recipes():
        started = time.perf_counter()
        recipe = load_recipe(path)
        prepared = prepare_data(recipe)
        table, splits = prepared.table, prepared.splits
        train = np.concatenate([splits.train, splits.val])  # the baseline has no early stopping to feed
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
        model.fit(pixels(table, train, args.size), table.labels[train])
        scores = model.predict_proba(pixels(table, splits.test, args.size))
        y_true = table.labels[splits.test]
        y_pred = scores.argmax(1)
        auc = roc_auc_score(y_true, scores[:, 1]) if table.num_classes == 2 else None
        print(f"{recipe.name:16s} {table.num_classes:2d} classes, train {len(train)}, test {len(y_true)}: "
              f"raw-pixel logistic regression accuracy {accuracy_score(y_true, y_pred):.3f}, "
              f"macro-F1 {f1_score(y_true, y_pred, average='macro'):.3f}"
              + (f", ROC-AUC {auc:.3f}" if auc is not None else "")
              + f" ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
