"""``trainer sweep``: a hyperparameter search on Optuna whose trials are ordinary runs.

``plan_sweep(config, ...)`` resolves where the search lives (sweep directory, storage, study);
``run_trials(plan, events, train=trainer.api.train)`` runs trials in this process until the budget is used;
``write_outputs(plan)`` writes ``trials.csv``, ``sweep.json``, ``best.yaml`` and the plots.
Progress is reported through ``SweepEvents``; nothing here prints.
"""
from trainer.sweep.driver import SweepPlan, plan_sweep, run_trials
from trainer.sweep.events import SweepEvents, SweepStartInfo, TrialRecord
from trainer.sweep.outputs import SweepSummary, write_outputs

__all__ = ["SweepPlan", "plan_sweep", "run_trials", "SweepEvents", "SweepStartInfo", "TrialRecord", "SweepSummary", "write_outputs"]
