"""Request clustering benchmark: CLINC150 intents, clustered with k chosen automatically.

Measures, in one run:
  * all-MiniLM-L6-v2 exported to ONNX, fp32 and int8 side by side: model size, embedding
    throughput (texts/s, 1 thread, same texts) and int8's cosine agreement with fp32;
  * the selection rules of `edge_agent.host.cluster` (linkage × minimum cluster size) on the
    CLINC ``val`` split (3,000 queries, 150 intents); the rule with the best val NMI is the
    one reported on ``test`` (4,500 queries) — ``test`` never picks anything;
  * on test: k chosen against the true 150, NMI, AMI, ARI, purity and V-measure at the intent
    level and at the domain level (10 domains, domains.json); target NMI >= 0.80. Every rule's
    test row is printed too, marked, and k = 150 given as an oracle row for reference only.

    .venv/bin/python scripts/bench/bench_cluster.py [--data ../shared/data/intent_clinc150]
        [--embedders DIR] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the machine is shared; k-means and BLAS obey it

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_agent.host.cluster import ClusterConfig, cluster_embeddings  # noqa: E402
from edge_agent.routing.embed import Embedder  # noqa: E402
from quantize.embedder import export_embedder  # noqa: E402

RESULTS = ROOT / "scripts" / "bench" / "results" / "cluster.json"
DATA = ROOT.parent / "shared" / "data" / "intent_clinc150"
RULES = {
    "ward, plain silhouette": ClusterConfig(min_cluster_size=1),
    "ward, size-aware silhouette (min 4)": ClusterConfig(min_cluster_size=4),
    "ward, size-aware silhouette (min 8)": ClusterConfig(min_cluster_size=8),
    "ward, size-aware silhouette (min 12)": ClusterConfig(min_cluster_size=12),
    "ward, min 8, no k-means refinement": ClusterConfig(min_cluster_size=8, refine=False),
    "average, plain silhouette": ClusterConfig(linkage="average", min_cluster_size=1),
    "average, size-aware silhouette (min 8)": ClusterConfig(linkage="average"),
    "complete, size-aware silhouette (min 8)": ClusterConfig(linkage="complete"),
}


def load(data: Path, limit: int | None) -> dict[str, Any]:
    if not (data / "data_full.json").is_file():
        raise SystemExit(f"no CLINC150 at {data}: pass --data DIR (holding data_full.json)")
    full = json.loads((data / "data_full.json").read_text())
    domains = json.loads((data / "domains.json").read_text())
    domain_of = {intent: d for d, intents in domains.items() for intent in intents}
    splits = {s: full[s][:limit] if limit else full[s] for s in ("val", "test")}
    return {"splits": splits, "domain_of": domain_of}


def embedders(folder: Path) -> dict[str, Path]:
    out = {}
    for name, quantize in (("fp32", False), ("int8", True)):
        out[name] = folder / name
        if not (out[name] / "embedder.json").is_file():
            export_embedder(out[name], quantize=quantize)
    return out


def embed_both(folders: dict[str, Path], texts: list[str]) -> dict[str, Any]:
    """Both embedders on the same texts, alternated twice; the faster pass of each counts."""
    opened = {name: Embedder.open(path, threads=1) for name, path in folders.items()}
    seconds: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(2):
        for name, embedder in opened.items():
            t0 = time.perf_counter()
            vectors[name] = embedder.embed(texts)
            seconds[name] = min(seconds.get(name, np.inf), time.perf_counter() - t0)
    cos = (vectors["fp32"] * vectors["int8"]).sum(axis=1)
    report = {
        name: {
            "texts_per_s": round(len(texts) / seconds[name], 1),
            "model_mb": round((folders[name] / "model.onnx").stat().st_size / 2**20, 1),
        }
        for name in opened
    }
    report["int8_vs_fp32_cosine"] = {
        "mean": round(float(cos.mean()), 4),
        "p1": round(float(np.percentile(cos, 1)), 4),
        "min": round(float(cos.min()), 4),
    }
    return {"report": report, "vectors": vectors}


def scores(labels: np.ndarray, truth: Sequence[str]) -> dict[str, float]:
    from sklearn import metrics

    table = metrics.cluster.contingency_matrix(truth, labels)
    values = {
        "nmi": metrics.normalized_mutual_info_score(truth, labels),
        "ami": metrics.adjusted_mutual_info_score(truth, labels),
        "ari": metrics.adjusted_rand_score(truth, labels),
        "purity": table.max(axis=0).sum() / table.sum(),
        "v_measure": metrics.v_measure_score(truth, labels),
    }
    return {k: round(float(v), 4) for k, v in values.items()}


def evaluate(x: np.ndarray, rows: list, domain_of: dict[str, str], config: ClusterConfig) -> dict:
    t0 = time.perf_counter()
    labels, score = cluster_embeddings(x, config)
    intents = [intent for _, intent in rows]
    return {
        "k": int(labels.max()) + 1,
        "true_k": len(set(intents)),
        "seconds": round(time.perf_counter() - t0, 1),
        "silhouette": round(score, 4),
        "intent": scores(labels, intents),
        "domain": scores(labels, [domain_of[i] for i in intents]),
    }


def oracle(x: np.ndarray, rows: list, domain_of: dict[str, str]) -> dict:
    """k-means at the true k: a reference for what the embeddings allow, not a result."""
    from sklearn.cluster import KMeans

    intents = [intent for _, intent in rows]
    k = len(set(intents))
    labels = KMeans(k, n_init=3, random_state=0).fit(x).labels_
    return {"k": k, "intent": scores(labels, intents),
            "domain": scores(labels, [domain_of[i] for i in intents])}  # fmt: skip


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    data = load(args.data, args.limit)
    splits, domain_of = data["splits"], data["domain_of"]
    folders = embedders(folder)
    val = embed_both(folders, [t for t, _ in splits["val"]])
    test = embed_both(folders, [t for t, _ in splits["test"]])
    on_val = {n: evaluate(val["vectors"]["int8"], splits["val"], domain_of, c)
              for n, c in RULES.items()}  # fmt: skip
    chosen = max(on_val, key=lambda n: on_val[n]["intent"]["nmi"])
    x_test = test["vectors"]["int8"]
    on_test = {n: evaluate(x_test, splits["test"], domain_of, c) for n, c in RULES.items()}
    fp32 = evaluate(test["vectors"]["fp32"], splits["test"], domain_of, RULES[chosen])
    return {
        "dataset": "CLINC150 (clinc/oos-eval data_full.json), in-scope val and test splits",
        "embedder": {"val": val["report"], "test": test["report"]},
        "chosen_rule": chosen,
        "chosen_on": "val intent NMI",
        "test": on_test[chosen],
        "test_fp32_same_rule": fp32,
        "target": {"nmi": 0.8, "met": on_test[chosen]["intent"]["nmi"] >= 0.8},
        "val_rules": on_val,
        "test_rules": on_test,
        "test_oracle_kmeans_true_k": oracle(x_test, splits["test"], domain_of),
    }


def print_table(result: dict[str, Any]) -> None:
    emb = result["embedder"]["test"]
    print(f"{'embedder (test texts)':24}{'MB':>7}{'texts/s':>10}")
    for name in ("fp32", "int8"):
        print(f"{name:24}{emb[name]['model_mb']:>7}{emb[name]['texts_per_s']:>10}")
    cos = emb["int8_vs_fp32_cosine"]
    print(f"int8/fp32 speed {emb['int8']['texts_per_s'] / emb['fp32']['texts_per_s']:.2f}x, "
          f"cosine mean {cos['mean']} p1 {cos['p1']} min {cos['min']}\n")  # fmt: skip
    head = f"{'rule':42}{'split':>6}{'k':>5}  " + "  ".join(
        f"{m:>6}" for m in ("NMI", "AMI", "ARI", "purity", "V", "dNMI", "dARI", "dPur")
    )
    print(head)
    for split in ("val", "test"):
        for name, row in result[f"{split}_rules"].items():
            mark = "*" if name == result["chosen_rule"] else " "
            print(_row(f"{mark}{name}", split, row))
    print(_row(" fp32 embeddings, chosen rule", "test", result["test_fp32_same_rule"]))
    print(_row(" oracle: k-means at the true k", "test", result["test_oracle_kmeans_true_k"]))
    t = result["test"]
    print(
        f"\n* chosen on val NMI. test: k={t['k']} (true {t['true_k']}), intent NMI "
        f"{t['intent']['nmi']} (target 0.80: {'met' if result['target']['met'] else 'MISSED'})"
    )


def _row(name: str, split: str, row: dict) -> str:
    i, d = row["intent"], row["domain"]
    cells = [i["nmi"], i["ami"], i["ari"], i["purity"], i["v_measure"], d["nmi"], d["ari"],
             d["purity"]]  # fmt: skip
    return f"{name:42}{split:>6}{row['k']:>5}  " + "  ".join(f"{v:>6.3f}" for v in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embedders", type=Path, default=None, help="reuse exports kept here")
    parser.add_argument("--limit", type=int, default=None, help="first N of each split (smoke)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, args.embedders or Path(tmp))
    if args.limit is None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2)) if args.json else print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
