"""lm-eval task configs for the em-tasks benchmark (YAML, with the hooks in ``utils.py``); see ``em_tasks.lm_eval``."""
