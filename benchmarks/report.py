"""Derived figures (ratios, geometric mean, floor multiples, targets) and the
text, Markdown and JSON renderings of a benchmark run."""

import datetime
import json
import math
import os
import platform
import re
import subprocess

from .implementations import BASELINE, TITLES
from .scenarios import FLOOR_COMPARED, FLOOR_KEY

#: The targets from the issue, checked for the C core:
#: (key, description, kind, threshold) with kind "min" (value >= threshold) or
#: "max" (value <= threshold).
TARGETS = [
    ("geomean", "geometric-mean speedup over Twisted", "min", 6.0),
    ("slowest", "smallest speedup over Twisted (any scenario)", "min", 2.5),
    ("floor_multiple", "4 callbacks fired at end, x the floor", "max", 3.0),
    ("memory_0", "memory per pending Deferred, 0 callbacks: Twisted/C", "min", 1.5),
    ("memory_4", "memory per pending Deferred, 4 callbacks: Twisted/C", "min", 3.0),
]
TARGET_IMPL = "c"


# --- machine -----------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Processor", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def git_revision():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def machine_info(versions):
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "twisted": versions.get("twisted"),
        "cdeferred": versions.get("cdeferred"),
        "cdeferred_implementation": versions.get("cdeferred_implementation"),
        "git": git_revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- derived figures ---------------------------------------------------------------


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def build_results(meta, settings, impl_names, skipped, scenario_cells, memory):
    """Assemble everything into one JSON-able dict.

    ``scenario_cells`` is a list of (Scenario, {name: Cell}); ``memory`` is
    ``{callbacks: {name: bytes or error}}``.
    """
    stat = settings["stat"]
    others = [n for n in impl_names if n != BASELINE]
    errors = []
    scenarios = []
    values = {}  # key -> {name: seconds}
    for scenario, cells in scenario_cells:
        row_cells = {}
        for name, cell in cells.items():
            if cell.error or not cell.samples:
                msg = cell.error or "no samples"
                errors.append(f"{scenario.key} / {name}: {msg}")
                row_cells[name] = {"error": msg}
                continue
            row_cells[name] = {
                "us": cell.value(stat) * 1e6,
                "min_us": cell.min * 1e6,
                "median_us": cell.median * 1e6,
                "loops": cell.loops,
                "samples_us": [s * 1e6 for s in cell.samples],
            }
        values[scenario.key] = {n: c["us"] for n, c in row_cells.items() if "us" in c}
        ratios = {}
        if scenario.per_implementation:
            base = values[scenario.key].get(BASELINE)
            for name in others:
                v = values[scenario.key].get(name)
                if base and v:
                    ratios[name] = base / v
        scenarios.append({
            "key": scenario.key,
            "title": scenario.title,
            "doc": scenario.doc,
            "per_implementation": scenario.per_implementation,
            "cells": row_cells,
            "ratios": ratios,
        })

    timed = [s for s in scenarios if s["per_implementation"]]
    geomean, slowest = {}, {}
    for name in others:
        rs = [(s["ratios"][name], s["key"]) for s in timed if name in s["ratios"]]
        if len(rs) == len(timed) and rs:
            geomean[name] = _geomean([r for r, _ in rs])
        if rs:
            r, key = min(rs)
            slowest[name] = {"scenario": key, "ratio": r}

    floor_multiple = {}
    floor = values.get(FLOOR_KEY, {}).get("floor")
    if floor:
        for name, v in values.get(FLOOR_COMPARED, {}).items():
            floor_multiple[name] = v / floor

    mem_rows = []
    for callbacks, row in memory.items():
        sizes, ratios = {}, {}
        for name, v in row.items():
            if isinstance(v, str):
                errors.append(f"memory, {callbacks} callbacks / {name}: {v}")
            else:
                sizes[name] = v
        for name in others:
            if sizes.get(BASELINE) and sizes.get(name):
                ratios[name] = sizes[BASELINE] / sizes[name]
        mem_rows.append({"callbacks": callbacks, "bytes": sizes, "ratios": ratios})

    results = {
        "meta": meta,
        "settings": settings,
        "implementations": list(impl_names),
        "skipped": dict(skipped),
        "scenarios": scenarios,
        "geomean": geomean,
        "slowest": slowest,
        "floor_multiple": floor_multiple,
        "memory": {"n": settings["memory_n"], "rows": mem_rows},
        "errors": errors,
    }
    results["targets"] = evaluate_targets(results)
    return results


def evaluate_targets(results, impl=TARGET_IMPL):
    if impl not in results["implementations"]:
        return []
    mem = {row["callbacks"]: row["ratios"].get(impl) for row in results["memory"]["rows"]}
    slowest = results["slowest"].get(impl)
    values = {
        "geomean": results["geomean"].get(impl),
        "slowest": slowest["ratio"] if slowest else None,
        "floor_multiple": results["floor_multiple"].get(impl),
        "memory_0": mem.get(0),
        "memory_4": mem.get(4),
    }
    out = []
    for key, desc, kind, threshold in TARGETS:
        v = values[key]
        ok = None if v is None else (v >= threshold if kind == "min" else v <= threshold)
        entry = {"key": key, "impl": impl, "description": desc, "value": v,
                 "threshold": threshold, "kind": kind, "ok": ok}
        if key == "slowest" and slowest:
            entry["scenario"] = slowest["scenario"]
        out.append(entry)
    return out


# --- formatting --------------------------------------------------------------------


def fmt_us(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(v):
    if v is None:
        return "-"
    return f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def fmt_bytes(v):
    return "-" if v is None else f"{v:.0f}"


def _cell_text(cell):
    if cell is None:
        return "-"
    if "error" in cell:
        return "ERROR"
    return fmt_us(cell["us"])


def _header_line(results):
    m, s = results["meta"], results["settings"]
    how = (f"{s['stat']} of {s['rounds']} interleaved rounds, ~{s['sample_time'] * 1e3:g} ms "
           f"per sample{' (quick)' if s['quick'] else ''}")
    rev = f" ({m['git']})" if m.get("git") else ""
    return (f"{m['cpu']} ({m['cpu_count']} CPUs), {m['python']}, Twisted {m['twisted']}, "
            f"cdeferred {m['cdeferred']}{rev}, {m['date']}; {how}")


def _rows(results):
    """Table rows as lists of strings: scenario, us per impl..., ratio per other impl..."""
    names = results["implementations"]
    others = [n for n in names if n != BASELINE]
    rows = []
    for s in results["scenarios"]:
        if s["per_implementation"]:
            us = [_cell_text(s["cells"].get(n)) for n in names]
            ratios = [fmt_ratio(s["ratios"].get(n)) for n in others]
        else:  # the floor: one measurement, the same for every column
            us = [_cell_text(s["cells"].get("floor"))] * len(names)
            ratios = [""] * len(others)
        rows.append([s["title"]] + us + ratios)
    timed = sum(1 for s in results["scenarios"] if s["per_implementation"])
    rows.append([f"geometric mean speedup, {timed} scenarios"] + [""] * len(names)
                + [fmt_ratio(results["geomean"].get(n)) for n in others])
    return rows


def _columns(results):
    names = results["implementations"]
    others = [n for n in names if n != BASELINE]
    b = TITLES[BASELINE]
    return ([f"{TITLES[n]} us" for n in names], [f"{b}/{TITLES[n]}" for n in others])


def _text_table(header, rows):
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _memory_rows(results):
    names = results["implementations"]
    others = [n for n in names if n != BASELINE]
    rows = []
    for row in results["memory"]["rows"]:
        label = f"pending, {row['callbacks']} callbacks"
        rows.append([label] + [fmt_bytes(row["bytes"].get(n)) for n in names]
                    + [fmt_ratio(row["ratios"].get(n)) for n in others])
    return rows


def _floor_line(results):
    fm = results["floor_multiple"]
    parts = [f"{TITLES[n]} {fm[n]:.2f}x" for n in results["implementations"] if n in fm]
    return ", ".join(parts) if parts else "-"


def _target_lines(results):
    if not results["targets"]:
        missing = results["skipped"].get(TARGET_IMPL, "not measured")
        return [f"targets not evaluated: no C implementation ({missing})"]
    lines = []
    for t in results["targets"]:
        sign = ">=" if t["kind"] == "min" else "<="
        value = "-" if t["value"] is None else f"{t['value']:.2f}x"
        where = f" ({t['scenario']})" if t.get("scenario") else ""
        verdict = {True: "ok", False: "MISSED", None: "n/a"}[t["ok"]]
        lines.append(f"{t['description']} {sign} {t['threshold']:g}x: {value}{where}  {verdict}")
    return lines


def render_text(results):
    us_cols, ratio_cols = _columns(results)
    out = [_header_line(results), ""]
    out.append(_text_table(["scenario (us per op)"] + us_cols + ratio_cols, _rows(results)))
    out += ["", f"4 callbacks fired at end, as a multiple of the floor: {_floor_line(results)}"]
    mem = results["memory"]
    if mem["rows"]:
        out += ["", f"memory per pending Deferred (tracemalloc, N={mem['n']}), bytes:"]
        out.append(_text_table(["Deferred"] + [c.replace(" us", " B") for c in us_cols]
                               + ratio_cols, _memory_rows(results)))
    out += ["", "targets for the C core (ratios are Twisted/C):"]
    out += ["  " + line for line in _target_lines(results)]
    if results["skipped"]:
        out += ["", "skipped: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items())]
    if results["errors"]:
        out += ["", "ERRORS:"] + ["  " + e for e in results["errors"]]
    return "\n".join(out)


def _md_table(header, rows, bold_last=False):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for i, r in enumerate(rows):
        cells = list(r)
        if bold_last and i == len(rows) - 1:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _times(text):
    """2.50x -> 2.50×"""
    return re.sub(r"(\d)x\b", "\\1×", text)


def render_markdown(results):
    us_cols, ratio_cols = _columns(results)
    us_cols = [c.replace(" us", " (µs)") for c in us_cols]
    rows = [[_times(c) for c in r] for r in _rows(results)]
    out = [f"Machine: {_header_line(results)}.", ""]
    out.append(_md_table(["Scenario"] + us_cols + ratio_cols, rows, bold_last=True))
    out += ["", f"Four callbacks fired at the end, as a multiple of the floor: "
                f"{_times(_floor_line(results))}.", ""]
    mem = results["memory"]
    if mem["rows"]:
        mrows = [[_times(c) for c in r] for r in _memory_rows(results)]
        out.append(_md_table([f"Memory per pending Deferred (N={mem['n']})"]
                             + [c.replace(" (µs)", " (bytes)") for c in us_cols] + ratio_cols,
                             mrows))
    out += ["", "Targets for the C core:", ""]
    out += ["- " + _times(line.replace(">=", "≥").replace("<=", "≤"))
            for line in _target_lines(results)]
    if results["skipped"]:
        out += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items())]
    if results["errors"]:
        out += ["", "Errors:", ""] + ["- " + e for e in results["errors"]]
    return "\n".join(out)


def write_json(results, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=False)
        f.write("\n")

