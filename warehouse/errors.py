"""Errors raised by the warehouse layer.

Every error says what happened, where, and what to do. ``PrescoreError`` is the root; the CLI turns any
``UserError`` into a one-line message and exit code 1, and lets anything else (a bug) propagate.
"""

from __future__ import annotations


class PrescoreError(Exception):
    """Root of every error prescore raises on purpose."""


class UserError(PrescoreError):
    """A mistake the user can fix (bad input, bad configuration, missing data). Exit code 1 in the CLI."""


class ConfigError(UserError):
    """The settings or the models file are invalid; the message names the field."""


class UnknownModelError(UserError):
    """A model name that the models file does not declare."""


class UnknownFeatureSetError(UserError):
    """A feature-set name that the models file does not declare."""


class PartitionNotFoundError(UserError):
    """A feature (or score) partition that does not exist on disk."""


class PartitionUnreadableError(UserError):
    """A file of a complete feature partition that is not readable Parquet (truncated, overwritten, not Parquet);
    the message names the file."""


class ContractViolationError(UserError):
    """A partition breaks its feature-set contract. ``violations`` lists every problem found."""

    def __init__(self, message: str, violations: list[object]) -> None:
        super().__init__(message)
        self.violations = violations


class RegistryError(UserError):
    """A model artifact is missing, tampered with, or does not match its contract."""


class CatalogError(UserError):
    """The run catalog cannot be reached or refused an operation."""


class RunConflictError(CatalogError):
    """Another run of the same (model, partition) is already running."""


class StoreError(UserError):
    """The Redis score store refused an operation (bad run, gate failure, bad id...)."""


class StoreUnavailableError(PrescoreError):
    """Redis cannot be reached or timed out. The online reader degrades on this error, and only on it."""


class StoreAuthError(ConfigError, StoreUnavailableError):
    """Redis refused the credentials in its URL (wrong or missing password, unknown user), or its TLS certificate is
    not signed by the CA the URL trusts (``rediss://…?ssl_ca_certs=``). Retrying will not help: it
    is a configuration error for the command line (exit 1), while the online reader still degrades on it, as on any
    ``StoreUnavailableError``, so lookups keep answering from the fallback model while the URL is fixed."""


class QualityGateError(StoreError):
    """A run's score distribution drifted too far from the current run's (PSI above the model's max_psi)."""


class PointerMovedError(StoreError):
    """A restore found the model's pointer moved by a publish or rollback meanwhile: the newer change stands."""


class RestoreRefusedError(StoreError):
    """A run cannot be restored from the warehouse: its Parquet is gone or no longer matches its manifest."""


class OlderRunError(StoreError):
    """Publishing a run whose as_of is older than the current run's (history never overwrites the live store)."""


class PromotionRefusedError(UserError):
    """``prescore promote`` refused a challenger: a check of its promotion gate (``models.<m>.promotion``) failed,
    or it has no run to make live; the message lists the failing checks. Nothing was changed."""


class DeltaRefusedError(UserError):
    """``prescore delta`` refused the new delta drops (``jobs.delta``): a drop is of a date whose nightly run is not the
    live one, or no run is live. Refused, not held: nothing was scored; the message says which run is live and what
    to do."""
