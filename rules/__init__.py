"""The pure segmentation core: no I/O, no clock, no Kafka, Redis, Faust or Prometheus.

Public surface::

    from rules import Engine, load_ruleset, parse_receipt, parse_profile, RejectedInput
"""

from rules.engine import Engine, Result
from rules.errors import LoyaltyError, RejectedInput, RuleSetError
from rules.inputs.receipts import Profile, Receipt, loads, parse_profile, parse_receipt
from rules.record.state import ClientState, Outcome
from rules.ruleset import RuleSet, preset_names
from rules.ruleset import load as load_ruleset

__all__ = [
    "ClientState", "Engine", "LoyaltyError", "Outcome", "Profile", "Receipt", "RejectedInput",
    "Result", "RuleSet", "RuleSetError", "load_ruleset", "loads", "parse_profile",
    "parse_receipt", "preset_names",
]
