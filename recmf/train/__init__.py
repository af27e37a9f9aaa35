"""Fit, select, refit: a training run from data to a logged bundle, its resume, its progress
lines, the sweep callback and the fold-in constants chosen after training."""
