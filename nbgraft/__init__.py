"""nbgraft: progressive network grafting for few-shot knowledge distillation (Shen et al., AAAI 2021)."""

__version__ = "0.1.0"
