"""em-tasks: emergent-misalignment evaluations for text and vision-language models."""

__version__ = "0.1.0"
