"""JUnit XML for CI systems: one testcase per artifact x budget (and one per artifact for the run itself)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from edgemed.bench.results import ArtifactResult


def to_junit(results: list[ArtifactResult], checks: list[dict[str, Any]], suite: str = "edgemed-bench") -> str:
    root = ET.Element("testsuites")
    cases: list[ET.Element] = []
    for r in results:
        case = ET.Element("testcase", classname=f"{suite}.{r.name}", name="runs", time=f"{r.wall_s or 0:.3f}")
        if not r.ok:
            f = r.failure
            fail = ET.SubElement(case, "failure", message=f.message if f else "failed", type=f.kind if f else "failed")
            fail.text = f.stderr_tail if f else ""
        cases.append(case)
        for c in checks:
            if c["artifact"] != r.name:
                continue
            case = ET.Element("testcase", classname=f"{suite}.{r.name}", name=c["key"], time="0")
            if not c["passed"]:
                ET.SubElement(case, "failure", message=c["message"], type="budget").text = (
                    f"{c['message']} (limit {c['limit']}, measured {c['measured']}, from {c['source']})")
            else:
                ET.SubElement(case, "system-out").text = c["message"]
            cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures), errors="0")
    ts.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
