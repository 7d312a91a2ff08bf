"""A run in named steps: runtime -> data -> model -> run directory -> fit -> finish.

``Training(plan, events=...).run()`` is what ``trainer.train`` and ``trainer run`` call, with the
``TrainingPlan`` that ``trainer.api.plan_training`` made once (config, labels, runtime set-up, run
directory, resume state). Each step is one method; what happens is told through run events (``trainer.run.events``), never printed.
Every ending (completed, failed, interrupted, stopped by an event handler) writes
``metrics.json`` when it can and calls ``on_run_end`` before an exception propagates.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from trainer.config import Config
from trainer.threads import BackgroundTask
from trainer.errors import BadInputError, RunFailedError, RunInterrupted, follows_interrupt
from trainer.run.checkpoint import (
    NonFiniteLoss, ResumeState, RunLock, checkpointer, continue_callback_logs, loss_guard, remove_leftovers, truncate_history,
)
from trainer.run.best import best_epoch_for, best_record, keep_last_then_use_best, last_weights_file
from trainer.run.checkpoint import finish_checkpoints
from trainer.run.events import EventBus, RunResult, RunStartInfo, StopRun
from trainer.readers.records import Manifest
from trainer.readers.run_files import MetricsRecord
from trainer.run.plan import TrainingPlan
from trainer.run.rundir import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, HistoryWriter, atomic_write_text, create_run_dir, h5_size_estimate, save_model_h5, write_h5_atomically


DATA_CACHE_DIR = "data-cache"  # data.cache: disk keeps folder datasets' decoded pixels here while the run lasts
_RUNS_STARTED = 0  # runs this process has started (the first one has no previous run's garbage to collect)


class Training:
    """One run of ``plan`` (a ``TrainingPlan``: config, labels, runtime set-up, run directory, resume state)."""

    def __init__(self, plan: TrainingPlan, *, events: EventBus, callbacks: tuple[Any, ...] = (), at_end: Any = None):
        self.planned = plan  # decided once, before TensorFlow (trainer.api.plan_training); no step computes it again
        self.config, self.run_dir, self.events, self.setup = plan.config, plan.run_dir, events, plan.setup
        self.plan = plan.labels  # label encoding, loss and its parameters (trainer.config.checks.Plan)
        self.resume, self.extra_callbacks, self.dry_run, self.unique_name = plan.resume, tuple(callbacks), plan.dry_run, plan.unique_name
        self.feature_cache = plan.feature_cache  # a folder shared with other runs (a sweep's), else the run's own, removed
        self.at_end = at_end  # called with this Training at every ending (the API's report.html); returns a notice or None
        self.started = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.scratch: Path | None = None  # the run directory of a process other than 0 (removed at the end)
        self.completed = False  # metrics.json says completed
        self.ended = False  # on_run_end was called
        self.plotting: BackgroundTask | None = None  # matplotlib loading while the model trains
        self.averager: Any = None  # train.ema: the average of the weights (trainer.run.ema.WeightAverage), set up by fit

    # ------------------------------------------------------------------ the steps

    def run(self) -> RunResult:
        """All the steps; returns the result of a completed, stopped or dry run and raises for the others."""
        self.start_devices()
        self.load_data()
        self.build_and_compile()
        if self.dry_run:
            from trainer.models.compile import model_summary_text

            self.events.on_run_start(self.start_info())
            return RunResult("dry-run", None, plan=self.plan, model_summary=model_summary_text(self.model))  # ~0.1 s to render
        self.check_resume_weights()  # before the run directory is touched: a refused resume leaves it as it was
        try:
            with self.open_run_dir():
                try:
                    self.events.on_run_start(self.start_info())
                    self.write_run_files()
                    ending = self.fit()
                    if ending is not None:
                        return ending
                    return self.finish()
                except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as the CLI maps it, at any step of the run
                    raise self.interrupted() from None
                except BaseException as exc:  # SystemExit from an event handler, a refusal mid-run, a bug: still an ending
                    if follows_interrupt(exc):
                        raise self.interrupted() from None  # the interrupt, turned into another error inside TensorFlow
                    if not self.ended and not self.completed:
                        self.end_unexpectedly(exc)
                    raise
        finally:
            if self.at_end is not None and (problem := self.at_end(self)) is not None:  # report.html (trainer.report, via the API)
                self.events.on_notice(problem)
            if self.plotting is not None:  # never left importing while the interpreter shuts down
                with contextlib.suppress(Exception):
                    self.plotting.join()
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)

    def start_devices(self) -> None:
        """Start devices and distribution as planned, check the catalogue (no data read yet), seed everything."""
        import keras

        from trainer.config.overview import check_catalogue
        from trainer.data.batches import needs_tf_data
        from trainer.runtime.hidden_tensorflow import set_random_seed
        from trainer.runtime import start_runtime

        for text in self.plan.notices:
            self.events.on_notice(text)
        global _RUNS_STARTED
        # A previous run in this process leaves nothing behind (names, seeds, graphs); its garbage is
        # collected too, but before the first run there is none, and a full collection costs 0.3 s.
        keras.backend.clear_session(free_memory=_RUNS_STARTED > 0)
        _RUNS_STARTED += 1
        from trainer.runtime.compile_cache import use_compile_cache

        self.compile_cache = use_compile_cache(keras.backend.backend())  # before the first compile
        if self.compile_cache.notice:
            self.events.on_notice(self.compile_cache.notice)
        self.device, self.distribution = start_runtime(self.config, self.setup)  # JAX joins its peers here
        check_catalogue(self.config, self.plan)  # names, parameters and user code, before any data is read
        for text in self.distribution.setup.notices + self.distribution.notices:
            self.events.on_notice(text)
        set_random_seed(self.config.seed, tf_data=needs_tf_data())  # TensorFlow's seed only where it feeds the batches

    def check_resume_weights(self) -> None:
        """Read a completed run's ``model.h5`` and last weights file into the model before anything is written.

        A resume of a completed run continues from ``last.h5`` (or ``model.h5``); a damaged or
        crafted one is refused here, while ``metrics.json`` still says ``completed`` (``write_run_files``
        deletes it). The checkpointer loads the same files again when ``fit`` starts, so these
        weights are only a check. Weights only: a fine-tune phase compiles another optimizer.
        """
        if self.resume is None or not self.resume.completed or not self.distribution.is_chief:
            return
        from trainer.readers.model_h5 import load_h5_state
        from trainer.run.checkpoint.state import h5_read_limit

        limit = h5_read_limit(self.model)
        for name in dict.fromkeys((MODEL_FILE, self.resume.weights_file)):
            load_h5_state(self.model, Path(self.run_dir) / name, Path(self.run_dir), limit=limit, optimizer=False)

    def load_data(self) -> None:
        """The splits as arrays, the sample weights and the fit settings that depend on them."""
        from trainer.data.loaders import load_data
        from trainer.run.fit_settings import fit_kwargs, load_sample_weights

        from trainer.run.data_fingerprint import fingerprint_data

        self.data = load_data(self.config.data, seed=self.config.seed)  # its messages first: a missing file, a bad format
        # What data.path holds, recorded in every checkpoint for --resume to compare (a resume has just checked it).
        resumed = self.resume.data if self.resume is not None else None
        self.data_fingerprint = resumed if resumed is not None else fingerprint_data(self.config.data)
        for text in self.data.notices:
            self.events.on_notice(text)
        if self.data.x_val is not None:  # validation at chance while training learns: say so once (trainer.run.chance)
            from trainer.run.chance import ChanceWatch

            self.events.handlers.append(ChanceWatch(self.data.num_classes, self.events.on_notice))
        self.steps_per_epoch = self.config.train.steps_per_epoch or math.ceil(len(self.data.x_train) / self.config.train.batch_size)
        self.sample_weights = load_sample_weights(
            self.config, len(self.data.x_train), 0 if self.data.x_val is None else len(self.data.x_val), self.data.train_rows,
        )
        self.fit_settings = fit_kwargs(self.config, self.data.y_train, self.data.num_classes)

    def build_and_compile(self) -> None:
        """The model ``config.model`` describes, compiled with the configured loss, optimizer and metrics."""
        from trainer.models import build_model
        from trainer.models.compile import compile_model

        with self.distribution.scope():
            self.model = build_model(self.config.model, self.data.input_shape, self.data.num_classes, train_images=self.data.x_train)
            self.custom_objects = compile_model(self.model, self.config, self.plan, self.steps_per_epoch)

    @contextlib.contextmanager
    def open_run_dir(self):
        """Create (or, resuming, reopen) the run directory and hold its lock while the run uses it.

        A new run that stops with bad input (exit 2: an undecodable image found while the disk
        cache is filled, ...) before its first epoch completes leaves nothing behind: the run
        directory it created is removed, an empty one the user named is emptied back
        (``undo_new_run_dir``). Its scratch caches (``data-cache/``, ``features/``) go at every ending.
        """
        from trainer.outputs import Made
        from trainer.run.features import FEATURES_DIR
        from trainer.run.rundir import reserve_run_dir

        made: Made | None = None  # None: the run directory is not this run's to undo (resume, scratch)
        created = False
        if not self.distribution.is_chief:  # the one place that decides who writes: the others write to a private scratch folder
            self.scratch = self.run_dir = Path(tempfile.mkdtemp(prefix=f"trainer-process{self.distribution.setup.process_id}-"))
        elif self.resume is None:
            existed = not self.unique_name and Path(self.run_dir).is_dir()
            self.run_dir = reserve_run_dir(self.run_dir) if self.unique_name else create_run_dir(self.run_dir)
            made, created = Made(), not existed
            if created:
                made.track_dir(self.run_dir)
        with RunLock(self.run_dir) as lock:
            if self.resume is not None:
                remove_leftovers(self.run_dir)  # half-written files and caches of the killed process
            try:
                yield
                lock.remove = self.completed  # a finished run directory keeps no lock file
            except BadInputError:
                if made is not None and not self.rows:
                    self.undo_new_run_dir(made, created)
                raise
            finally:  # the decoded-pixel and feature caches are the run's scratch space, not its record
                for cache in (DATA_CACHE_DIR, FEATURES_DIR):
                    shutil.rmtree(self.run_dir / cache, ignore_errors=True)

    def undo_new_run_dir(self, made: Any, created: bool) -> None:
        """Remove what this run made of its run directory: all of it if it created it, else the entries it wrote into the empty folder."""
        if not created:  # the folder existed, empty, and the lock is held: everything in it is this run's
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.run_dir):
                    (made.track_dir if entry.is_dir(follow_symlinks=False) else made.track_file)(entry.path)
        if made.undo():
            done = "removed" if created else "emptied back (it was empty before)"
            self.events.on_notice(f"nothing was trained; the run directory {self.run_dir} was {done}.")

    def write_run_files(self) -> None:
        """``config.yaml`` and ``manifest.json``; on resume, ``history.csv`` cut back to the checkpoint."""
        if self.resume:  # first: an old "completed" must not outlive a resume that is killed (train.epochs grew)
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / METRICS_FILE).unlink()
        atomic_write_text(self.run_dir / CONFIG_FILE, self.config.to_yaml())
        data = self.data
        Manifest(
            dataset=data.dataset, num_classes=data.num_classes, class_names=data.class_names, input_shape=list(data.input_shape),
            label_encoding=self.plan.encoding, loss={"name": self.plan.loss_name, **self.plan.loss_params},
            model_output=self.config.model.output, custom_objects=self.custom_objects, model_type=self.config.model.type,
            trained_on=self.device.trained_on(), ema=self.config.train.ema.model_dump() if self.config.train.ema is not None else None,
            validation_split=data.validation_split, test_split=data.test_split,
        ).write(self.run_dir)
        if self.resume:
            self.rows = truncate_history(self.run_dir / HISTORY_FILE, self.resume.epoch)

    def fit(self) -> RunResult | None:
        """Train; None when all epochs ran, else the ending (a StopRun). Failures and interrupts raise after ``on_run_end``."""
        from trainer.catalogue.callbacks import build_callbacks
        from trainer.data.batches import epoch_counter
        from trainer.data.streaming import StreamedDataError, surfacing_data_errors
        from trainer.run.features import CachedFeatureTraining, augmentation_stops_cache, uses_cached_features

        config, data = self.config, self.data
        self.epoch_variable = epoch_counter()  # the shuffle order of epoch N depends on N only
        user_callbacks = build_callbacks(config.callbacks, self.run_dir, config.config_dir)
        if self.resume:
            continue_callback_logs(user_callbacks, self.run_dir, self.resume.epoch)
        settings = {**self.fit_settings, **({"initial_epoch": self.resume.epoch} if self.resume else {})}
        self.best = best_epoch_for(config, user_callbacks)  # model.h5's epoch (trainer.run.best), carried across phases
        from trainer.models.whitening import schedule_bias_freeze

        schedule_bias_freeze(self.model, self.steps_per_epoch)  # model.whitening.bias_epochs counts this run's epochs
        if config.train.ema is not None:  # here, not at compile: lr-find compiles the same model and must not average
            from trainer.run.ema import WeightAverage

            from trainer.run.ema import short_run_notice
            from trainer.run.fine_tune import total_epochs

            self.averager = WeightAverage(config.train.ema, total_steps=self.steps_per_epoch * total_epochs(config))
            self.averager.attach(self.model)

            notice = short_run_notice(config.train.ema, self.steps_per_epoch * (total_epochs(config) - config.train.initial_epoch))
            if notice:
                self.events.on_notice(notice)
        self.cached = None
        if uses_cached_features(config) and self.distribution.setup.strategy == "none":  # the cache is one process's, on one device
            self.cached = CachedFeatureTraining(self.model, data, self.run_dir, self.events, self.dataset, shared_dir=self.feature_cache)
        # TensorFlow, Keras and the traced functions are millions of long-lived Python objects; a full
        # garbage collection scans them all (0.3-0.6 s each, several per run). Freezing them excludes
        # them from later scans; new garbage is still collected as usual. Undone when the run ends.
        gc.freeze()
        try:
            try:
                if self.cached is not None:
                    self.events.on_notice("the backbone is frozen: its features are computed once per split and only the head trains (train.cache_features).")
                elif augmentation_stops_cache(config):
                    self.events.on_notice(augmentation_stops_cache(config))
                with surfacing_data_errors():  # an image gone or undecodable while streaming: a DataError, not TensorFlow's
                    if getattr(config.model, "fine_tune", None) is not None:
                        from trainer.run.fine_tune import fit_in_phases

                        fit_in_phases(self, user_callbacks, settings)
                    else:
                        self.fit_phase(self.phase_callbacks(user_callbacks, self.resume), epochs=config.train.epochs, **settings)
                if self.averager is not None:  # test, model.h5 and exports: the average (also when a resume fitted no epoch)
                    self.averager.use_average()
                self.checkpointer.wait()  # the last epoch's checkpoint is on disk (or its write error raised)
            finally:  # every ending: the checkpoint being written is complete before metrics.json and on_run_end
                self.checkpointer_wait_quietly()
        except StopRun as stop:
            return self.end(stop.status, stop.reason)
        except NonFiniteLoss as exc:
            kept = f"the checkpoint of epoch {len(self.rows)} is kept" if self.rows else "no epoch had completed, so there is no checkpoint"
            self.fail(exc.reason, f"{exc.reason}; the run stopped and {kept}. See {self.run_dir / METRICS_FILE}")
        except RunFailedError as exc:
            self.fail(exc.message, exc.message)
        except StreamedDataError as exc:  # data that went bad mid-run (streamed images): the run fails, its checkpoints stay
            kept = f"the checkpoint of epoch {len(self.rows)} is kept" if self.rows else "no epoch had completed, so there is no checkpoint"
            reason = f"a data file went bad during training: {exc.message}"
            self.fail(reason, f"{reason} The run stopped and {kept}; fix or remove the file, then --resume. See {self.run_dir / METRICS_FILE}")
        except OSError as exc:
            reason = f"cannot write to the run directory {self.run_dir}: {exc.strerror or exc}"
            self.fail(reason, reason)
        except Exception as exc:  # last: only a backend's out-of-memory error is handled here
            message = out_of_memory_message(exc)
            if message is None:
                raise
            self.fail(f"out of memory: {message}", f"out of memory during training ({message}); try a smaller train.batch_size or model.")
        finally:
            self.events.on_phase_end()
            gc.unfreeze()
        return None

    def finish(self) -> RunResult:
        """Test metrics, ``model.h5``, ``metrics.json`` and ``curves.png``; then ``on_run_end``.

        ``curves.png`` is drawn on a background thread while the test split is evaluated and
        ``model.h5`` saved; it is complete before ``on_run_end`` and before ``train`` returns.
        """
        curves = self.draw_curves_in_background()
        try:
            self.keep_last_then_use_best()
            test = None
            if self.data.x_test is None:  # no test split (a folder without test/, data.test not set): no test numbers
                if self.cached is not None:
                    self.cached.cleanup()
            elif self.cached is not None:
                try:
                    test = self.cached.evaluate_test()
                    test.update(self.test_figures(self.cached.test_probabilities()))
                except RunFailedError as exc:  # the test split's features could not be written (a full disk)
                    with contextlib.suppress(Exception):
                        curves.join()
                    self.fail(exc.message, exc.message)
                self.cached.cleanup()
            else:
                from trainer.data.streaming import StreamedDataError, surfacing_data_errors

                test_ds = self.dataset(self.data.x_test, self.data.y_test)
                try:
                    with surfacing_data_errors():
                        test = {k: float(v) for k, v in self.model.evaluate(test_ds, verbose=0, return_dict=True).items()}
                        test.update(self.test_figures())
                except StreamedDataError as exc:
                    reason = f"a data file went bad while the test split was measured: {exc.message}"
                    self.fail(reason, f"{reason} Every epoch's checkpoint is kept; fix or remove the file, then run trainer eval.")
            test_tta = self.test_with_tta()
            try:
                write_h5_atomically(self.run_dir / MODEL_FILE, save_model_h5(self.model), h5_size_estimate(self.model))
                metrics = self.write_metrics("completed", test=test, test_tta=test_tta)
                self.completed = True
                if self.config.train.ema is None:  # with train.ema the checkpoint holds the raw weights, which no .h5 does: it stays
                    finish_checkpoints(self.run_dir, last_weights_file(self.best, len(self.rows)))
            except OSError as exc:
                reason = f"cannot write {self.run_dir / MODEL_FILE} or {METRICS_FILE}: {exc.strerror or exc}; nothing half-written was left."
                with contextlib.suppress(Exception):
                    curves.join()
                self.fail(reason, reason)
        finally:
            try:
                curves.join()
            except OSError as exc:  # the picture is a convenience: the run itself is complete
                self.events.on_notice(f"could not write curves.png: {exc.strerror or exc}")
        result = RunResult("completed", self.public_run_dir, metrics, list(self.rows), plan=self.plan)
        self.ended = True
        self.events.on_run_end(result)
        return result

    def keep_last_then_use_best(self) -> None:
        """``last.h5`` gets the last epoch (when it is not the best), then the model holds the best epoch (``trainer.run.best``)."""
        try:
            keep_last_then_use_best(self.model, self.cached.head if self.cached is not None else self.model, self.best, len(self.rows), self.run_dir)
        except OSError as exc:
            reason = f"cannot write {self.run_dir / 'last.h5'}: {exc.strerror or exc}; nothing half-written was left."
            self.fail(reason, reason)

    def test_figures(self, probs: Any = None) -> dict[str, float]:
        """``metrics.json``'s test figures beyond the compiled metrics: macro / weighted precision, recall, F1 and
        balanced accuracy of the model's top-1 predictions (``inference.scores``); ``probs`` when already computed."""
        import numpy as np

        from trainer.inference.scores import test_figures
        from trainer.inference.probabilities import tta_probabilities

        if self.distribution.setup.num_processes > 1:  # a predict over a sharded split would be each process's share:
            return {}  # across processes only the compiled metrics are recorded (trainer eval computes the figures from model.h5)
        labels = np.asarray(self.data.y_test)
        labels = labels.argmax(axis=1) if labels.ndim > 1 else labels
        if probs is None:
            probs = tta_probabilities(self.model, self.data.x_test, self.config.model.output, "none", self.config.train.batch_size)
        self.test_probabilities = np.asarray(probs)  # report.html's confusion matrix and worst images reuse them (trainer.report)
        return test_figures(self.test_probabilities, labels)

    def test_with_tta(self) -> dict[str, Any] | None:
        """``evaluate.tta``: the test split's probabilities averaged over its views (``metrics.json``'s ``test_tta``); else None."""
        mode = self.config.evaluate.tta
        if mode == "none" or self.data.x_test is None:
            return None
        from trainer.inference.probabilities import tta_scores

        return tta_scores(self.model, self.data.x_test, self.data.y_test, self.config.model.output, mode, self.config.train.batch_size)

    def preload_plotting(self) -> None:
        """Load matplotlib on a background thread while training (process 0 only), so ``curves.png`` does not wait for it."""
        from trainer.inference.plots import preload

        if self.distribution.is_chief and self.plotting is None:
            self.plotting = BackgroundTask(preload)

    def draw_curves_in_background(self) -> "BackgroundTask":
        """Start drawing ``curves.png`` (process 0 only); ``join()`` the task returned."""
        from trainer.inference.plots import CURVES_FILE, write_curves

        if not self.distribution.is_chief:
            return BackgroundTask(lambda: None)
        import functools

        return BackgroundTask(functools.partial(write_curves, best_epoch=getattr(self.best, "best_epoch", None)), list(self.rows), self.run_dir / CURVES_FILE)

    # ------------------------------------------------------------------ endings

    def end(self, status: str, reason: str | None = None) -> RunResult:
        """Record an ending other than completion: ``metrics.json`` when it can be written, then ``on_run_end``."""
        metrics: dict[str, Any] = {}
        with contextlib.suppress(OSError):
            metrics = self.write_metrics(status, reason=reason)
        result = RunResult(status, self.public_run_dir, metrics, list(self.rows), reason=reason, plan=self.plan)
        self.ended = True
        self.events.on_run_end(result)
        return result

    def interrupted(self) -> RunInterrupted:
        """Ctrl-C or SIGTERM: ``metrics.json`` says interrupted (unless the run had already completed); the error to raise."""
        if self.completed:
            message = f"interrupted after the run completed; every file in {self.run_dir} is written"
        else:
            done = f"after {len(self.rows)} completed epoch(s)" if len(self.rows) < self.config.train.epochs else "after the last epoch, before model.h5 and the test metrics were written"
            message = f"interrupted {done}; the run directory is {self.run_dir}"
            if not self.ended:
                self.end("interrupted", message)
        error = RunInterrupted(message)
        error.run_dir = self.run_dir
        return error

    def end_unexpectedly(self, exc: BaseException) -> None:
        """An ending no step handled (``SystemExit`` from a run-event handler, a RunDirError mid-run, a bug).

        ``metrics.json`` says ``interrupted`` for ``SystemExit``/``GeneratorExit`` (the process is
        asked to stop; resume continues it) and ``failed`` for an error, with the reason; then
        ``on_run_end``. The exception itself propagates unchanged.
        """
        from trainer.errors import TrainerError

        self.checkpointer_wait_quietly()
        if isinstance(exc, TrainerError):
            status, reason = "failed", exc.message
        elif isinstance(exc, Exception):
            status, reason = "failed", f"{type(exc).__name__}: {str(exc)[:500]}"
        else:
            code = f"({exc.code!r})" if isinstance(exc, SystemExit) else ""
            status, reason = "interrupted", f"{type(exc).__name__}{code} ended the run after {len(self.rows)} completed epoch(s)"
        try:
            self.end(status, reason)
        except BaseException:  # noqa: BLE001 - a handler's second exception gives way to the first
            self.ended = True

    def checkpointer_wait_quietly(self) -> None:
        """Join the checkpoint writer; its error, if any, gives way to the ending already under way."""
        with contextlib.suppress(Exception):
            if getattr(self, "checkpointer", None) is not None:
                self.checkpointer.wait()

    def fail(self, reason: str, message: str) -> None:
        self.end("failed", reason)
        raise RunFailedError(message) from None

    def write_metrics(
        self, status: str, *, test: dict[str, Any] | None = None, test_tta: dict[str, Any] | None = None, reason: str | None = None,
    ) -> dict[str, Any]:
        from trainer.models.compile import versions

        return MetricsRecord.from_history(
            status, self.rows, test=test, test_tta=test_tta, reason=reason, wall_seconds=round(time.perf_counter() - self.started, 3),
            seed=self.config.seed, device=self.device.to_dict(), distribute=self.distribution.to_dict(), versions=versions(),
            run_dir=str(self.run_dir), ema=self.config.train.ema.model_dump() if self.config.train.ema is not None else None,
            best=best_record(getattr(self, "best", None), len(self.rows)) if status == "completed" else None,
        ).write(self.run_dir)

    # ------------------------------------------------------------------ helpers

    def phase_callbacks(self, user_callbacks: list[Any], resume: ResumeState | None, phase: str | None = None) -> list[Any]:
        """The callbacks of one ``fit``: history row, loss guard, the user's, checkpoint (last; restores ``resume``)."""
        from trainer.run.recorder import after_first_epoch, epoch_recorder

        recorder = epoch_recorder(HistoryWriter(self.run_dir / HISTORY_FILE), self.events, self.rows, len(self.data.x_train), phase)
        self.checkpointer = checkpointer(
            self.run_dir, [*user_callbacks, self.best], self.epoch_variable, resume, getattr(self, "data_fingerprint", None), averager=self.averager,
        )
        preload = after_first_epoch(self.preload_plotting)
        # the average's swap comes first: every other callback sees the averaged weights at the epoch's end
        average = [self.averager.callback()] if self.averager is not None else []
        # the best epoch's copy is taken before early_stopping may put its restored weights in
        cache = [after_first_epoch(self.report_compile_cache)] if getattr(self, "compile_cache", None) is not None else []
        return [*average, recorder, *cache, loss_guard(), self.best, *user_callbacks, *self.extra_callbacks, preload, self.checkpointer]  # the checkpointer comes last

    def report_compile_cache(self) -> None:
        """Once a run: how many programs of the first epoch came from the compile cache (``trainer.runtime.compile_cache``)."""
        text, self.compile_cache = self.compile_cache.usage(), None
        if text:
            self.events.on_notice(text)

    def fit_phase(self, callbacks: list[Any], *, epochs: int, **settings: Any) -> None:
        """One ``fit`` up to epoch ``epochs``: the head on cached features, or the whole model on (augmented) images."""
        config, data = self.config, self.data
        if self.cached is not None:
            self.cached.fit(
                self.compile_head, epochs=epochs, callbacks=callbacks, shuffle=config.train.shuffle,
                weights=self.sample_weights, xla=config.compile.jit_compile is not False, **settings,
            )
            return
        from trainer.data import device_augment

        # data.augment inside the compiled step: the host hands over uint8 images and a few numbers per image
        on_device = device_augment.runs_on_device(config.data.augment, self.distribution.setup.strategy)
        train_ds = self.train_dataset(
            repeat=config.train.steps_per_epoch is not None,  # epochs of steps_per_epoch batches may run past the end of the data
            steps_per_epoch=config.train.steps_per_epoch,
            # where the endless stream starts, and how many batches Keras reads an epoch (whole executions)
            initial_epoch=settings.get("initial_epoch", 0), steps_per_execution=getattr(self.model, "steps_per_execution", 1) or 1,
            augment_on_device=on_device,
        )
        if on_device:  # after train.ema's attach and any recompile: it wraps the step they left
            device_augment.install(self.model, config.data.augment)
        else:
            device_augment.uninstall(self.model)
        val_ds = self.dataset(data.x_val, data.y_val) if data.x_val is not None else None
        self.model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False, **settings)

    def train_dataset(self, repeat: bool = False, steps_per_epoch=None, **stream: Any):
        """The training batches as ``fit`` sees them: shuffled as configured, sample weights, augmented (training batches only).

        ``stream``: ``initial_epoch`` and ``steps_per_execution`` of an endless one (``trainer.data.batches.EpochStream``)."""
        return self.dataset(
            self.data.x_train, self.data.y_train, shuffle=self.config.train.shuffle, weights=self.sample_weights,
            augment=self.config.data.augment, repeat=repeat, steps_per_epoch=steps_per_epoch, **stream,
        )

    @property
    def public_run_dir(self) -> Path | None:
        """The run directory callers see (None for processes other than 0: they write nothing)."""
        return None if self.scratch is not None else self.run_dir

    def dataset(self, x, y, shuffle: bool = False, weights=None, augment=None, repeat: bool = False, steps_per_epoch=None, **stream: Any):
        from trainer.data.batches import make_batches

        return make_batches(
            x, y, batch_size=self.config.train.batch_size, encoding=self.plan.encoding, num_classes=self.data.num_classes,
            shuffle=shuffle, seed=self.config.seed, weights=weights, epoch_variable=getattr(self, "epoch_variable", None),
            augment=augment, repeat=repeat, steps_per_epoch=steps_per_epoch, **stream,
            cache_dir=None if self.run_dir is None else self.run_dir / DATA_CACHE_DIR,
            **({"drop_remainder": True} if self.distribution.full_batches else {}),
        )

    def compile_head(self, head) -> None:
        from trainer.models.compile import compile_model

        compile_model(head, self.config, self.plan, self.steps_per_epoch)

    def start_info(self) -> RunStartInfo:
        import keras

        from trainer.models.compile import describe_steps_per_execution, summarize

        sizes = self.data.sizes()
        summary = summarize(self.model)
        header = [
            ("dataset", f"{self.data.dataset} from {self.data.source}"),
            ("examples", f"train {sizes['train']:,}  validation {sizes['validation']:,}  "
                         + (f"test {sizes['test']:,}" if self.data.x_test is not None else "test none (no test split)")),
            ("model", summary),
            ("labels", f"{self.plan.encoding}, {self.data.num_classes} classes"),
            ("device", self.device.description),
            *((("compile cache", self.compile_cache.describe()),) if getattr(self, "compile_cache", None) is not None else ()),
            ("steps per call", describe_steps_per_execution(self.config, self.model.steps_per_execution, keras.backend.backend())),
            *((("ema", self.config.train.ema.describe()),) if self.config.train.ema is not None else ()),
            *((("distribute", self.distribution.summary()),) if self.distribution.setup.strategy != "none" else ()),
            ("run directory", str(self.run_dir) if not self.dry_run else "(dry run: nothing written)"),
        ]
        return RunStartInfo(
            self.config, None if self.dry_run else self.public_run_dir, sizes, summary, header,
            initial_epoch=self.resume.epoch if self.resume else 0, resumed=self.resume is not None,
        )


def out_of_memory_message(exc: BaseException) -> str | None:
    """The message of a backend's out-of-memory error (TensorFlow's ResourceExhaustedError, XLA's RESOURCE_EXHAUSTED, CUDA's), else None."""
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "errors") and isinstance(exc, tf.errors.ResourceExhaustedError):
        return exc.message
    text = str(exc)
    if type(exc).__name__ in ("XlaRuntimeError", "JaxRuntimeError", "OutOfMemoryError") and (
        "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()
    ):
        return text.splitlines()[0] if text else type(exc).__name__
    return None
