"""Pinned metrics, ranking every item for chunks of users, and the evaluation report."""
