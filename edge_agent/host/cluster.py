"""Cluster request texts by meaning (the paper's step 3): k chosen from the data, clusters named.

How k is chosen (picked on CLINC150's val split by `scripts/bench/bench_cluster.py`): one Ward
dendrogram over the L2-normalised embeddings is cut at ~80 k values between 2 and
n / min_cluster_size, and each cut is scored by a *size-aware* silhouette: cosine silhouette,
with points in clusters smaller than ``min_cluster_size`` scored 0 (too few to train a skill on).
Plain silhouette peaked at k = 900 on val's 3,000 queries (150 intents; NMI 0.85), rewarding
clusters of three near-identical paraphrases; minimum size 8 chose k = 158 (NMI 0.92), and
average and complete linkage scored below Ward under every rule. The chosen cut is then refined
by k-means started from its centroids (+0.01 NMI). On test: k = 192 for 150 intents, NMI 0.91.

Clusters decide which skill an interaction trains (`skill_of_clusters`) and give the router its
in-distribution signal: the L2-normalised centroids travel with the adapter, and `assign`
routes a new request to its nearest one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from edge_agent.errors import FlywheelError

__all__ = [
    "Cluster",
    "ClusterConfig",
    "ClusterSummary",
    "Clustering",
    "TextEmbedder",
    "assign",
    "cluster_embeddings",
    "cluster_texts",
    "describe",
    "skill_of_clusters",
    "toolset_of_tools",
]

Tools = Sequence[Sequence[str] | str | None]


class TextEmbedder(Protocol):
    """What clustering needs of an embedder (`edge_agent.routing.embed.Embedder` is one)."""

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class ClusterConfig:
    min_cluster_size: int = 8  # smaller clusters score 0; lowered to n // 10 for small inputs
    linkage: Literal["ward", "average", "complete"] = "ward"  # the latter two on cosine distance
    grid: int = 80  # how many k values of the dendrogram are scored
    max_points: int = 6000  # above it, cluster a sample and assign the rest (memory is O(n²))
    refine: bool = True  # k-means from the cut's centroids: +0.01 NMI on CLINC val
    n_terms: int = 3  # distinctive terms in a cluster's name
    tool_share: float = 0.2  # a tool is one of a cluster's tools if this share of it uses it
    seed: int = 0


@dataclass(frozen=True)
class Cluster:
    index: int
    size: int
    name: str
    terms: tuple[str, ...]
    tools: tuple[tuple[str, float], ...] = ()  # (tool, share of the cluster's texts), top first


@dataclass(frozen=True)
class Clustering:
    labels: list[int]  # cluster index per text; clusters are numbered largest first
    centroids: list[list[float]]  # L2-normalised, one per cluster
    clusters: list[Cluster]
    embedder: str = ""
    score: float = 0.0  # size-aware silhouette of the chosen cut
    config: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def k(self) -> int:
        return len(self.clusters)

    @property
    def sizes(self) -> list[int]:
        return [c.size for c in self.clusters]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.clusters]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"k": self.k}

    def summary(
        self,
        skill: str | None = None,
        skill_of_tool: Mapping[str, str] | Callable[[str], str | None] | None = None,
    ) -> ClusterSummary:
        """What travels with an adapter: all clusters, or only those whose skill is `skill`."""
        keep = list(range(self.k))
        if skill is not None:
            skills = skill_of_clusters(self, skill_of_tool)
            keep = [i for i in keep if skills[i] == skill]
        return ClusterSummary(
            self.embedder, [self.centroids[i] for i in keep], [self.names[i] for i in keep]
        )


@dataclass(frozen=True)
class ClusterSummary:
    """The clusters an adapter was trained on, as `AdapterRelease` carries them."""

    embedder: str
    centroids: list[list[float]]
    names: list[str]

    def release_fields(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "centroids": self.centroids, "cluster_names": self.names}


def cluster_texts(
    texts: Sequence[str],
    embedder: TextEmbedder,
    tools: Tools | None = None,
    *,
    config: ClusterConfig | None = None,
) -> Clustering:
    """Embed `texts`, cluster them with k chosen automatically, and name the clusters.

    `tools` gives, per text, the tool name(s) its request was answered with; they name the
    clusters and map them to skills.
    """
    config = config or ClusterConfig()
    if tools is not None and len(tools) != len(texts):
        raise FlywheelError(f"{len(texts)} texts but {len(tools)} tool lists: give one per text")
    x = _normalise(embedder.embed(list(texts)))
    labels, score = cluster_embeddings(x, config)
    return describe(texts, x, labels, tools, config, embedder=embedder.name, score=score)


def cluster_embeddings(
    embeddings: np.ndarray, config: ClusterConfig | None = None
) -> tuple[np.ndarray, float]:
    """Cluster labels (0 = largest cluster) and the size-aware silhouette of the chosen cut."""
    config = config or ClusterConfig()
    x = _normalise(embeddings)
    if len(x) < 3:
        return np.zeros(len(x), dtype=np.int64), 0.0
    if len(x) <= config.max_points:
        labels, score = _fit(x, config)
        return _by_size(labels), score
    sample = np.sort(np.random.default_rng(config.seed).choice(len(x), config.max_points, False))
    labels, score = _fit(x[sample], config)
    nearest, _ = assign(x, _centroids(x[sample], labels))
    return _by_size(nearest), score


def assign(embeddings: np.ndarray, centroids: Sequence[Sequence[float]] | np.ndarray) -> tuple[
    np.ndarray, np.ndarray
]:  # fmt: skip
    """For each embedding, the nearest centroid's index and its cosine distance (0..2)."""
    x = _normalise(np.atleast_2d(np.asarray(embeddings, dtype=np.float32)))
    c = _normalise(np.atleast_2d(np.asarray(centroids, dtype=np.float32)))
    if c.shape[0] == 0 or c.shape[1] != x.shape[1]:
        raise FlywheelError(f"centroids of shape {c.shape} cannot route embeddings of {x.shape}")
    similarity = x @ c.T
    best = similarity.argmax(axis=1)
    distance = 1.0 - similarity[np.arange(len(x)), best]
    return best, np.clip(distance, 0.0, 2.0)


def describe(
    texts: Sequence[str],
    embeddings: np.ndarray,
    labels: np.ndarray,
    tools: Tools | None,
    config: ClusterConfig,
    *,
    embedder: str = "",
    score: float = 0.0,
) -> Clustering:
    """A `Clustering` of given labels: centroids, sizes, dominant tools and distinctive terms."""
    k = int(labels.max()) + 1 if len(labels) else 0
    terms = _top_terms(texts, labels, k, config.n_terms)
    shares = _tool_shares(tools, labels, k, config.tool_share)
    clusters = [
        Cluster(i, int((labels == i).sum()), _name(i, terms[i], shares[i]), terms[i], shares[i])
        for i in range(k)
    ]
    centroids = _centroids(embeddings, labels) if k else np.zeros((0, embeddings.shape[1]))
    return Clustering(
        labels=[int(v) for v in labels], centroids=np.round(centroids, 6).tolist(),
        clusters=clusters, embedder=embedder, score=round(float(score), 4), config=config,
    )  # fmt: skip


def toolset_of_tools(toolsets: Sequence[str] | None = None) -> dict[str, str]:
    """Tool name → the registered toolset that has it (the skill a tool's requests train)."""
    from edge_agent.tools import available_toolsets, get_toolset

    owner: dict[str, str] = {}
    for name in toolsets if toolsets is not None else available_toolsets():
        for tool in get_toolset(name).names:
            owner.setdefault(tool, name)
    return owner


def skill_of_clusters(
    clustering: Clustering,
    skill_of_tool: Mapping[str, str] | Callable[[str], str | None] | None = None,
) -> list[str | None]:
    """Per cluster, the skill of its dominant tool (None: no tools, or a tool no skill has)."""
    if skill_of_tool is None:
        skill_of_tool = toolset_of_tools()
    lookup = skill_of_tool.get if isinstance(skill_of_tool, Mapping) else skill_of_tool
    return [lookup(c.tools[0][0]) if c.tools else None for c in clustering.clusters]


# --- choosing k ------------------------------------------------------------------------------


def _fit(x: np.ndarray, config: ClusterConfig) -> tuple[np.ndarray, float]:
    from scipy.cluster.hierarchy import fcluster

    n = len(x)
    min_size = min(config.min_cluster_size, max(2, n // 10))
    distances = np.clip(1.0 - x @ x.T, 0.0, 2.0)  # float32: n = 6000 takes 144 MB
    np.fill_diagonal(distances, 0.0)
    tree = _tree(x, distances, config.linkage)
    best: tuple[float, np.ndarray] = (-np.inf, np.zeros(n, dtype=np.int64))
    for k in _candidate_ks(n, min_size, config.grid):
        labels = fcluster(tree, k, criterion="maxclust") - 1
        if 2 <= len(np.unique(labels)) < n:
            score = _sized_silhouette(distances, labels, min_size)
            best = max(best, (score, labels), key=lambda pair: pair[0])
    score, labels = best
    if not np.isfinite(score):  # no cut made two clusters (identical points): one cluster
        return labels, 0.0
    if config.refine:
        labels = _kmeans(x, labels, config.seed)
    return labels, float(score)


def _tree(x: np.ndarray, distances: np.ndarray, method: str) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    if method == "ward":  # Euclidean on unit vectors: a monotone function of cosine distance
        return np.asarray(linkage(x.astype(np.float64), method="ward"))
    condensed = squareform(distances.astype(np.float64), checks=False)
    return np.asarray(linkage(condensed, method=method))


def _candidate_ks(n: int, min_size: int, grid: int) -> list[int]:
    top = max(2, min(n - 1, n // min_size))
    return sorted({int(k) for k in np.geomspace(2, top, num=grid)} | {top})


def _sized_silhouette(distances: np.ndarray, labels: np.ndarray, min_size: int) -> float:
    from sklearn.metrics import silhouette_samples

    per_point = silhouette_samples(distances, labels, metric="precomputed")
    too_small = np.bincount(labels)[labels] < min_size
    return float(np.where(too_small, 0.0, per_point).mean())


def _kmeans(x: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    start = _centroids(x, labels)
    fitted = KMeans(len(start), init=start, n_init=1, random_state=seed).fit(x)
    return np.asarray(fitted.labels_, dtype=np.int64)


# --- describing clusters ---------------------------------------------------------------------


def _top_terms(texts: Sequence[str], labels: np.ndarray, k: int, n: int) -> list[tuple[str, ...]]:
    """Each cluster's most distinctive words by class-based TF-IDF (one document per cluster)."""
    from sklearn.feature_extraction.text import CountVectorizer

    docs = [" ".join(t for t, label in zip(texts, labels, strict=True) if label == i)
            for i in range(k)]  # fmt: skip
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{2,}\b")
    try:
        counts = vectorizer.fit_transform(docs).toarray().astype(np.float64)
    except ValueError:  # no word survived the stop list
        return [() for _ in range(k)]
    vocab = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    idf = np.log1p(counts.sum(axis=1).mean() / np.maximum(counts.sum(axis=0), 1.0))
    scores = tf * idf
    return [tuple(str(vocab[j]) for j in np.argsort(-row)[:n] if row[j] > 0) for row in scores]


def _tool_shares(
    tools: Tools | None, labels: np.ndarray, k: int, min_share: float
) -> list[tuple[tuple[str, float], ...]]:
    if tools is None:
        return [() for _ in range(k)]
    counts: list[Counter[str]] = [Counter() for _ in range(k)]
    for names, label in zip(tools, labels, strict=True):
        counts[label].update(set([names] if isinstance(names, str) else names or ()))
    sizes = np.bincount(labels, minlength=k)
    shares = [[(t, float(n / sizes[i])) for t, n in c.most_common(3)] for i, c in enumerate(counts)]
    return [tuple((t, round(s, 3)) for t, s in row if s >= min_share) for row in shares]


def _name(index: int, terms: tuple[str, ...], tools: tuple[tuple[str, float], ...]) -> str:
    words = " ".join(terms) or f"cluster {index}"
    return f"{'+'.join(t for t, _ in tools[:2])}: {words}" if tools else words


# --- arrays ----------------------------------------------------------------------------------


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise FlywheelError(f"embeddings must be a 2-D array (texts × dim), got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    k = int(labels.max()) + 1
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    return _normalise(sums)


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1, largest first (ties by first appearance), dropping empty ones."""
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = ids[np.lexsort((first, -counts))]
    remap = np.empty(int(labels.max()) + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[labels]
