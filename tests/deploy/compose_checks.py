"""Checks of ``docker/compose.yaml`` (and the Prometheus configuration it mounts), over the parsed YAML.

Each ``check_*`` function returns a list of problems (empty: nothing wrong) naming the service and what is
wrong. ``schema_errors`` validates against ``compose-schema.json``, a minimal vendored subset of the Compose
specification's schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.commands import EntryPoints, as_argv, command_problems, is_server
from tests.deploy.dockerfiles import image_pin_problem, split_image

COMPOSE_SCHEMA: dict[str, Any] = json.loads((Path(__file__).parent / "compose-schema.json").read_text())
OUR_IMAGE_PREFIX = "prescore/"  # images built from docker/*.Dockerfile
SHARED_PRESCORE_ENV = ("PRESCORE_HOME", "PRESCORE_REDIS_URL", "PRESCORE_CATALOG_URL", "PRESCORE_DASK_ADDRESS")


def check_compose_images(compose: Mapping[str, Any]) -> list[str]:
    """Every service image is pinned; the images built here carry an explicit version tag too."""
    problems = []
    for name, service in compose.get("services", {}).items():
        ref = service.get("image")
        if ref is None:
            if "build" in service:
                problems.append(f"service {name}: builds an image without naming it (`image: prescore/...:X.Y.Z`)")
            continue
        if problem := image_pin_problem(ref):
            problems.append(f"service {name}: {problem}")
    return problems


# Upstream images run their own programs: the first word must be that program, or only flags for its entry point.
UPSTREAM_PROGRAMS = {
    "redis": {"redis-server"},
    "postgres": {"postgres"},
    "prom/prometheus": set(),
    "grafana/grafana": set(),
}


def check_service_commands(compose: Mapping[str, Any], entry: EntryPoints) -> list[str]:
    """The command of every service is a real entry point of its image (see ``command_problems``)."""
    problems = []
    for name, service in compose.get("services", {}).items():
        argv = as_argv(service.get("entrypoint")) + as_argv(service.get("command"))
        if not argv:
            continue  # the image's own CMD: checked with its Dockerfile
        repo = split_image(str(service.get("image", "")))[0]
        if repo in UPSTREAM_PROGRAMS:
            allowed = UPSTREAM_PROGRAMS[repo]
            if argv[0] not in allowed and not all(a.startswith("--") for a in argv):
                problems.append(f"service {name}: {argv[0]!r} is not a program of {repo} ({sorted(allowed)})")
            continue
        problems += [f"service {name}: {p}" for p in command_problems(argv, entry)]
    return problems


def _replicas(service: Mapping[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def _host_port_count(published: str) -> int:
    low, _, high = published.partition("-")
    return int(high) - int(low) + 1 if high else 1


def check_published_ports(compose: Mapping[str, Any]) -> list[str]:
    """Every published port binds 127.0.0.1 on the host, and a replicated service has one host port per replica."""
    problems = []
    for name, service in compose.get("services", {}).items():
        if service.get("network_mode") == "host":
            problems.append(f"service {name}: network_mode host bypasses port publishing (and binds all interfaces)")
        for port in service.get("ports") or []:
            if isinstance(port, Mapping):
                host_ip, published = str(port.get("host_ip", "")), str(port.get("published", ""))
            else:
                spec = str(port).split("/")[0]
                parts = spec.split(":")
                host_ip = parts[0] if len(parts) == 3 else ""
                published = parts[-2] if len(parts) >= 2 else ""
            if host_ip != "127.0.0.1":
                problems.append(f"service {name}: port {port!r} is not bound to 127.0.0.1 on the host")
                continue
            if not published:
                problems.append(f"service {name}: port {port!r} has no fixed host port")
                continue
            if _host_port_count(published) < _replicas(service):
                problems.append(
                    f"service {name}: {_replicas(service)} replicas cannot share {published} (give a range, e.g. "
                    "8000-8001)"
                )
    return problems


def _dependencies(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {d: (spec or {}).get("condition", "service_started") for d, spec in deps.items()}


def check_health(compose: Mapping[str, Any], image_health: Mapping[str, bool]) -> list[str]:
    """Every server has a healthcheck (in compose or its image's HEALTHCHECK); ``depends_on`` names services
    that exist, in no profile the dependent lacks, and waits for health only on services that report it.

    ``image_health`` maps the image names built here to whether their Dockerfile has a HEALTHCHECK.
    """
    services = compose.get("services", {})
    problems = []

    def healthy(service: Mapping[str, Any]) -> bool:
        check = service.get("healthcheck")
        if check is not None:
            return not check.get("disable", False) and check.get("test") not in (["NONE"], "NONE")
        return image_health.get(str(service.get("image")), False)

    for name, service in services.items():
        argv = as_argv(service.get("entrypoint")) + as_argv(service.get("command"))
        repo = split_image(str(service.get("image", "")))[0]
        if (is_server(argv) or repo in UPSTREAM_PROGRAMS) and not healthy(service):
            problems.append(f"service {name}: runs a server without a healthcheck")
        for dep, condition in _dependencies(service).items():
            if dep not in services:
                problems.append(f"service {name}: depends on {dep!r}, which is not a service")
                continue
            missing = set(services[dep].get("profiles") or []) - set(service.get("profiles") or [])
            if missing:
                problems.append(f"service {name}: depends on {dep!r}, which only runs under profile {sorted(missing)}")
            if condition == "service_healthy" and not healthy(services[dep]):
                problems.append(f"service {name}: waits for {dep!r} to be healthy, but it has no healthcheck")
    return problems


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _mount_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path → named volume (or host path) of each mount."""
    targets = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, Mapping):
            targets[str(volume.get("target"))] = str(volume.get("source", ""))
        else:
            parts = str(volume).split(":")
            if len(parts) >= 2:
                targets[parts[1]] = parts[0]
    return targets


def check_shared_prescore_env(compose: Mapping[str, Any]) -> list[str]:
    """Every service that runs prescore code gets the same PRESCORE_HOME, Redis, catalog and Dask settings;
    PRESCORE_HOME is one named volume mounted there in each; the hosts those URLs name are services."""
    services = compose.get("services", {})
    ours = {n: s for n, s in services.items() if str(s.get("image", "")).startswith(OUR_IMAGE_PREFIX)}
    problems = []
    reference: dict[str, str] | None = None
    home_volumes: set[str] = set()
    for name, service in ours.items():
        env = environment_of(service)
        shared = {key: env.get(key) for key in SHARED_PRESCORE_ENV}
        missing = [key for key, value in shared.items() if not value]
        if missing:
            problems.append(f"service {name}: missing {', '.join(missing)}")
            continue
        values = {key: str(value) for key, value in shared.items()}
        if reference is None:
            reference = values
        elif values != reference:
            diff = [k for k in SHARED_PRESCORE_ENV if values[k] != reference[k]]
            problems.append(f"service {name}: {', '.join(diff)} differ from the other services")
        volume = _mount_targets(service).get(str(shared["PRESCORE_HOME"]))
        if volume is None:
            problems.append(f"service {name}: nothing is mounted at PRESCORE_HOME {shared['PRESCORE_HOME']}")
        elif volume.startswith((".", "/")) or volume not in (compose.get("volumes") or {}):
            problems.append(f"service {name}: PRESCORE_HOME is on {volume!r}, not a named volume of this file")
        else:
            home_volumes.add(volume)
    if len(home_volumes) > 1:
        problems.append(f"PRESCORE_HOME is on different volumes: {sorted(home_volumes)}")
    for key in ("PRESCORE_REDIS_URL", "PRESCORE_CATALOG_URL", "PRESCORE_DASK_ADDRESS"):
        url = (reference or {}).get(key) or ""
        host = re.sub(r"^[a-z+]+://([^@/]*@)?", "", url).split("/")[0].split(":")[0]
        if url and host not in services:
            problems.append(f"{key}={url}: host {host!r} is not a service of this file")
    return problems


def settings_env_names(settings_cls: Any) -> set[str]:
    """The environment variables a pydantic-settings class reads (its prefix + field name, or its aliases)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names = set()
    for field_name, info in settings_cls.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.update(str(choice).upper() for choice in getattr(alias, "choices", []))
    return names


def check_prescore_env_names(texts: Mapping[str, str], allowed: set[str]) -> list[str]:
    """Every ``PRESCORE_*`` name in the files (keys, interpolations, comments) is a settings variable."""
    problems = []
    for source, text in texts.items():
        for name in sorted(set(re.findall(r"\bPRESCORE_[A-Z0-9_]+", text)) - allowed):
            problems.append(f"{source}: {name} is not a setting of OnlineSettings/Settings")
    return problems


_INTERPOLATION = re.compile(r"\$(?:\$|\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}|[A-Za-z_][A-Za-z0-9_]*)")


def check_interpolation(text: str) -> list[str]:
    """Every ``$`` outside comments starts a valid compose interpolation (``${VAR}``, ``${VAR:-x}``, ``$$``)."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        rest = _INTERPOLATION.sub("", line)
        if "$" in rest:
            problems.append(f"compose.yaml:{number}: invalid interpolation (write $$ for a literal $): {line.strip()}")
    return problems


def check_prometheus_targets(prometheus: Mapping[str, Any], compose: Mapping[str, Any], api_service: str) -> list[str]:
    """Every scrape target is a compose service on a port its command listens on; the API's /metrics is scraped."""
    services = compose.get("services", {})
    problems = []
    scraped_api = False
    for job in prometheus.get("scrape_configs") or []:
        targets: list[tuple[str, str]] = []
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                targets.append((host, port))
        for dns in job.get("dns_sd_configs") or []:
            targets += [(str(n), str(dns.get("port", ""))) for n in dns.get("names") or []]
        for host, port in targets:
            service = services.get(host)
            if service is None:
                problems.append(f"prometheus job {job.get('job_name')}: {host} is not a compose service")
                continue
            argv = " ".join(as_argv(service.get("entrypoint")) + as_argv(service.get("command")))
            if not re.search(rf"(^|[\s:=]){re.escape(port)}(\s|$)", argv):
                problems.append(f"prometheus job {job.get('job_name')}: service {host} does not listen on {port}")
            elif host == api_service and job.get("metrics_path", "/metrics") == "/metrics":
                scraped_api = True
    if not scraped_api:
        problems.append(f"prometheus: no job scrapes {api_service}'s /metrics")
    return problems


def schema_errors(instance: Any, schema: Mapping[str, Any]) -> list[str]:
    """Validation errors of ``instance`` (path: message) with ``jsonschema``, else ``jsonschema_rs``."""
    try:
        import jsonschema
    except ImportError:
        import jsonschema_rs  # the dev group's schemathesis depends on it

        validator = jsonschema_rs.validator_for(dict(schema))
        return sorted(f"{'/'.join(map(str, e.instance_path)) or '<root>'}: {e.message}"
                      for e in validator.iter_errors(instance))  # fmt: skip
    checker = jsonschema.Draft202012Validator(dict(schema))
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in checker.iter_errors(instance))  # fmt: skip


def check_build_paths(compose: Mapping[str, Any], compose_dir: Path) -> list[str]:
    """Every build context and Dockerfile exists, and every file or directory bind-mounted from the host."""
    problems = []
    for name, service in compose.get("services", {}).items():
        build = service.get("build")
        if build is not None:
            spec = {"context": build} if isinstance(build, str) else build
            context = (compose_dir / spec.get("context", ".")).resolve()
            dockerfile = context / spec.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"service {name}: build context {spec.get('context')} does not exist")
            elif not dockerfile.is_file():
                problems.append(f"service {name}: Dockerfile {spec.get('dockerfile')} does not exist in {context}")
        for source, target in ((src, dst) for dst, src in _mount_targets(service).items()):
            if source.startswith("/"):
                problems.append(f"service {name}: mounts the absolute host path {source} (keep mounts in docker/)")
            elif source.startswith("."):
                if not (compose_dir / source).exists():
                    problems.append(f"service {name}: mounts {source} at {target}, which does not exist")
            elif source not in (compose.get("volumes") or {}):
                problems.append(f"service {name}: volume {source!r} is not declared under top-level volumes")
    return problems


def check_grafana_provisioning(compose: Mapping[str, Any], compose_dir: Path, service: str = "grafana") -> list[str]:
    """``service`` mounts a provisioning directory at /etc/grafana/provisioning whose datasource is a Prometheus
    compose service (on the port it listens on) and whose dashboard provider's path is where dashboards are mounted,
    each of its dashboard files valid JSON with a ``uid``."""
    services = compose.get("services", {})
    if service not in services:
        return [f"no {service} service"]
    mounts = _mount_targets(services[service])
    problems = []
    provisioning = mounts.get("/etc/grafana/provisioning")
    if provisioning is None or not (compose_dir / provisioning).is_dir():
        return [f"service {service}: no provisioning directory mounted at /etc/grafana/provisioning"]
    root = compose_dir / provisioning
    sources = [d for f in sorted((root / "datasources").glob("*.yml"))
               for d in (yaml.safe_load(f.read_text()) or {}).get("datasources") or []]  # fmt: skip
    prometheus = [d for d in sources if d.get("type") == "prometheus"]
    if not prometheus:
        problems.append(f"service {service}: no Prometheus datasource provisioned")
    for d in prometheus:
        host, _, port = str(d.get("url", "")).removeprefix("http://").partition(":")
        if host not in services or port.rstrip("/") != "9090":
            problems.append(f"service {service}: datasource {d.get('name')} url {d.get('url')} is not a Prometheus "
                            "service of the stack on 9090")  # fmt: skip
    providers = [p for f in sorted((root / "dashboards").glob("*.yml"))
                 for p in (yaml.safe_load(f.read_text()) or {}).get("providers") or []]  # fmt: skip
    if not providers:
        problems.append(f"service {service}: no dashboard provider provisioned")
    for provider in providers:
        path = str((provider.get("options") or {}).get("path", ""))
        source = mounts.get(path)
        if source is None or not (compose_dir / source).is_dir():
            problems.append(f"service {service}: provider {provider.get('name')} reads {path}, where no dashboards "
                            "directory is mounted")  # fmt: skip
            continue
        files = sorted((compose_dir / source).glob("*.json"))
        if not files:
            problems.append(f"service {service}: no dashboard in {source}")
        for file in files:
            try:
                if not json.loads(file.read_text()).get("uid"):
                    problems.append(f"service {service}: dashboard {file.name} has no uid")
            except ValueError as exc:
                problems.append(f"service {service}: dashboard {file.name} is not JSON: {exc}")
    return problems
