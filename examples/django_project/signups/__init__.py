"""Signups: a model, a view that enqueues in the model's transaction, and the job handlers."""
