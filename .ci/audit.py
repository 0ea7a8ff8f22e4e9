"""Known-vulnerability audit of the locked dependency set (`make audit`, part of `make check`).

Every package pinned in uv.lock (all extras and groups: what any image or environment of prescore can install) is
checked with pip-audit against an advisory service. The gate fails closed:

* exit 1: a known vulnerability that is not accepted in ``[tool.prescore.audit]`` of pyproject.toml, or an
  acceptance whose ``until`` date has passed;
* exit 2: the audit could not be completed — the service was unreachable or answered nothing for some package. A
  package that was not checked is never counted as clean.

Accepting a vulnerability needs an id, a reason and an expiry date::

    [tool.prescore.audit]
    ignore = [
        { id = "GHSA-xxxx-xxxx-xxxx", reason = "only reachable through X, unused here", until = 2027-01-31 },
    ]

The default service is PyPI's own advisory data (the package registry's JSON API); ``--service osv`` with
``--osv-url`` points pip-audit at an OSV-compatible endpoint instead (a mirror inside a closed network).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXIT_VULNERABLE = 1
EXIT_INCOMPLETE = 2


@dataclass(frozen=True)
class Acceptance:
    id: str
    reason: str
    until: dt.date


class AuditConfigError(ValueError):
    pass


class AuditIncomplete(RuntimeError):
    pass


def load_acceptances(pyproject: Path) -> list[Acceptance]:
    table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("prescore", {}).get("audit", {})
    accepted = []
    for i, entry in enumerate(table.get("ignore", [])):
        missing = [k for k in ("id", "reason", "until") if not str(entry.get(k, "")).strip()]
        if missing:
            raise AuditConfigError(
                f"{pyproject}: [tool.prescore.audit] ignore[{i}] lacks {', '.join(missing)}; every accepted "
                "vulnerability needs an id, a reason and an until date (YYYY-MM-DD)"
            )
        until = entry["until"]
        if not isinstance(until, dt.date):
            try:
                until = dt.date.fromisoformat(str(until))
            except ValueError:
                raise AuditConfigError(
                    f"{pyproject}: [tool.prescore.audit] ignore[{i}].until = {until!r} is not a date (YYYY-MM-DD)"
                ) from None
        accepted.append(Acceptance(str(entry["id"]), str(entry["reason"]), until))
    return accepted


def export_lock(uv: str, out: Path) -> None:
    """Every package of uv.lock as a pin (no hashes, no markers: pip-audit only needs names and versions)."""
    cmd = [uv, "export", "--locked", "--all-extras", "--all-groups", "--no-hashes", "--no-emit-project",
           "--no-header", "--format", "requirements-txt", "--output-file", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"audit: could not export uv.lock ({' '.join(cmd)}):\n{done.stderr.strip()}")
    # Drop environment markers: pip-audit skips a requirement whose marker does not match this machine (colorama on
    # win32, say), and a package locked for any platform is in scope.
    pins = [line.split(";", 1)[0].strip() for line in out.read_text().splitlines()]
    out.write_text("".join(f"{pin}\n" for pin in pins if pin and not pin.startswith("#")))


def run_pip_audit(requirements: Path, service: str, osv_url: str | None, timeout: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="prescore-audit-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip_audit", "--requirement", str(requirements), "--no-deps", "--disable-pip",
               "--vulnerability-service", service, "--format", "json", "--output", str(report),
               "--progress-spinner", "off", "--timeout", str(timeout),
               "--cache-dir", str(Path(tmp) / "cache")]  # fmt: skip
        if osv_url:
            cmd += ["--osv-url", osv_url]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode not in (0, 1) or not report.exists():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise AuditIncomplete(f"pip-audit could not query the {service} advisory service:\n{tail}")
        return json.loads(report.read_text())


def write_summary(path: Path | None, figures: dict) -> None:
    """The verdict's figures as JSON for RELIABILITY.md (``make reliability`` passes ``--summary``)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2))


def judge(report: dict, accepted: list[Acceptance], today: dt.date, service: str, summary: Path | None = None) -> int:
    deps = report.get("dependencies", [])
    by_id = {a.id: a for a in accepted}
    skipped = [d for d in deps if d.get("skip_reason")]
    found, waived, expired = [], [], []
    for dep in deps:
        for vuln in dep.get("vulns", []):
            ids = [vuln["id"], *vuln.get("aliases", [])]
            acceptance = next((by_id[i] for i in ids if i in by_id), None)
            row = (dep["name"], dep["version"], " / ".join(ids), vuln.get("fix_versions", []), acceptance)
            if acceptance is None:
                found.append(row)
            elif acceptance.until < today:
                expired.append(row)
            else:
                waived.append(row)

    checked = len(deps) - len(skipped)
    write_summary(summary, {
            "service": service, "packages": len(deps), "checked": checked, "not_checked": len(skipped),
            "first_not_checked": skipped[0]["skip_reason"] if skipped else None,
            "vulnerable": [f"{n} {v}: {i}" for n, v, i, _f, _a in found + expired],
            "accepted": [f"{n} {v}: {i} until {a.until}" for n, v, i, _f, a in waived if a is not None],
        })  # fmt: skip
    for name, version, vid, _fixes, acc in waived:
        assert acc is not None
        print(f"audit: accepted {vid} in {name} {version} until {acc.until}: {acc.reason}")
    for name, version, vid, fixes, _acc in found:
        fix = f"fixed in {', '.join(fixes)}" if fixes else "no fixed release yet"
        print(f"audit: VULNERABLE {name} {version}: {vid} ({fix})")
    for name, version, vid, _fixes, acc in expired:
        assert acc is not None
        print(f"audit: VULNERABLE {name} {version}: {vid} (accepted until {acc.until}, which has passed)")
    if found or expired:
        print(
            f"audit: FAILED — {len(found) + len(expired)} known vulnerabilities in the locked set. Upgrade the "
            "package (`uv lock --upgrade-package NAME`), or accept it with an id, reason and until date in "
            "[tool.prescore.audit] of pyproject.toml."
        )
        return EXIT_VULNERABLE
    if skipped:
        for dep in skipped[:5]:
            print(f"audit: not checked: {dep['skip_reason']}")
        print(
            f"audit: INCOMPLETE — {len(skipped)} of {len(deps)} locked packages could not be checked against the "
            f"{service} advisory service (unreachable from this host, or it has no data for them). This is not a "
            "pass: rerun where the service is reachable, or point --service osv --osv-url at a reachable mirror."
        )
        return EXIT_INCOMPLETE
    if not deps:
        print("audit: INCOMPLETE — the locked set is empty; nothing was checked")
        return EXIT_INCOMPLETE
    print(f"audit: OK — {checked} locked packages checked against {service}, no known vulnerabilities")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--service", default=os.environ.get("PRESCORE_AUDIT_SERVICE", "pypi"), choices=("pypi", "osv"))
    p.add_argument("--osv-url", default=os.environ.get("PRESCORE_AUDIT_OSV_URL"))
    p.add_argument("--requirements", type=Path, help="audit this pinned requirements file instead of uv.lock")
    p.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml", help="where the acceptances are")
    p.add_argument("--uv", default=os.environ.get("UV", "uv"))
    p.add_argument("--timeout", type=int, default=30)
    p.add_argument("--summary", type=Path, help="also write the verdict's figures to this JSON file")
    p.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today(), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        accepted = load_acceptances(args.pyproject)
    except AuditConfigError as exc:
        print(f"audit: {exc}")
        return EXIT_VULNERABLE
    with tempfile.TemporaryDirectory(prefix="prescore-audit-req-") as tmp:
        requirements = args.requirements
        if requirements is None:
            requirements = Path(tmp) / "requirements.txt"
            export_lock(args.uv, requirements)
        try:
            report = run_pip_audit(requirements, args.service, args.osv_url, args.timeout)
        except AuditIncomplete as exc:
            print(f"audit: INCOMPLETE — {exc}")
            write_summary(args.summary, {"service": args.service, "error": str(exc)})
            return EXIT_INCOMPLETE
    return judge(report, accepted, args.today, args.service, args.summary)


if __name__ == "__main__":
    sys.exit(main())
