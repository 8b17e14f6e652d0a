"""Prefect flows that run the `dedupe` stages as tasks."""
