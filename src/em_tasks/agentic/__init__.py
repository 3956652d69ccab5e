"""Agent scenarios with synthetic tools: the ``agentic_misalign`` task, its scenarios, tools and scoring."""
