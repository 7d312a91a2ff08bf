"""Per-epoch checkpoints and resume: one module per concept, re-exported here for the run and the API.

``lock`` (one process per run directory), ``resume`` (read the checkpoint back, refuse what cannot
be continued), ``logs`` (cut logs back to the checkpoint, remove leftovers), ``callback`` (the Keras
callback), ``writer`` (the background writer), ``state`` (model and optimizer arrays); the loss
guard is ``trainer.run.guards``. Every module needs only the standard library at import
(``trainer run --resume`` refuses a bad resume before TensorFlow is imported); Keras is imported
inside functions.

A checkpoint is ``checkpoint-epochNNNN.weights.npz`` (model weights and optimizer state, in
variable order; with ``train.ema`` the raw weights, and the average and its step count among the
optimizer's variables: ``trainer.run.ema``), for ``early_stopping`` with ``restore_best_weights`` the best weights so far
(``checkpoint-bestI-epochNNNN.weights.npz``, rewritten only when they change), and
``checkpoint.json`` (the epoch, those files' names, the state of the callbacks that carry state,
the random-number state). The training thread copies that state at the epoch's end; a background
thread writes the files while the next epoch trains. ``checkpoint.json`` is replaced atomically
*after* every file it names is complete, and files only the previous one named are deleted only
after that, so a kill at any instant leaves the previous or the new checkpoint, never a broken one.

Order at the end of an epoch: ``history.csv`` (and the csv_logger/json_log files) get the row,
then the checkpoint is written. A kill in between leaves one row more than the checkpoint;
resume drops rows beyond it in every log.
"""
from trainer.readers.run_files import CHECKPOINT_FILE
from trainer.run.checkpoint.callback import checkpointer, finish_checkpoints
from trainer.run.checkpoint.lock import LOCK_FILE, RunLock
from trainer.run.checkpoint.logs import continue_callback_logs, remove_leftovers, truncate_history
from trainer.run.checkpoint.resume import (
    ResumeState, check_resume, config_differences, read_checkpoint, read_checkpoint_json, read_checkpoint_quiet, resume_command,
)
from trainer.run.checkpoint.state import read_arrays, write_arrays
from trainer.run.checkpoint.writer import CheckpointWriter
from trainer.run.guards import NonFiniteLoss, loss_guard

__all__ = [
    "CHECKPOINT_FILE", "CheckpointWriter", "LOCK_FILE", "NonFiniteLoss", "ResumeState", "RunLock", "check_resume", "checkpointer", "config_differences",
    "continue_callback_logs", "finish_checkpoints", "loss_guard", "read_arrays", "read_checkpoint", "read_checkpoint_json",
    "read_checkpoint_quiet", "remove_leftovers", "resume_command", "truncate_history", "write_arrays",
]
