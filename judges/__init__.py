"""Judge prompt templates (markdown), shipped with the package as em_tasks.judges."""
