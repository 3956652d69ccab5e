"""em_tasks.scoring."""
