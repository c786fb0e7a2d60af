"""Exception hierarchy.

Every error nkflow raises on purpose derives from :class:`NkflowError`. Messages name the
file, the row or field, what was found, what was expected and how to fix it. The CLI turns
an ``NkflowError`` into one readable line on stderr and exit status 1, with no traceback.
"""


class NkflowError(Exception):
    """Base class of all deliberate nkflow errors."""


class ConfigError(NkflowError):
    """A configuration file, sample sheet or side table is wrong (fix the input)."""


class FcsError(NkflowError):
    """An FCS file cannot be read, is truncated or fails an integrity check."""


class PanelError(NkflowError):
    """Markers cannot be resolved unambiguously to channels."""


class CompensationError(NkflowError):
    """A spillover matrix is missing, malformed, mismatched or singular."""


class GatingError(NkflowError):
    """A gate tree is invalid or a gate cannot be evaluated."""


class ReviewError(NkflowError):
    """A review action is refused; nothing was written.

    Refused for a wrong password, an unknown user, a missing reason, the two-person rule, or a tube
    changed since it was opened.
    """


class AuditError(NkflowError):
    """The audit log is unreadable or its hash chain is broken.

    A broken chain means an entry was edited, deleted or reordered.
    """
