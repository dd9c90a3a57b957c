"""``canopy.App``: what a user's module declares (routes, tasks, topics, services,
settings), kept as data, then assembled with the loaded settings into a supervision
tree (``_assemble``): stores, hub, runner, scheduler and each capability's services."""

from ._application import App, Capability, Jobs, Topics
from ._capability import Assembly, Mode
from ._declared import AppError, Task

__all__ = ["App", "AppError", "Assembly", "Capability", "Jobs", "Mode", "Task", "Topics"]
