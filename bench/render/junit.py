"""JUnit XML for CI systems: one testcase per artifact x budget (and one per artifact for the run itself)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from edgemed.bench.render.tables import check_interval, check_outcome
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
            cases.append(_check_case(suite, r.name, c))
    failures = sum(1 for c in cases if c.find("failure") is not None)
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures), errors="0")
    ts.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _check_case(suite: str, artifact: str, c: dict[str, Any]) -> ET.Element:
    """One check: a failure when it did not pass (an inconclusive one under --inconclusive fail too), with the
    limit, the measured value, its interval, the verdict and the reruns as properties and in the text."""
    case = ET.Element("testcase", classname=f"{suite}.{artifact}", name=c["key"], time="0")
    props = ET.SubElement(case, "properties")
    for name, value in (("limit", c["limit"]), ("measured", c["measured"]), ("interval_low", c.get("low")),
                        ("interval_high", c.get("high")), ("interval_rule", c.get("interval_rule")),
                        ("verdict", c.get("verdict")), ("reruns", c.get("reruns", 0)),
                        ("inconclusive_policy", c.get("policy")), ("source", c["source"])):
        if value is not None and value != "":
            ET.SubElement(props, "property", name=name, value=str(value))
    detail = (f"{c['message']} (limit {c['limit']}, measured {c['measured']}, 95% interval {check_interval(c)}, "
              f"verdict {check_outcome(c)}, from {c['source']})")
    if not c["passed"]:
        kind = "inconclusive" if c.get("verdict") == "inconclusive" else "budget"
        ET.SubElement(case, "failure", message=c["message"], type=kind).text = detail
    else:
        ET.SubElement(case, "system-out").text = detail
    return case
