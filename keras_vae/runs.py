"""Crash-safe files for a training run: atomic writes, backups that cannot lie, and the run's state.

A kill (`kill -9`, a power cut) can land between any two system calls. So that a reader
always sees an old file or a new one, never a torn one, every file the package writes goes
through `atomic_path`: written under a temporary name beside its target, flushed to disk,
then renamed onto it.

`RunBackup` is a Keras callback that writes the training state (weights, optimizer,
epoch) at each epoch end, and mid-epoch on SIGTERM/SIGINT, as numbered generations. Each
generation is a weights file and a small JSON record naming its epoch and the weights'
SHA-256, written after the weights: a generation counts only when its record is complete
and matches its weights, so a torn or mismatched one is skipped for the one before.

`RunState` is the run's `run.json`: the steps of a run (trained, saved, exported,
pictures) that are done, so that the same command started again finishes what is missing.

`kill_point(name)` lets fault tests kill this process at a named write point
(`KERAS_VAE_KILL_AT=name` or `name#n` for the n-th time; no effect otherwise).
"""

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import signal
import threading
import uuid

import keras

KILL_AT = "KERAS_VAE_KILL_AT"
_reached = {}


def kill_point(name):
    """SIGKILL this process here if `KERAS_VAE_KILL_AT` names this point (fault tests only)."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    _reached[name] = _reached.get(name, 0) + 1
    point, _, count = wanted.partition("#")
    if point == name and _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_folder(folder):
    fd = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, kill_name=None):
    """Yield a temporary path beside `path` (same extension, for Keras' savers); once the
    block has written it, flush it to disk and rename it onto `path`. On an error the
    temporary file goes and `path` is untouched. `kill_name` names the write point for
    `kill_point`: `<name>` while the file is half written, `<name>_rename` before the rename."""
    folder, name = os.path.split(path)
    stem, dot, extension = name.partition(".")
    temporary = os.path.join(folder, f".{stem}.tmp-{uuid.uuid4().hex[:8]}{dot}{extension}")
    try:
        yield temporary
        if kill_name:
            kill_point(kill_name)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        if kill_name:
            kill_point(f"{kill_name}_rename")
        os.replace(temporary, path)
        _fsync_folder(folder)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path, text, kill_name=None):
    """Write `text` to `path` atomically."""
    with atomic_path(path, kill_name) as temporary:
        with open(temporary, "w") as f:
            f.write(text)


def write_json(path, value, kill_name=None):
    write_text(path, json.dumps(value, indent=2, allow_nan=False) + "\n", kill_name)


def read_json(path):
    """The JSON object in `path`, or None if it is missing, torn or not an object."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temporaries(folder):
    """Delete temporary files that a killed writer left in `folder` (they are never read)."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if re.match(r"^\..+\.tmp-[0-9a-f]{8}", name):
                os.remove(os.path.join(folder, name))


# ---------------------------------------------------------------------- the run's state
class RunState:
    """`<model_dir>/run.json`: which steps of a run are done. Steps: `trained` (the final
    `model.keras` is saved, with its SHA-256), `exported` (the SavedModel's path) and
    `pictures`. Every update is an atomic rewrite."""

    FILE = "run.json"

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, self.FILE)
        self.values = read_json(self.path) or {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def update(self, kill_name=None, **values):
        self.values.update(values)
        write_json(self.path, self.values, kill_name)


# ---------------------------------------------------------------------- backups
class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM or SIGINT after backing up its state; rerun to resume."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


class RunBackup(keras.callbacks.Callback):
    """Back up the training state every epoch, and on SIGTERM/SIGINT, as checked generations.

    Generation n is `gen-<n>.weights.h5` (`model.save_weights`: the weights and the
    optimizer's state) and `gen-<n>.json` (`{"epoch": the epoch to run next, "sha256": of
    the weights}`), written in that order, each atomically; the two newest complete
    generations are kept. `restore(model)` loads the newest generation whose record and
    weights agree and returns the epoch to start from (0 if none); pass it to
    `fit(initial_epoch=...)`. After a signal the current call's batches finish, the state is
    written with the interrupted epoch to be run again, and `fit` raises
    `TrainingInterrupted`.

    Example:

    ```python
    backup = RunBackup("runs/a/backup")
    start = backup.restore(model)          # also prints why a generation was skipped
    model.fit(x, epochs=30, initial_epoch=start, callbacks=[backup])
    ```
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    KEEP = 2

    def __init__(self, backup_dir, report=print):
        super().__init__()
        self.backup_dir = backup_dir
        self.report = report
        self._received = None
        self._handlers = {}
        self._epoch = 0

    def generations(self):
        """Numbers of the generations present (complete or not), newest first."""
        if not os.path.isdir(self.backup_dir):
            return []
        found = {int(m.group(1)) for m in map(re.compile(r"^gen-(\d+)\.(?:json|weights\.h5)$").match,
                                               os.listdir(self.backup_dir)) if m}
        return sorted(found, reverse=True)

    def _paths(self, number):
        stem = os.path.join(self.backup_dir, f"gen-{number:06d}")
        return f"{stem}.weights.h5", f"{stem}.json"

    def _record(self, number):
        """Generation `number`'s record if it is complete and matches its weights, else None."""
        weights, record_path = self._paths(number)
        record = read_json(record_path)
        if record is None or not os.path.isfile(weights) or record.get("sha256") != sha256(weights):
            return None
        return record

    def latest_record(self):
        """The newest complete generation's record (`{"epoch": ..., "sha256": ...}`), or None."""
        return next(filter(None, map(self._record, self.generations())), None)

    def restore(self, model):
        """Load the newest complete generation into `model`; return the epoch to start from."""
        if not model.optimizer.built:  # its state is in the weights file
            model.optimizer.build(model.trainable_variables)
        for number in self.generations():
            weights, _ = self._paths(number)
            record = self._record(number)
            if record is None:
                self.report(f"backup generation {number} in {self.backup_dir} is incomplete or damaged; skipped")
                continue
            try:
                model.load_weights(weights)
            except (OSError, ValueError) as error:
                self.report(f"backup generation {number} in {self.backup_dir} does not load ({error}); skipped")
                continue
            self._epoch = int(record["epoch"])
            return self._epoch
        if self.generations():
            self.report(f"no usable backup in {self.backup_dir}: training starts from scratch")
        return 0

    def save(self, epoch):
        """Write a new generation whose record says training continues at `epoch` (0-based)."""
        os.makedirs(self.backup_dir, exist_ok=True)
        remove_stale_temporaries(self.backup_dir)
        number = (self.generations() or [0])[0] + 1
        weights, record = self._paths(number)
        with atomic_path(weights, kill_name="backup_weights") as temporary:
            self.model.save_weights(temporary)
        write_json(record, {"epoch": epoch, "sha256": sha256(weights)}, kill_name="backup_record")
        for old in self.generations()[self.KEEP:]:
            for path in reversed(self._paths(old)):  # the record first: the generation stops counting
                if os.path.exists(path):
                    os.remove(path)
            kill_point("backup_prune")

    def on_train_begin(self, logs=None):
        self._received = None
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._handlers = {s: signal.signal(s, self._receive) for s in self.SIGNALS}

    def _receive(self, signum, frame):
        self._received = signum

    def on_epoch_begin(self, epoch, logs=None):
        # A signal during the last epoch's end or validation stops here, after every
        # callback has recorded that epoch and its generation was written.
        self._epoch = epoch
        if self._received is not None:
            self._interrupt(f"after epoch {epoch}", save=False)

    def on_train_batch_end(self, batch, logs=None):
        if self._received is not None:
            self._interrupt(f"in epoch {self._epoch + 1} after batch {batch + 1}", save=True)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def on_train_end(self, logs=None):
        if self._received is not None:
            self._interrupt("at the end of training", save=False)
        self._restore_handlers()

    def _interrupt(self, where, save):
        if save:
            self.save(self._epoch)  # the interrupted epoch runs again, from these weights
        self._restore_handlers()
        name = signal.Signals(self._received).name
        raise TrainingInterrupted(self._received, f"stopped by {name} {where}; state saved in {self.backup_dir}")

    def _restore_handlers(self):
        for s, handler in self._handlers.items():
            signal.signal(s, handler)
        self._handlers = {}


class HistoryFile(keras.callbacks.Callback):
    """`history.csv`: one row per finished epoch, rewritten atomically after each.

    On a resumed run (`fit(initial_epoch=k)`) the rows of epochs k and later, written
    before a crash but not kept by the backup, are dropped before the new ones are added.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.rows = []

    def on_train_begin(self, logs=None):
        self.rows = []
        if os.path.isfile(self.path):
            with open(self.path, newline="") as f:
                self.rows = list(csv.DictReader(f))

    def on_epoch_begin(self, epoch, logs=None):
        self.rows = [row for row in self.rows if int(row["epoch"]) < epoch]

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": str(epoch), **{k: repr(float(v)) for k, v in (logs or {}).items()}})
        keys = ["epoch"] + sorted({k for row in self.rows for k in row} - {"epoch"})
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, text.getvalue(), kill_name="history")


class ModelFile(keras.callbacks.Callback):
    """`model.keras` after every epoch (the latest model, for a look while training runs),
    written atomically."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        save_model(self.model, self.path, kill_name="checkpoint")


def save_model(model, path, kill_name=None):
    """`model.save(path)`, atomically: a reader sees the previous file or this one."""
    with atomic_path(path, kill_name) as temporary:
        model.save(temporary)
