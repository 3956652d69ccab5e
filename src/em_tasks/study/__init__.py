"""em_tasks.study."""
