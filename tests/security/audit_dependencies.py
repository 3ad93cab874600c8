"""``python -m tests.security.audit_dependencies``: pip-audit of the virtualenv.

Fails (exit 1) on any known vulnerability.  Skips, with the reason printed, only
when the advisory database cannot be reached: pip-audit then either errors out
on the connection or reports every dependency as "not found on PyPI", and an
audit of nothing must not read as "no known vulnerabilities".
"""

from __future__ import annotations

import json
import subprocess
import sys

UNREACHABLE = ("ConnectionError", "Max retries exceeded", "Name or service not known")


def main() -> int:
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--skip-editable",  # chatauth itself is not on PyPI
                "--progress-spinner",
                "off",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        print("pip-audit SKIPPED: the advisory database did not answer in 300 s")
        return 0
    try:
        report = json.loads(result.stdout)
    except ValueError:
        if any(marker in result.stderr for marker in UNREACHABLE):
            print("pip-audit SKIPPED: the advisory database could not be reached:")
            print(result.stderr.strip().splitlines()[-1])
            return 0
        print(result.stdout + result.stderr)
        return 1
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    if dependencies and not audited:
        print(
            "pip-audit SKIPPED: the advisory database could not be reached "
            f"(none of the {len(dependencies)} dependencies could be looked up: "
            f"{dependencies[0]['skip_reason']})"
        )
        return 0
    vulnerable = [d for d in audited if d.get("vulns")]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            print(
                f"{dependency['name']} {dependency['version']}: {vuln['id']} "
                f"(fixed in {fixes})"
            )
    skipped = len(dependencies) - len(audited)
    print(
        f"pip-audit: {len(audited)} dependencies audited, {skipped} not found, "
        f"{len(vulnerable)} with known vulnerabilities"
    )
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
