"""The online image, built and run for real (opt-in: ``PRESCORE_TEST_DOCKER=1``; ``PRESCORE_DOCKER`` names the
docker client, which must build with BuildKit). Base images missing locally are built as stand-ins first
(``docker/local-base-images.sh``: a debootstrap of Debian and uv's PyPI wheel). The container runs as its own uid
(10001) on a home written here by another uid (root, umask 022) and mounted read-only, against the test Redis on
127.0.0.1 (host network: the server binds 127.0.0.1 too); it serves a precomputed score and a fallback score equal
to the compiled fallback's, and it has no xgboost, SciPy or scikit-learn."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.deploy.conftest import REPO
from tests.online.conftest import FEATURES, MODEL, train_fallback
from tests.support.other_user import shared_dir
from warehouse.registry import Registry
from warehouse.store import ScoreStore
from warehouse.store.local_server import free_port

DOCKER = os.environ.get("PRESCORE_DOCKER", "docker")
IMAGE = "prescore/online:test"
pytestmark = pytest.mark.skipif(os.environ.get("PRESCORE_TEST_DOCKER") != "1", reason="set PRESCORE_TEST_DOCKER=1")


def _docker(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which(DOCKER) is None or _docker("info").returncode != 0:
        pytest.skip(f"no Docker engine answers {DOCKER} info")
    bases = subprocess.run(["bash", "docker/local-base-images.sh"], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "DOCKER": DOCKER}, timeout=1200)  # fmt: skip
    assert bases.returncode == 0, bases.stdout[-2000:] + bases.stderr[-2000:]
    built = _docker("build", "-f", "docker/online.Dockerfile", "-t", IMAGE, ".", cwd=REPO, timeout=1500,
                    env={**os.environ, "DOCKER_BUILDKIT": "1"})  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


@pytest.fixture
def served(image: str, redis_url: str) -> Iterator[tuple[str, Path]]:
    with shared_dir() as base:
        home = base / "home"
        old = os.umask(0o022)
        try:
            registry = Registry(home / "models")
            manifest = registry.register(MODEL, "fallback", train_fallback(), FEATURES, {}, {})
            registry.promote(MODEL, "fallback", manifest.version)
        finally:
            os.umask(old)
        with ScoreStore.from_url(redis_url) as store:
            store.create_run(MODEL, "image-run", "primary-v1", dt.datetime.now(dt.UTC), 1)
            store.writer(MODEL, "image-run").write_batch(["known-1"], np.array([0.25], dtype=np.float32))
            store.finalize_run(MODEL, "image-run")
            store.publish(MODEL, "image-run", force=True)
        port = free_port()
        STARTED["at"] = time.monotonic()
        started = _docker("run", "-d", "--network", "host", "-v", f"{home}:/data/prescore:ro",
                          "-e", f"PRESCORE_REDIS_URL={redis_url}", image,
                          "prescore", "serve", "--host", "127.0.0.1", "--port", str(port))  # fmt: skip
        assert started.returncode == 0, started.stderr
        container = started.stdout.strip()
        try:
            yield f"http://127.0.0.1:{port}", home
        finally:
            logs = _docker("logs", container).stderr[-2000:]
            _docker("rm", "-f", container)
            print(logs)


STARTED: dict[str, float] = {}  # when the fixture's docker run began (the start-up time printed)


def _get(url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_online_image_serves_a_home_written_by_another_uid(served: tuple[str, Path]) -> None:
    base, _ = served
    deadline = time.monotonic() + 60
    status = 0
    while time.monotonic() < deadline:
        try:
            status, ready = _get(f"{base}/readyz")
        except (urllib.error.URLError, ConnectionError):
            status = 0
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200, ready if status else "the container never answered /readyz"
    print(f"the online container answered /readyz {time.monotonic() - STARTED['at']:.2f} s after docker run")
    status, hit = _get(f"{base}/v1/scores/{MODEL}/known-1")
    assert (status, hit["source"], hit["score"]) == (200, "precomputed", 0.25)
    row = {name: float(i * 10 - 35) for i, name in enumerate(FEATURES)}
    status, fallback = _get(f"{base}/v1/scores/{MODEL}", {"entity_id": "new-1", "features": row})
    from online.fallback import FallbackModel

    expected = FallbackModel.from_booster(train_fallback(), FEATURES, "v").predict_dict(row)
    assert status == 200 and fallback["source"] == "fallback"
    assert fallback["score"] == pytest.approx(expected, rel=1e-9)


def test_the_online_image_has_no_xgboost_scipy_sklearn_or_pyarrow(image: str) -> None:
    heavy = "('xgboost', 'scipy', 'sklearn', 'pyarrow')"
    probe = f"import importlib.util as u; print([m for m in {heavy} if u.find_spec(m)])"
    done = _docker("run", "--rm", "--network", "none", image, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
