"""model.json, the serving contract of a trained model: what using model.keras needs beside it.

`ModelInfo` is its one reader (`ModelInfo.read`) and one writer (`ModelInfo.write`); predict,
export, recalibrate and the reports use its fields and never the raw JSON. The run writes it once,
when it finishes (from its report: the temperature fitted on validation, the operating point chosen
there, the review band); `tfx-transfer recalibrate` adds site operating points. Rebuilding a report
never rewrites it.

Fields (schema version `MODEL_INFO_VERSION`): `recipe`, `label`, `class_names`, `image_size`
(height, width), `input`, `temperature`, `operating_point`, `review_band`, `test_time_views`,
`model` (`classifier`, or `anomaly`: model.keras gives patch features scored against
anomaly.npz) and `site_operating_points` (`{site: record}`).

Example:
    >>> info = ModelInfo.read("runs/line7/model.json")  # doctest: +SKIP
    >>> point, band = info.decision_rule()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from tfx_transfer.config.settings import image_shape
from tfx_transfer.evaluation.metrics import OperatingPoint
from tfx_transfer.runs.folder import RunFolderError, write_json

#: Version of model.json; readers refuse a file written by a newer version.
MODEL_INFO_VERSION = 1
#: What model.keras takes, as model.json states it.
MODEL_INPUT = ("raw RGB pixels in [0, 255], uint8 or float, of image_size (height, width); tfx_transfer's predict "
               "resizes images of other sizes first")
MODEL_KINDS = ("classifier", "anomaly")


class ModelInfoError(RunFolderError):
    """A model.json that cannot be used: missing, unreadable, or written by a newer version."""


@dataclass(frozen=True)
class ModelInfo:
    """What a trained model needs to be used as its run decided (see the module documentation).

    Attributes:
        recipe: The recipe's name; `label` the configuration (e.g. `fine_tune_3`).
        class_names: The model's outputs, in order.
        image_size: `(height, width)` of the model's input.
        operating_point: How calibrated scores become decisions (chosen on validation).
        temperature: Divides the logits (temperature scaling fitted on validation).
        review_band: Scores of the positive class in this range are flagged for review; None with argmax.
        test_time_views: Scores are the mean over this many symmetric views of each image.
        model: `classifier`, or `anomaly`.
        site_operating_points: Operating points chosen on other sites' samples (`recalibrate`).
    """

    recipe: str
    label: str
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    operating_point: OperatingPoint
    temperature: float = 1.0
    review_band: tuple[float, float] | None = None
    test_time_views: int = 1
    model: str = "classifier"
    site_operating_points: dict = field(default_factory=dict)

    @property
    def is_anomaly(self) -> bool:
        return self.model == "anomaly"

    @property
    def positive_index(self) -> int:
        """The column two-class calibration reads (1 when the operating point names none)."""
        return self.operating_point.positive_index if self.operating_point.positive_index is not None else 1

    @classmethod
    def from_report(cls, report: dict) -> ModelInfo:
        """The model.json of a finished single-label run, from its report (`tfx_transfer.reporting.report`)."""
        calibration = report.get("calibration") or {}
        return cls(
            recipe=report["recipe"], label=report.get("label", report["strategy"]),
            class_names=tuple(report["data"]["class_names"]), image_size=image_shape(report["image_size"]),
            operating_point=OperatingPoint(**report["metrics"]["operating_point"]),
            temperature=float(calibration.get("temperature", 1.0)),
            review_band=None if report.get("review_band") is None else tuple(report["review_band"]),
            test_time_views=int((report.get("evaluation") or {}).get("test_time_views", 1)),
            model="anomaly" if report.get("anomaly") else "classifier")

    def to_dict(self) -> dict:
        return {"schema_version": MODEL_INFO_VERSION, "recipe": self.recipe, "label": self.label,
                "class_names": list(self.class_names), "image_size": list(self.image_size), "input": MODEL_INPUT,
                "temperature": self.temperature, "operating_point": self.operating_point.to_dict(),
                "review_band": None if self.review_band is None else list(self.review_band),
                "test_time_views": self.test_time_views, "model": self.model,
                "site_operating_points": dict(self.site_operating_points)}

    @classmethod
    def from_dict(cls, record: dict, path: str | os.PathLike = "model.json") -> ModelInfo:
        """Reads a model.json record; a missing field or a newer version is a `ModelInfoError` naming `path`."""
        if not isinstance(record, dict):
            raise ModelInfoError(f"'{path}' is not a model.json: expected a JSON object, received "
                                 f"{type(record).__name__}. {_RECOVER}")
        if record.get("schema_version", 1) > MODEL_INFO_VERSION:
            raise ModelInfoError(f"'{path}' was written by a newer tfx_transfer (version {record['schema_version']}; "
                                 f"this one reads up to {MODEL_INFO_VERSION}); upgrade tfx_transfer to use it.")
        missing = [name for name in ("recipe", "class_names", "image_size", "operating_point") if name not in record]
        if missing:
            raise ModelInfoError(f"'{path}' lacks {', '.join(missing)}. {_RECOVER}")
        if record.get("model", "classifier") not in MODEL_KINDS:
            raise ModelInfoError(f"'{path}' says model {record.get('model')!r}; expected one of {', '.join(MODEL_KINDS)}. "
                                 f"{_RECOVER}")
        known = {f.name for f in fields(OperatingPoint)}
        try:
            return cls(
                recipe=str(record["recipe"]), label=str(record.get("label", record["recipe"])),
                class_names=tuple(str(name) for name in record["class_names"]),
                image_size=image_shape(record["image_size"]),
                operating_point=OperatingPoint(**{k: v for k, v in record["operating_point"].items() if k in known}),
                temperature=float(record.get("temperature", 1.0)),
                review_band=None if record.get("review_band") is None else tuple(record["review_band"]),
                test_time_views=int(record.get("test_time_views", 1)), model=str(record.get("model", "classifier")),
                site_operating_points=dict(record.get("site_operating_points") or {}))
        except (TypeError, ValueError, AttributeError) as error:
            raise ModelInfoError(f"'{path}' has a field of the wrong type ({error}). {_RECOVER}") from None

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelInfo:
        """model.json at `path` (`RunFolder.model_info_file`)."""
        path = Path(path)
        if not path.is_file():
            raise ModelInfoError(f"'{path}' does not exist: the run has no model to use (multi-label runs have none "
                                 "yet). Expected a finished run of `tfx-transfer run` or `train`.")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelInfoError(f"'{path}' is not valid JSON ({error}). {_RECOVER}") from None
        return cls.from_dict(record, path)

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    def decision_rule(self, site: str | None = None, run_dir: str | os.PathLike = "RUN_DIR"
                      ) -> tuple[OperatingPoint, tuple[float, float] | None]:
        """`(operating point, review band)` of the run (`site=None`) or of a recalibrated site.

        Raises:
            ValueError: for a site that was never recalibrated.
        """
        if site is None:
            return self.operating_point, self.review_band
        if site not in self.site_operating_points:
            raise ValueError(f"'{run_dir}' has no operating point for site {site!r}. Sites: "
                             f"{', '.join(sorted(self.site_operating_points)) or 'none'}; add one with: "
                             f"tfx-transfer recalibrate {run_dir} --data SAMPLE --site {site}")
        record = self.site_operating_points[site]
        known = {f.name for f in fields(OperatingPoint)}
        band = record.get("threshold_interval")
        return OperatingPoint(**{k: v for k, v in record.items() if k in known}), None if band is None else tuple(band)

    def with_site(self, site: str, record: dict) -> ModelInfo:
        """A copy with the operating point of `site` added (or replaced)."""
        return replace(self, site_operating_points={**self.site_operating_points, site: record})


_RECOVER = ("Rebuild it from the run's own files with `tfx-transfer report RUN_DIR --model-info`, or run the recipe "
            "again into a new --out.")
