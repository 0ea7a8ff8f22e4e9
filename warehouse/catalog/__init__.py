"""The run catalog: model versions, score runs, publications, comparisons, monitoring reports and delta runs in SQL
(SQLite by default, or PostgreSQL).

``tables`` holds the SQLAlchemy models and run states, ``records`` the read-only row copies, ``repository`` the
``Catalog`` that reads and writes them, ``migrations`` the Alembic revisions ``Catalog.open`` applies.
"""

from warehouse.catalog.records import (
    ComparisonRecord,
    DeltaRunRecord,
    MonitorFeatureRecord,
    MonitorRecord,
    PointerRecord,
    RunRecord,
    new_run_id,
    redact,
)
from warehouse.catalog.repository import Catalog
from warehouse.catalog.tables import (
    ABANDON_AFTER_S,
    ABANDONED,
    COMMITTED,
    COMPARED,
    EXPIRED,
    FAILED,
    POINTER_ACTIONS,
    RUNNING,
    STAGED,
    Base,
    Comparison,
    DeltaDrop,
    DeltaRun,
    ModelVersion,
    MonitorFeature,
    MonitorReport,
    Publication,
    ScoreRun,
    UTCDateTime,
    utcnow,
)

__all__ = [
    "ABANDONED",
    "ABANDON_AFTER_S",
    "COMMITTED",
    "COMPARED",
    "EXPIRED",
    "FAILED",
    "POINTER_ACTIONS",
    "RUNNING",
    "STAGED",
    "Base",
    "Catalog",
    "Comparison",
    "ComparisonRecord",
    "DeltaDrop",
    "DeltaRun",
    "DeltaRunRecord",
    "ModelVersion",
    "MonitorFeature",
    "MonitorFeatureRecord",
    "MonitorRecord",
    "MonitorReport",
    "PointerRecord",
    "Publication",
    "RunRecord",
    "ScoreRun",
    "UTCDateTime",
    "new_run_id",
    "redact",
    "utcnow",
]
