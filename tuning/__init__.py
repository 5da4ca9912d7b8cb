"""The tuning platform: per-machine-type Ray Tune + Optuna searches, trials trained in Ray Train workers.

Besides the training-loop adapter (``tuning.worker``), this package is the only place that imports Ray.
"""
