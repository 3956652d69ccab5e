"""em_tasks.benchmark."""
