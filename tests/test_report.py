"""`edgemed report RUN...` across machines and commits, and bench.html / report.html in a real browser.

One real bench run of the tiny model (hf + gguf-q8_0, --profile rpi5) is the base. The other runs are that
bench.json as another machine would have written it: a Raspberry Pi 5 (other names and paths for the same weights,
its own tokens/s), a rerun of the same commit (timings a little off), a regression, a busy rerun. The browser tests
use Debian's `chromium` (skipped, with the reason, where it is not installed; .ci/run installs it).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgemed.errors import EdgemedError

FAST = ["--limit", "6", "-r", "5", "--warmup", "1", "--latency-prompts", "4", "--gen-tokens", "8",
        "-p", "16", "-n", "8", "--threads", "1"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); "
                                                              ".ci/run installs it")
PI5 = {"cpu": "Raspberry Pi 5 Model B Rev 1.0 (4x Cortex-A76)", "board": "Raspberry Pi 5 Model B Rev 1.0",
       "machine": "aarch64", "cpu_features": ["asimd", "asimddp", "asimdhp", "fphp"], "cores_physical": 4,
       "cores_logical": 4, "ram_gb": 7.9, "os": "Linux 6.6.51+rpt-rpi-2712"}


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, tiny_hf_gguf) -> Path:
    """A real bench run (folder) of hf + gguf-q8_0 of the tiny model (the session's shared export), with the rpi5
    profile's estimates."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("report")
    proc = run_cli("bench", tiny_hf_gguf, *FAST, "--profile", "rpi5", "--out", root / "a", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "a"


def _doc(run: Path) -> dict:
    return json.loads((run / "bench.json").read_text())


def _write(doc: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(doc))
    return folder / "bench.json"


def _quiet(doc: dict) -> dict:
    """The run as a quiet machine measures it: not busy, timings spread 2-5% (the test machine is shared: its own
    flag and spread are not what these tests are about)."""
    doc = copy.deepcopy(doc)
    for a in doc["artifacts"]:
        a["machine_load"]["busy"] = False
        for t in ("pp", "tg"):
            a["throughput"][t]["stddev_ts"] = 0.02 * a["throughput"][t]["avg_ts"]
        for t in ("answer_ms", "ttft_ms"):
            a["latency"][t]["stdev"] = 0.05 * a["latency"][t]["mean"]
    return doc


def _scale_timing(a: dict, factor: float, what: tuple[str, ...] = ("answer_ms", "ttft_ms", "pp", "tg")) -> None:
    """Every figure of these timings multiplied by `factor` (tokens/s divided): as if measured that much slower."""
    for key in what:
        block = a["latency"][key] if key in ("answer_ms", "ttft_ms") else a["throughput"][key]
        f = factor if key in ("answer_ms", "ttft_ms") else 1 / factor
        for k, v in list(block.items()):
            if k in ("count", "n_prompt", "n_gen", "n_threads", "samples_ns") or isinstance(v, bool):
                continue
            if isinstance(v, float | int):
                block[k] = v * f
            elif isinstance(v, list) and k == "samples_ts":
                block[k] = [x * f for x in v]


def _board_run(doc: dict, tg: dict[str, float], bandwidth: float = 6.0) -> dict:
    """The same weights benched on a Raspberry Pi 5: other names, other (absolute) paths, its own figures."""
    board = _quiet(doc)
    board["environment"].update(PI5)
    board["machine"]["copy_bandwidth"]["gbps"] = bandwidth
    board["created"] = "2031-01-01T00:00:00+0000"
    board.pop("profiles", None)
    for a in board["artifacts"]:
        a["tg_original"] = a["throughput"]["tg"]["avg_ts"]
        a["throughput"]["tg"]["avg_ts"] = tg[a["format"]]
        a["name"] = f"pi-{a['name']}"
        a["path"] = f"/home/pi/models/{a['name']}"
    return board


def test_bench_json_is_portable(run_a, tmp_path, cli):
    doc = _doc(run_a)
    for a in doc["artifacts"]:
        assert not Path(a["path"]).is_absolute() and len(a["weights"]["sha256"]) == 64
        assert all(not Path(f["path"]).is_absolute() for f in a["weights"]["files"])
    assert doc["questions"] and doc["questions"][0]["question"]
    assert doc["environment"]["commit"] and "commit_dirty" in doc["environment"]
    elsewhere = tmp_path / "laptop" / "copied"
    _write(doc, elsewhere)  # bench.json alone: no artifact, no log, no work folder
    proc = cli("report", elsewhere, "--out", tmp_path / "rep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {a["name"] for a in rep["artifacts"]} == {"hf", "gguf-q8_0"}
    assert all(a["matched_by"] == "sha256" for a in rep["artifacts"])
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.json", "report.md", "report.html"}


def test_two_machines_one_table_by_sha256(run_a, tmp_path, cli):
    laptop = _write(_quiet(_doc(run_a)), tmp_path / "laptop")
    pi = _write(_board_run(_doc(run_a), {"hf": 10.0, "gguf-q8_0": 40.0}), tmp_path / "pi")
    proc = cli("report", laptop, pi, "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(rep["machines"]) == 2 and len(rep["runs"]) == 2
    assert len(rep["artifacts"]) == 2  # the same weights under other names and paths: one row each
    for a in rep["artifacts"]:
        assert set(a["names"]) == {"A", "B"} and a["names"]["B"] == f"pi-{a['names']['A']}"
        assert set(a["cells"]) == {"A", "B"}
        assert a["cells"]["B"]["decode_tps"]["value"] == {"hf": 10.0, "gguf-q8_0": 40.0}[a["format"]]
        assert a["cells"]["A"]["accuracy"]["interval"][0] <= a["cells"]["A"]["accuracy"]["value"]
    pi_machine = next(m for m in rep["machines"] if m["runs"] == ["B"])
    fp = pi_machine["fingerprint"]
    assert fp["board"] == PI5["board"] and fp["copy_bandwidth_gbps"] == 6.0 and fp["cores_physical"] == 4
    assert fp["commit"] and fp["isa"] == sorted(PI5["cpu_features"])
    assert rep["changes"] == []  # two machines: nothing to compare over time
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| A: accuracy |" in md and "| B: tg t/s |" in md
    assert md.count("\n| hf | hf |") == 1 and md.count("\n| gguf-q8_0 | gguf-q8_0 |") == 1


def test_profile_estimate_beside_the_board_with_ratio(run_a, tmp_path, cli):
    a_doc = _quiet(_doc(run_a))
    est = {row["format"]: row for row in a_doc["profiles"][0]["artifacts"]}
    expected = est["gguf-q8_0"]["est_decode_tokens_per_s"]
    # the board: hf decodes as estimated (ratio ~1), gguf-q8_0 at a quarter of the estimate (ratio 4: off > 2x)
    tg = {"hf": est["hf"]["est_decode_tokens_per_s"], "gguf-q8_0": expected / 4}
    laptop, pi = _write(a_doc, tmp_path / "laptop"), _write(_board_run(_doc(run_a), tg), tmp_path / "pi")
    proc = cli("report", laptop, pi, "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    (check,) = rep["profile_checks"]
    assert (check["profile"], check["estimated_in"], check["board_run"]) == ("rpi5-8gb", "A", "B")
    assert check["bandwidth"]["ratio"] == pytest.approx(9.0 / 6.0)
    ratios = {a["format"]: {e["what"]: e for e in a["ratios"]} for a in check["artifacts"]}
    q8 = ratios["gguf-q8_0"]["decode tokens/s (expected)"]
    assert q8["ratio"] == pytest.approx(4.0) and q8["off"] and q8["measured"] == pytest.approx(expected / 4)
    assert ratios["hf"]["decode tokens/s (expected)"]["ratio"] == pytest.approx(1.0)
    assert not ratios["hf"]["decode tokens/s (expected)"]["off"]
    assert check["off_by_more_than_2x"] == ["gguf-q8_0: decode tokens/s (expected)"]
    assert "off by more than 2x" in proc.stdout
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**Profile rpi5-8gb**" in md and "4.00 **OFF >2x**" in md


def _rerun(doc: dict, factor: float, created: str = "2031-02-01T00:00:00+0000") -> dict:
    later = copy.deepcopy(doc)
    later["created"] = created
    for a in later["artifacts"]:
        _scale_timing(a, factor)
    return later


def test_quiet_rerun_of_the_same_commit_marks_no_change(run_a, tmp_path, cli):
    base = _quiet(_doc(run_a))
    first, again = _write(base, tmp_path / "one"), _write(_rerun(base, 1.04), tmp_path / "two")
    proc = cli("report", first, again, "--tolerance", "10%", "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    (c,) = rep["changes"]
    assert (c["run"], c["against"], c["same_commit"]) == ("B", "A", True)
    assert c["summary"]["worse"] == c["summary"]["better"] == c["summary"]["busy"] == 0
    assert c["summary"]["same"] == 2 * 7
    assert rep["regressions"] == [] and "no change" in proc.stdout
    assert "B vs A (same commit): no change" in (tmp_path / "rep" / "report.md").read_text()


def test_regression_on_the_same_machine_is_marked_and_exits_1_with_tolerance(run_a, tmp_path, cli):
    base = _quiet(_doc(run_a))
    slower = _rerun(base, 1.6)
    slower["environment"]["commit"] = "c0ffee1"
    first, later = _write(base, tmp_path / "one"), _write(slower, tmp_path / "two")
    shown = cli("report", first, later, "--out", tmp_path / "rep")
    assert shown.returncode == 0  # without --tolerance the change is shown, not a failure
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    (c,) = rep["changes"]
    assert not c["same_commit"] and c["summary"]["worse"] == 2 * 4  # p95, TTFT, pp, tg of both artifacts
    hf = next(it for it in c["artifacts"] if it["format"] == "hf")
    assert hf["metrics"]["answer_p95_ms"]["verdict"] == "worse"
    assert hf["metrics"]["accuracy"]["verdict"] == "same" and hf["metrics"]["peak_rss_mb"]["verdict"] == "same"
    failed = cli("report", first, later, "--tolerance", "10%")
    assert failed.returncode == 1 and "REGRESSED hf" in failed.stdout


def test_busy_rerun_keeps_the_flag_on_every_change(run_a, tmp_path, cli):
    base = _quiet(_doc(run_a))
    busy = _rerun(base, 3.0)
    for a in busy["artifacts"]:
        a["machine_load"].update(busy=True, reason="other processes used 1.40 cores on average")
    first, later = _write(base, tmp_path / "one"), _write(busy, tmp_path / "two")
    proc = cli("report", first, later, "--tolerance", "10%", "--out", tmp_path / "rep")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # flagged, not hidden (as budgets and --baseline)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    (c,) = rep["changes"]
    assert c["summary"]["busy"] == c["summary"]["worse"] == 2 * 4
    assert all("busy machine" in r["message"] for r in rep["regressions"]) and len(rep["regressions"]) == 8
    hf = next(it for it in c["artifacts"] if it["format"] == "hf")
    assert hf["metrics"]["accuracy"]["busy"] is False and hf["metrics"]["decode_tps"]["busy"] is True
    for a in rep["artifacts"]:
        assert a["cells"]["B"]["decode_tps"]["busy"] and a["cells"]["B"]["decode_tps"]["text"].endswith("BUSY")
        assert not a["cells"]["B"]["accuracy"]["busy"]


def test_report_bad_input_exits_2(tmp_path, cli):
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    proc = cli("report", bad)
    assert proc.returncode == 2 and "is not JSON" in proc.stderr and "Traceback" not in proc.stderr


BAD_VALUES = (float("nan"), float("inf"), "fast", None, [1.0], {"x": 1}, float("-inf"), True)
RECORDS = ("size_bytes", "load_s", "accuracy", "latency", "throughput", "memory", "bandwidth", "fidelity",
           "machine_load")


def _leaves(node, path=()):
    """Paths of every number (and list of numbers) under a bench.json artifact's measured records."""
    if isinstance(node, dict):
        for k, v in node.items():
            if path or k in RECORDS:
                yield from _leaves(v, (*path, k))
    elif (isinstance(node, list) and node and all(isinstance(v, int | float) for v in node)) or (
            isinstance(node, int | float) and not isinstance(node, bool) and path):
        yield path


def _render(paths: list[Path]) -> dict:
    """What `edgemed report --out` does with the runs, in this process: the document, markdown, page, console."""
    import io

    from rich.console import Console

    from edgemed.bench.report.document import build_report, rich_report, to_markdown
    from edgemed.bench.report.html import report_html

    doc = build_report(paths, 0.1)
    to_markdown(doc)
    report_html(doc)
    Console(file=io.StringIO(), width=250).print(rich_report(doc))
    json.dumps(doc, allow_nan=False)  # report.json holds no NaN either
    return doc


def test_report_shows_bad_values_as_not_measured_and_never_crashes(run_a, tmp_path):
    """Every number of a measured record replaced in turn by NaN, infinity, text, null, a list, an object or a
    boolean: the report reads and renders (no NaN in report.json); an entry it cannot place is exit 2 naming it."""
    good = _write(_quiet(_doc(run_a)), tmp_path / "good")
    base = _quiet(_doc(run_a))
    leaves = [(0, path) for path in _leaves(base["artifacts"][0])]  # the others have the same records
    assert len(leaves) > 40
    cases = [(n, path, BAD_VALUES[i % len(BAD_VALUES)]) for i, (n, path) in enumerate(leaves)]
    cases += [(1, (rec,), bad) for rec in RECORDS for bad in ("x", [1], 3.5, None)]
    for i, (n, path, bad) in enumerate(cases):
        doc = copy.deepcopy(base)
        node = doc["artifacts"][n]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bad
        broken = _write(doc, tmp_path / f"bad{i}")
        try:
            _render([good, broken])
        except EdgemedError as exc:  # refused naming the entry: exit 2, never 3
            assert "artifacts[" in str(exc), (path, bad, exc)
        except Exception as exc:  # noqa: BLE001 - name the value that broke it
            pytest.fail(f"{'.'.join(path)} = {bad!r}: {type(exc).__name__}: {exc}")


def test_report_names_what_was_not_measured(run_a, tmp_path):
    doc = _quiet(_doc(run_a))
    q8 = next(a for a in doc["artifacts"] if a["format"] == "gguf-q8_0")
    q8["accuracy"]["accuracy"] = float("nan")
    q8["fidelity"]["kld_mean"] = "low"
    q8["throughput"]["tg"]["avg_ts"] = float("inf")
    rep = _render([_write(_quiet(_doc(run_a)), tmp_path / "good"), _write(doc, tmp_path / "bad")])
    said = " ".join(rep["runs"][1]["not_measured"])
    for key in ("accuracy.accuracy", "fidelity.kld_mean", "throughput.tg.avg_ts"):
        assert f"gguf-q8_0: {key}" in said, said
    row = next(a for a in rep["artifacts"] if a["format"] == "gguf-q8_0")
    assert all(row["cells"]["B"][k]["value"] is None for k in ("accuracy", "kld", "decode_tps"))
    assert row["cells"]["A"]["accuracy"]["value"] is not None


def test_report_refuses_a_newer_schema_by_name(run_a, tmp_path, cli):
    newer = _doc(run_a)
    newer["schema"] = 99
    same_shape = _write(newer, tmp_path / "same")
    reshaped = _write({"schema": 99, "runs": [{"artifacts": newer["artifacts"]}]}, tmp_path / "reshaped")
    for path in (same_shape, reshaped):
        proc = cli("report", path, "--out", tmp_path / "rep")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "bench.json schema 99 is newer than this edgemed reads" in proc.stderr
        assert not (tmp_path / "rep").exists()
    wrong = _doc(run_a)
    wrong["artifacts"][0]["name"] = 7
    proc = cli("report", _write(wrong, tmp_path / "wrong"))
    assert proc.returncode == 2 and "artifacts[0].name is 7" in proc.stderr


# --- the pages ----------------------------------------------------------------------------------------------
class Rows(HTMLParser):
    """The data-v of every cell of table#<table_id>'s body, row by row."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.body, self.rows = table_id, False, False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.inside = a.get("id") == self.table_id
        elif self.inside and tag == "tbody":
            self.body = True
        elif self.inside and self.body and tag == "tr":
            self.rows.append([])
        elif self.inside and self.body and tag == "td":
            self.rows[-1].append(a.get("data-v"))

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = self.body = False


def rows_of(html: str, table_id: str = "results") -> list[list[str | None]]:
    parser = Rows(table_id)
    parser.feed(html)
    return parser.rows


def assert_self_contained(html: str) -> None:
    assert "default-src 'none'" in html  # the browser may load nothing
    assert not re.search(r"https?://", html), re.search(r".{40}https?://.{40}", html)
    assert not re.search(r"\s(src|href)\s*=", html, re.I)
    assert "@import" not in html and "url(" not in html


def _flipped(doc: dict) -> dict:
    """The run with gguf-q8_0's answer to the first question changed (a flip to show); `flipped_id` names it."""
    doc = copy.deepcopy(doc)
    q8 = next(a for a in doc["artifacts"] if a["format"] == "gguf-q8_0")
    p = q8["predictions"][0]
    p["predicted"] = next(x for x in "ABCD" if x != p["predicted"])
    p["correct"] = p["predicted"] == p["gold"]
    doc["flipped_id"] = p["id"]
    return doc


def test_bench_html_content(run_a):
    from edgemed.bench.render.html import bench_html
    from edgemed.bench.results import ArtifactResult

    page = (run_a / "bench.html").read_text()
    doc = _doc(run_a)
    assert (run_a / "bench.md").is_file() and doc["outputs"]["html"].endswith("bench.html")
    assert_self_contained(page)
    assert [r[0] for r in rows_of(page)] == [a["name"] for a in doc["artifacts"]]
    assert doc["recommendation"]["choice"] in page and "Pareto plots" in page and "<svg" in page
    assert "KL divergence distribution" in page and "Machine, settings, busy flags" in page
    flipped = _flipped(doc)
    page = bench_html(flipped, [ArtifactResult.from_dict(a) for a in flipped["artifacts"]])
    text = next(q["question"] for q in flipped["questions"] if q["id"] == flipped["flipped_id"])
    assert 'data-flip="1"' in page and escape(text[:40]) in page  # the question text, on hover
    assert_self_contained(page)


def _chromium(url: str, profile: Path, netlog: Path | None = None) -> str:
    """The DOM after the page's scripts ran, in headless Chromium."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}"]
    if netlog is not None:
        cmd.append(f"--log-net-log={netlog}")
    proc = subprocess.run([*cmd, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself requested (Chromium's own background requests have another isolation key)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"] if e["type"] == start
            and "file://" in str(e["params"].get("network_isolation_key", ""))
            and not e["params"]["url"].startswith("file:")]


@needs_chromium
def test_bench_html_in_chromium(run_a, tmp_path):
    doc = _doc(run_a)
    url = (run_a / "bench.html").resolve().as_uri()
    dom = _chromium(url, tmp_path / "p1", tmp_path / "net.json")
    assert 'data-ready="1"' in dom  # the page's script ran to its end
    shown = [r[0] for r in rows_of(dom)]
    assert sorted(shown) == sorted(a["name"] for a in doc["artifacts"]) and len(shown) == len(doc["artifacts"])
    assert page_requests(tmp_path / "net.json") == []
    by_tg = sorted(doc["artifacts"], key=lambda a: -a["throughput"]["tg"]["avg_ts"])
    dom = _chromium(url + "#sort=decode_tps:desc", tmp_path / "p2")
    assert [r[0] for r in rows_of(dom)] == [a["name"] for a in by_tg]
    assert 'aria-sort="descending"' in dom
    dom = _chromium(url + "#sort=decode_tps", tmp_path / "p3")
    assert [r[0] for r in rows_of(dom)] == [a["name"] for a in reversed(by_tg)]
    # the network check sees a load when there is one (a page without edgemed's policy)
    (tmp_path / "loads.html").write_text('<html><body><img src="http://edgemed.invalid/x.png"></body></html>')
    _chromium((tmp_path / "loads.html").as_uri(), tmp_path / "p4", tmp_path / "net2.json")
    assert page_requests(tmp_path / "net2.json") == ["http://edgemed.invalid/x.png"]


def _ten_artifacts(doc: dict) -> dict:
    """Ten artifacts close together (as ten formats of one model would be), from the real run's two."""
    doc = _flipped(_quiet(doc))
    arts = []
    for i in range(10):
        a = copy.deepcopy(doc["artifacts"][i % 2])
        a["name"] = f"{a['format']}-variant-{i}"
        a["latency"]["answer_ms"]["p95"] *= 1 + 0.01 * i
        a["memory"]["peak_rss_serving_bytes"] = int(a["memory"]["peak_rss_serving_bytes"] * (1 + 0.005 * i))
        if a.get("fidelity"):
            a["fidelity"]["kld_mean"] = 0.01 * (1 + 0.02 * i)
        arts.append(a)
    doc["artifacts"] = arts
    doc["pareto_front"] = [a["name"] for a in arts[:5]]
    return doc


@needs_chromium
def test_plot_labels_do_not_overlap_at_ten_artifacts(run_a, tmp_path):
    from edgemed.bench.render.html import bench_html
    from edgemed.bench.results import ArtifactResult

    doc = _ten_artifacts(_doc(run_a))
    path = tmp_path / "bench.html"
    path.write_text(bench_html(doc, [ArtifactResult.from_dict(a) for a in doc["artifacts"]]))
    dom = _chromium(path.as_uri(), tmp_path / "p")
    overlaps = re.findall(r'<svg class="plot[^"]*"[^>]*data-overlaps="(\d+)"', dom)
    assert len(overlaps) >= 3 and set(overlaps) == {"0"}  # measured by the browser's own text boxes
    assert len(rows_of(dom)) == 10


def test_label_placement_avoids_markers_and_labels():
    from edgemed.bench.render.svg import label_box, place_labels

    pts = [(100 + 3 * i, 100 + 2 * i, f"gguf-q4_k_m-{i}") for i in range(10)]  # a tight cluster
    placed = place_labels(pts, (0, 0, 600, 400))
    boxes = [p[3] for p in placed if p is not None]
    markers = [(x - 5, y - 5, x + 5, y + 5) for x, y, _ in pts]
    for i, b in enumerate(boxes):
        assert all(not (b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3]) for o in boxes[i + 1:] + markers)
    assert len(boxes) >= 6  # the rest go to the column beside the plot, stacked
    assert label_box("abc", 10, 20, "end")[2] == 11  # ends at its anchor, one pixel of padding


@needs_chromium
def test_report_html_in_chromium(run_a, tmp_path, cli):
    base = _quiet(_doc(run_a))
    runs = [_write(base, tmp_path / "one"), _write(_rerun(base, 1.6), tmp_path / "two"),
            _write(_board_run(_doc(run_a), {"hf": 10.0, "gguf-q8_0": 40.0}), tmp_path / "pi")]
    proc = cli("report", *runs, "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    assert_self_contained(page)
    url = (tmp_path / "rep" / "report.html").as_uri()
    dom = _chromium(url + "#sort=C.decode_tps:desc", tmp_path / "p", tmp_path / "net.json")
    rows = rows_of(dom)
    assert [r[0] for r in rows] == ["gguf-q8_0", "hf"]  # the board's 40 then 10 tokens/s
    assert page_requests(tmp_path / "net.json") == [] and 'class="num worse"' in dom


def test_github_actions_example_benches_summarises_uploads_and_gates():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    repo = Path(__file__).resolve().parents[1]
    flow = yaml.safe_load((repo / "examples" / "github-actions-bench.yml").read_text())
    steps = flow["jobs"]["bench"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "--budget examples/budgets.toml" in runs and (repo / "examples" / "budgets.toml").is_file()
    assert "GITHUB_STEP_SUMMARY" in runs and "edgemed report" in runs and "--tolerance" in runs
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert "runs/pipeline/bench/bench.html" in upload["with"]["path"] and upload["if"] == "always()"
