"""Models from MLflow for ``prescore register --from-mlflow``: a registered model version (``models:/NAME/VERSION``,
``models:/NAME@ALIAS``), a run's artifact (``runs:/RUN_ID/PATH``), a logged model (``models:/m-…``) or a local
MLflow model directory.

``fetch`` downloads the model's artifacts into a directory the caller owns (from the tracking server named by
``MLFLOW_TRACKING_URI``), reads its ``MLmodel`` file and returns the path of the XGBoost model file with the
lineage to record. Needs the ``mlflow`` extra (``pip install 'prescore[mlflow]'``); the online image does not carry
it. Every failure is a ``RegistryError`` that names the URI and what to do: MLflow not installed, a tracking server
that does not answer (a few quick retries, not MLflow's default minutes of backoff), a URI that does not exist, a
model without an ``xgboost`` flavor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from warehouse.errors import RegistryError

# MLflow's HTTP client retries for minutes by default: a register against a server that is down should say so.
_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
          "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}  # fmt: skip


@dataclass(frozen=True)
class MlflowModel:
    path: Path  # the XGBoost model file inside the downloaded (or given) model directory
    lineage: dict[str, Any]


def _flavor(model_dir: Path, uri: str) -> MlflowModel:
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise RegistryError(f"{uri} is not an MLflow model (no MLmodel file in {model_dir}); give the model's URI")
    try:
        meta = yaml.safe_load(mlmodel.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"the MLmodel file of {uri} is not valid YAML: {exc}") from None
    flavors = meta.get("flavors") or {}
    xgb_flavor = flavors.get("xgboost")
    if not isinstance(xgb_flavor, dict) or not xgb_flavor.get("data"):
        raise RegistryError(
            f"{uri} has no xgboost flavor (flavors: {sorted(flavors) or 'none'}): log the model with "
            "mlflow.xgboost.log_model(booster, ...) so prescore can read the booster itself"
        )
    if xgb_flavor.get("model_class") not in (None, "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier",
                                             "xgboost.sklearn.XGBRegressor", "xgboost.sklearn.XGBRanker"):  # fmt: skip
        raise RegistryError(f"{uri}: xgboost model class {xgb_flavor.get('model_class')} is not supported")
    lineage = {
        "mlflow_uri": uri,
        "mlflow_run_id": meta.get("run_id"),
        "mlflow_model_id": meta.get("model_id") or meta.get("model_uuid"),
        "xgb_version_logged": xgb_flavor.get("xgb_version"),
    }
    return MlflowModel(path=model_dir / str(xgb_flavor["data"]), lineage=lineage)


def fetch(uri: str, into: Path) -> MlflowModel:
    """The XGBoost model file of ``uri`` (downloaded under ``into`` unless it is a local directory)."""
    local = Path(uri)
    if "://" not in uri and ":/" not in uri:
        if not local.is_dir():
            raise RegistryError(f"{uri} is neither an MLflow URI (models:/…, runs:/…) nor a local model directory")
        return _flavor(local, uri)
    for key, value in _QUICK.items():
        os.environ.setdefault(key, value)
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise RegistryError(
            "--from-mlflow needs MLflow: install the mlflow extra (pip install 'prescore[mlflow]')"
        ) from None
    tracking = mlflow.get_tracking_uri()
    try:
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
    except MlflowException as exc:
        reason = str(exc).strip().splitlines()[0][:300]
        unreachable = any(w in reason for w in ("Max retries", "Connection refused", "Failed to establish",
                                                "API request to", "timed out"))  # fmt: skip
        if unreachable:
            raise RegistryError(
                f"the MLflow tracking server at {tracking} does not answer ({reason}); start it, or set "
                "MLFLOW_TRACKING_URI to the right one"
            ) from None
        raise RegistryError(f"MLflow cannot resolve {uri} at {tracking}: {reason}") from None
    except OSError as exc:  # requests' connection errors are OSErrors
        raise RegistryError(f"the MLflow tracking server at {tracking} does not answer ({exc}); start it, or set "
                            "MLFLOW_TRACKING_URI to the right one") from None  # fmt: skip
    result = _flavor(model_dir, uri)
    return MlflowModel(path=result.path, lineage={**result.lineage, "mlflow_tracking_uri": tracking})
