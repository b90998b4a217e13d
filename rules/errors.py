"""Exceptions of the segmentation core.

Tree::

    LoyaltyError
    ├── RejectedInput          bad receipt/profile; ``reason`` is a machine-readable code
    └── RuleSetError           a rule set or scenario file that does not load
                               (``file``, ``line``, ``rule`` name the place)
"""

from __future__ import annotations


class LoyaltyError(Exception):
    """Base of every error the core raises on purpose."""


class RejectedInput(LoyaltyError):
    """Input that is kept aside (DLQ, rejects file) with a machine-readable reason."""

    def __init__(self, reason: str, detail: str = "", field: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        super().__init__(f"{reason}: {detail}" if detail else reason)

    def as_dict(self) -> dict[str, str]:
        out = {"reason": self.reason, "detail": self.detail}
        if self.field is not None:
            out["field"] = self.field
        return out


class RuleSetError(LoyaltyError):
    """A rule set that cannot be loaded. The message names file, line and rule."""

    def __init__(
        self, message: str, file: str = "<string>", line: int | None = None, rule: str | None = None
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.rule = rule
        where = file if line is None else f"{file}:{line}"
        what = f" [{rule}]" if rule else ""
        super().__init__(f"{where}{what}: {message}")
