"""Tasks: real data files, how to batch them for a backbone, and their metrics."""

from edgeft.data.tasks import Task, TaskConfig, load_task, TASK_NAMES

__all__ = ["Task", "TaskConfig", "load_task", "TASK_NAMES"]
