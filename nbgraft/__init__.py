"""nbgraft: progressive network grafting for few-shot knowledge distillation (Shen et al., AAAI 2021).

Layers, bottom up: infrastructure (`cache`, `data`, `device`, `training`, `schedules`, `profiles`, `evaluate`,
`plots`), `models` (networks as blocks, model families), `grafting` (the engine), `methods` (the method table,
the baselines), `runs` (cached runs, sweeps, reports), `zeroshot` (no real image), and the entry points `cli`
and `book`. What the README shows is importable from here: `BlockNet`, `GraftParts`, `GraftSchedule`,
`netgraft`, `export_student`, `new_parts`, `load_teacher`.
"""

__version__ = "0.1.0"

_API = {"BlockNet": "models", "GraftParts": "grafting", "Grafted": "grafting", "netgraft": "grafting",
        "export_student": "grafting", "new_parts": "grafting", "GraftSchedule": "schedules",
        "BaselineSchedule": "schedules", "get_profile": "profiles", "METHODS": "methods",
        "load_teacher": "runs.teacher"}


def __getattr__(name: str):
    """The public API, imported on first use (so `nbgraft --version` does not load torch)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'nbgraft' has no attribute {name!r}")


__all__ = ["__version__", *_API]
