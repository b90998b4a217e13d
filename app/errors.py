"""Exceptions of the application layer.

Tree::

    AppError
    └── SettingsError      an environment variable with an invalid value
"""

from __future__ import annotations


class AppError(Exception):
    """Base of the app package's own errors."""


class SettingsError(AppError):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")
