"""em_tasks.models."""
