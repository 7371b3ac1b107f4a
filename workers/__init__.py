"""Celery adapter: the app, the batched embed and caption tasks, and enqueue helpers."""
