"""The run folder: its layout, its schema version, and reading and writing each of its files.

Every file a run writes goes through here, so the layout is written down once and every write is
atomic (complete or absent, never half-written: a temporary file in the same folder, flushed, then
renamed over the target). A run folder (schema version `SCHEMA_VERSION`):

    recipe.yaml        the fully resolved recipe (every field, after --set)
    data.json          which images, with which labels, in which split (a digest): what --resume checks
    scan.json          the readability scan of the data's files (a cache)
    run.json           the run's facts: data counts, skipped files, weights, device, versions, timing
    history.json       one record per epoch
    predictions.npz    validation and test labels and probabilities, test file paths (and crop boxes),
                       the paths of a sample of training images (int8 export calibrates on them);
                       an anomaly run's raw distances (`val_distance`, `test_distance`)
    model.keras        the trained model (raw RGB pixels in, probabilities out); for the anomaly
                       strategy, its patch-feature extractor (raw pixels in, patch features out)
    anomaly.npz        anomaly strategy only: the memory bank and the distance-to-score map
    model.json         what using it needs: class names, image size, temperature, operating point
                       (`tfx_transfer.deploy.predict`)
    reference.npz      the validation split's scores and pooled features and a training sample's features:
                       what `predict` tests a batch against for drift and `--select` for novelty
    explanations.npz   Grad-CAM heatmaps (anomaly maps for the anomaly strategy) over a few test
                       images, border shares (`tfx_transfer.evaluation.explain`)
    export/            exported models (`tfx-transfer export`) and export.json, their parity results
    training/          checkpoints, best weights and train_config.json (`member-N/` per ensemble
                       member; `TrainingFolder`); removed once the run has finished, unless kept
                       (`--keep-checkpoints`)
    report.md/.html    the report; then report.json, written last: a run is finished when it exists

A comparison folder (`ComparisonFolder`) holds `runs/<label>_f<fraction>_s<seed>/` run folders,
`stale/` (runs of an older recipe set aside), `probe/` (the probes behind `fine_tune:auto`), its
scan.json and its own three report files. A probe's folder is laid out alike: its report files,
scan.json and `verify/<label>/` runs (`probe --verify`).

This module imports neither TensorFlow nor Keras (a model is saved through its own `save`).

Example:
    >>> folder = RunFolder("runs/cxr")  # doctest: +SKIP
    >>> folder.is_finished  # doctest: +SKIP
    True
    >>> folder.read_facts()["recipe"]  # doctest: +SKIP
    'chest_xray'
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

#: Version of the layout and of run.json; readers refuse a folder written by a newer version.
SCHEMA_VERSION = 1
#: Version of export/export.json.
EXPORTS_VERSION = 1

#: What this module's and the checkpoints' writers leave when interrupted (their temporary names all
#: start with a dot): never read, so removed when a run starts. Nothing else is ever removed.
STALE_PATTERNS = (".*.tmp", ".*.tmp.npz", ".model.keras", ".*.weights.h5", "checkpoints/.epoch-*")
#: The lock file of a run folder in use (`RunFolder.lock`).
LOCK_NAME = ".lock"


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Writes a text file so that readers see the old content or the new one, nothing between.

    The file gets the mode any new file gets here (the user's umask), not the temporary file's 0600.

    Example:
        >>> write_atomically(tmp_path / "notes.txt", "done")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=f".{path.name}.", suffix=".tmp",
                                     encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(file.name, 0o666 & ~current_umask())
    os.replace(file.name, path)


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, record) -> None:
    """Writes `record` as indented JSON atomically (NumPy numbers and arrays become plain ones)."""
    write_atomically(path, json.dumps(record, indent=2, default=_plain))


def remove_stale_files(folder: str | os.PathLike) -> list[Path]:
    """Removes what interrupted writes of the toolkit left in a run (or training) folder; returns what it removed.

    Only `STALE_PATTERNS` (the writers' own dot-named temporaries), and only in the folders they write
    into: the folder itself, its `training/` and each ensemble member's folder. A user's files, and
    any other subfolder, are never looked at.
    """
    root = Path(folder)
    places = [root, root / "training"]
    places += [member for place in places for member in sorted(place.glob("member-*"))]
    removed = []
    for place in places:
        for pattern in STALE_PATTERNS:
            for path in sorted(place.glob(pattern)):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class RunFolderError(ValueError):
    """A folder that cannot be used as asked: not a finished run, or not one to continue."""


@dataclass(frozen=True)
class RunFolder:
    """One run's folder. Paths are properties; each file has one reader and one writer.

    Attributes:
        path: The folder.
    """

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    recipe_file = property(lambda self: self.path / "recipe.yaml")
    data_file = property(lambda self: self.path / "data.json")
    scan_file = property(lambda self: self.path / "scan.json")
    facts_file = property(lambda self: self.path / "run.json")
    history_file = property(lambda self: self.path / "history.json")
    predictions_file = property(lambda self: self.path / "predictions.npz")
    reference_file = property(lambda self: self.path / "reference.npz")
    model_file = property(lambda self: self.path / "model.keras")
    model_info_file = property(lambda self: self.path / "model.json")
    training_dir = property(lambda self: self.path / "training")
    explanations_file = property(lambda self: self.path / "explanations.npz")
    anomaly_file = property(lambda self: self.path / "anomaly.npz")
    export_dir = property(lambda self: self.path / "export")
    exports_file = property(lambda self: self.path / "export" / "export.json")
    report_file = property(lambda self: self.path / "report.json")
    report_markdown_file = property(lambda self: self.path / "report.md")
    report_html_file = property(lambda self: self.path / "report.html")

    @property
    def is_run(self) -> bool:
        """Whether the folder holds a run of ours: a run writes recipe.yaml and data.json (its digest) first."""
        if not (self.recipe_file.is_file() and self.data_file.is_file()):
            return False
        try:
            return "digest" in json.loads(self.data_file.read_text())
        except (ValueError, UnicodeDecodeError):
            return False

    @property
    def is_finished(self) -> bool:
        """Whether the run ended with its report (report.json is written last)."""
        return self.report_file.is_file()

    def leftovers(self) -> list[str]:
        """Names of what the folder holds besides the data scan cache (which any run may share)."""
        if not self.path.is_dir():
            return []
        return sorted(entry.name for entry in self.path.iterdir() if entry.name not in (self.scan_file.name, LOCK_NAME))

    def start(self, recipe, data_digest: dict, resume: bool) -> None:
        """Claims the folder for a run of `recipe` on the data `data_digest` describes.

        A new run needs an empty (or new) folder, so that old and new files never mix. `resume`
        continues only a run of ours (`is_run`), of the same recipe on the same data. Files
        interrupted writes left are removed (`remove_stale_files`: the toolkit's own, nothing else).

        Raises:
            RunFolderError: for a folder that holds another run or files of its own, a changed recipe
                or data on resume, a folder that is not a run to resume, or one that cannot be written.
        """
        self.check_writable()
        if resume:
            self.check_resumable()
            self.check_same(recipe, data_digest)
        leftovers = self.leftovers()
        if leftovers and not resume:
            shown = ", ".join(leftovers[:5]) + (", ..." if len(leftovers) > 5 else "")
            ours = {path.name for path in (self.recipe_file, self.data_file, self.facts_file, self.report_file,
                                           self.model_file, self.predictions_file, self.training_dir)}
            if ours & set(leftovers):
                raise RunFolderError(
                    f"'{self.path}' already holds a run ({shown}); a new run there would mix its files with the old "
                    "ones. Continue it with --resume (resume=True), or choose a new --out.")
            raise RunFolderError(f"'{self.path}' already holds files that are not a run's ({shown}); a run writes into "
                                 "an empty or new folder, and leaves others' files alone. Choose a new --out.")
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_files(self.path)
        write_atomically(self.recipe_file, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        write_json(self.data_file, data_digest)

    def check_writable(self) -> None:
        """Raises a `RunFolderError` before any work when the folder cannot be a run folder here."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--out '{self.path}' is a file, not a folder. Choose a folder for the run (it is "
                                 "created if it does not exist).")
        existing = next((parent for parent in (self.path, *self.path.parents) if parent.exists()), None)
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise RunFolderError(f"Cannot write the run into '{self.path}': '{existing}' is not writable by this user. "
                                 "Choose an --out where you can write.")

    def check_resumable(self) -> None:
        """Raises a `RunFolderError` unless the folder holds a run of ours to continue."""
        if not self.path.exists():
            raise RunFolderError(f"Nothing to resume: '{self.path}' does not exist. Start the run without --resume "
                                 "(resume=False), or give the folder of the run to continue.")
        if not self.is_run:
            raise RunFolderError(
                f"'{self.path}' is not a tfx-transfer run folder (it has no recipe.yaml and data.json from a run's start), "
                "so there is nothing to resume there and nothing in it is touched. Give the folder of the run to "
                "continue, or start a new run into an empty or new --out.")

    @contextlib.contextmanager
    def lock(self):
        """Holds the folder for this process while the run writes into it (an exclusive `flock` on `.lock`).

        Raises:
            RunFolderError: naming the process that holds it, when another one does.
        """
        self.check_writable()
        self.path.mkdir(parents=True, exist_ok=True)
        lock_file = self.path / LOCK_NAME
        handle = open(lock_file, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(f"'{self.path}' is in use by another tfx-transfer process ({holder}). Two runs in one "
                                 "folder would overwrite each other's files: wait for it to finish, or choose another "
                                 "--out.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                     f"{' '.join(sys.argv)[:300]}")
        handle.flush()
        try:
            yield self
        finally:
            lock_file.unlink(missing_ok=True)
            handle.close()  # closing the file releases the lock

    def check_same(self, recipe, data_digest: dict) -> None:
        """Raises a `RunFolderError` naming what changed if the run was made with another recipe or data."""
        from tfx_transfer.config.recipe import recipe_changes

        changes = recipe_changes(self.recipe_file, recipe)
        if changes:
            raise RunFolderError(
                f"Cannot resume '{self.path}': it was made with another recipe ({'; '.join(changes)}). "
                "Run the changed recipe into a new --out, or resume with the recipe it was made with.")
        if self.data_file.is_file():
            before = json.loads(self.data_file.read_text())
            if before.get("digest") != data_digest.get("digest"):
                raise RunFolderError(
                    f"Cannot resume '{self.path}': its data changed since it started (then {before.get('images')} "
                    f"images from {before.get('source')!r}, now {data_digest.get('images')} from "
                    f"{data_digest.get('source')!r}; the files, labels or splits differ). Run into a new --out.")

    def read_recipe(self) -> dict:
        """The resolved recipe the run was made with, as a mapping (`Recipe.from_dict` reads it)."""
        if not self.recipe_file.is_file():
            raise RunFolderError(f"'{self.path}' is not a tfx-transfer run folder: it has no recipe.yaml.")
        return yaml.safe_load(self.recipe_file.read_text())

    def write_facts(self, facts: dict) -> None:
        write_json(self.facts_file, {"schema_version": SCHEMA_VERSION, **facts})

    def read_facts(self) -> dict:
        facts = json.loads(self.facts_file.read_text())
        if facts.get("schema_version", 1) > SCHEMA_VERSION:
            raise RunFolderError(
                f"'{self.path}' was written by a newer tfx_transfer (run folder schema {facts['schema_version']}; "
                f"this version reads up to {SCHEMA_VERSION}). Upgrade tfx_transfer to read it.")
        return facts

    def write_history(self, history: list[dict]) -> None:
        write_json(self.history_file, history)

    def read_history(self) -> list[dict]:
        return json.loads(self.history_file.read_text()) if self.history_file.is_file() else []

    def write_predictions(self, **arrays) -> None:
        temporary = self.path / ".predictions.tmp.npz"
        np.savez(temporary, **arrays)
        os.replace(temporary, self.predictions_file)

    def read_predictions(self) -> dict:
        with np.load(self.predictions_file, allow_pickle=False) as saved:
            return {key: saved[key] for key in saved.files}

    def write_reference(self, **arrays) -> None:
        """reference.npz: what a batch at predict time is compared with (`tfx_transfer.evaluation.drift`)."""
        temporary = self.path / ".reference.tmp.npz"
        np.savez(temporary, **arrays)
        os.replace(temporary, self.reference_file)

    def read_reference(self) -> dict:
        """The arrays of reference.npz; {} for a run made before it existed (or an anomaly run)."""
        return _read_arrays(self.reference_file)

    def write_explanations(self, arrays: dict) -> None:
        """explanations.npz: the Grad-CAM thumbnails and border shares the report shows."""
        temporary = self.path / ".explanations.tmp.npz"
        np.savez_compressed(temporary, **arrays)
        os.replace(temporary, self.explanations_file)

    def read_explanations(self) -> dict:
        """The arrays of explanations.npz; {} when the run has none."""
        return _read_arrays(self.explanations_file)

    def write_anomaly(self, arrays: dict) -> None:
        """anomaly.npz: an anomaly run's memory bank and distance-to-score map (`tfx_transfer.training.anomaly`)."""
        temporary = self.path / ".anomaly.tmp.npz"
        np.savez(temporary, **arrays)
        os.replace(temporary, self.anomaly_file)

    def save_model(self, model) -> None:
        """`model.save` under a temporary name, renamed into place (Keras insists on the .keras ending)."""
        staging = self.path / f".{self.model_file.name}"
        model.save(staging)
        os.replace(staging, self.model_file)

    def write_model_info(self, info) -> None:
        """model.json (a `tfx_transfer.runs.model_info.ModelInfo`): what the model needs to be used."""
        info.write(self.model_info_file)

    def read_exports(self) -> list[dict]:
        """The records of `tfx-transfer export` (passed and failed), oldest first; [] when none."""
        if not self.exports_file.is_file():
            return []
        content = json.loads(self.exports_file.read_text())
        if content.get("schema_version", 1) > EXPORTS_VERSION:
            raise RunFolderError(f"'{self.exports_file}' was written by a newer tfx_transfer (version "
                                 f"{content['schema_version']}); upgrade tfx_transfer to read it.")
        return list(content.get("exports", []))

    def write_exports(self, records: list[dict]) -> None:
        write_json(self.exports_file, {"schema_version": EXPORTS_VERSION, "exports": records})

    def read_report(self) -> dict:
        """report.json of a finished run (as its report was built when the run finished, or rebuilt since)."""
        return json.loads(self.report_file.read_text())

    def write_report(self, report: dict, markdown: str, html: str) -> None:
        """Writes report.md and report.html, then report.json: the marker of a finished run."""
        write_report_files(self.path, report, markdown, html)

    def check_finished_inputs(self) -> None:
        """Raises a `RunFolderError` naming what is missing when the folder cannot be reported on."""
        missing = [path.name for path in (self.facts_file, self.predictions_file) if not path.is_file()]
        if missing:
            raise RunFolderError(
                f"'{self.path}' is not a finished tfx-transfer run: {', '.join(missing)} missing. Expected the "
                "folder written by `tfx-transfer run` (or a `runs/<strategy>_f<fraction>_s<seed>` folder of a comparison).")


@dataclass(frozen=True)
class TrainingFolder:
    """A run's `training/` folder: checkpoints (`tfx_transfer.training.checkpoint`), best weights,
    train_config.json, and a `member-N/` folder per ensemble member."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    train_config_file = property(lambda self: self.path / "train_config.json")

    def member(self, index: int) -> TrainingFolder:
        return TrainingFolder(self.path / f"member-{index}")


@dataclass(frozen=True)
class ComparisonFolder:
    """A comparison's folder: its runs, the runs set aside, the probes of `fine_tune:auto`, its report."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    scan_file = property(lambda self: self.path / "scan.json")
    runs_dir = property(lambda self: self.path / "runs")
    stale_dir = property(lambda self: self.path / "stale")
    probe_dir = property(lambda self: self.path / "probe")
    report_file = property(lambda self: self.path / "report.json")
    report_html_file = property(lambda self: self.path / "report.html")

    def run(self, name: str) -> RunFolder:
        """The run folder `runs/<name>`."""
        return RunFolder(self.runs_dir / name)

    def verification(self, label: str) -> RunFolder:
        """A probe folder's run `verify/<label>` (`probe --verify`)."""
        return RunFolder(self.path / "verify" / label)

    def run_dirs(self) -> list[Path]:
        """The folders under `runs/` that hold a run's facts (run.json), sorted."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(path for path in self.runs_dir.iterdir() if RunFolder(path).facts_file.is_file())

    def write_report(self, report: dict, markdown: str, html: str) -> None:
        write_report_files(self.path, report, markdown, html)


def _read_arrays(path: Path) -> dict:
    """The arrays of an .npz file of a run; {} when it does not exist."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def write_report_files(folder: str | os.PathLike, report: dict, markdown: str, html: str) -> None:
    """report.md and report.html, then report.json last: whoever sees report.json sees all three."""
    folder = Path(folder)
    write_atomically(folder / "report.md", markdown)
    write_atomically(folder / "report.html", html)
    write_json(folder / "report.json", report)
