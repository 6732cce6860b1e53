"""Request clustering (edge_agent/host/cluster.py): automatic k, names, routing, skills."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from edge_agent.errors import FlywheelError
from edge_agent.host.cluster import (
    ClusterConfig,
    assign,
    cluster_embeddings,
    cluster_texts,
    skill_of_clusters,
    toolset_of_tools,
)
from edge_agent.routing.embed import Embedder
from tests.embed_support import minilm_export


def blobs(k: int, per: int, dim: int = 32, noise: float = 0.08, seed: int = 0) -> np.ndarray:
    """`k` tight groups of `per` unit vectors around random directions, grouped in order."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    points = np.repeat(centres / np.linalg.norm(centres, axis=1, keepdims=True), per, axis=0)
    return points + rng.normal(scale=noise, size=points.shape)


def same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    pairs = set(zip(labels.tolist(), truth.tolist(), strict=True))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


class KeywordEmbedder:
    """A fake embedder: one direction per keyword group, so the right clustering is known."""

    name = "keywords"

    def __init__(self, groups: Sequence[str], dim: int = 24) -> None:
        self.groups = list(groups)
        self.directions = blobs(len(groups), 1, dim=dim, noise=0.0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        rows = [self.directions[self._group(t)] for t in texts]
        return np.stack(rows) + rng.normal(scale=0.05, size=(len(texts), self.directions.shape[1]))

    def _group(self, text: str) -> int:
        return next(i for i, g in enumerate(self.groups) if g in text)


# --- choosing k ------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "per"), [(2, 10), (5, 12), (12, 10), (30, 9)])
def test_finds_the_true_number_of_groups_without_being_told(k: int, per: int) -> None:
    labels, score = cluster_embeddings(blobs(k, per, seed=k))
    assert same_partition(labels, np.repeat(np.arange(k), per))
    assert 0.5 < score <= 1.0


def test_clusters_are_numbered_largest_first() -> None:
    x = np.concatenate([blobs(1, 5, seed=1), blobs(1, 20, seed=2), blobs(1, 11, seed=3)])
    labels, _ = cluster_embeddings(x)
    assert np.bincount(labels).tolist() == [20, 11, 5]
    assert labels[5] == 0 and labels[0] == 2


def test_tiny_and_degenerate_inputs() -> None:
    assert cluster_embeddings(np.zeros((0, 8)))[0].tolist() == []
    assert cluster_embeddings(np.ones((2, 8)))[0].tolist() == [0, 0]
    labels, score = cluster_embeddings(np.ones((10, 8)))  # all identical: nothing to split
    assert labels.tolist() == [0] * 10 and score == 0.0
    with pytest.raises(FlywheelError, match="2-D"):
        cluster_embeddings(np.ones(8))


def test_large_inputs_cluster_a_sample_and_assign_the_rest() -> None:
    x = blobs(4, 30, seed=7)
    labels, _ = cluster_embeddings(x, ClusterConfig(max_points=50))
    assert len(labels) == 120 and same_partition(labels, np.repeat(np.arange(4), 30))


def test_is_deterministic() -> None:
    x = blobs(6, 10, noise=0.3, seed=3)
    assert cluster_embeddings(x)[0].tolist() == cluster_embeddings(x)[0].tolist()


# --- routing ---------------------------------------------------------------------------------


def test_assign_returns_nearest_centroid_and_cosine_distance() -> None:
    centroids = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    index, distance = assign(np.array([[0.0, 3.0, 0.0], [1.0, 0.1, 0.0], [0, 0, 1.0]]), centroids)
    assert index.tolist()[:2] == [1, 0]
    np.testing.assert_allclose(distance, [0.0, 1 - 1 / np.sqrt(1.01), 1.0], atol=1e-6)
    single, _ = assign(np.array([0.0, 2.0, 0.0]), centroids)
    assert single.tolist() == [1]
    with pytest.raises(FlywheelError, match="cannot route"):
        assign(np.ones((1, 4)), centroids)


# --- cluster_texts: names, tools, skills -----------------------------------------------------

REQUESTS = [
    *(f"please turn on the {room} light" for room in ("kitchen", "bedroom", "hall", "office")),
    *(f"please turn off the {room} light" for room in ("kitchen", "garage", "porch", "den")),
    *(f"please tell me the cpu temperature {w}" for w in ("now", "again", "today", "quickly")),
    *(f"how hot is the cpu temperature {w} please" for w in ("now", "today", "sensor", "chip")),
    *(f"please set a timer for {m} minutes" for m in ("five", "ten", "two", "nine", "six")),
]
TOOLS = [["HassTurnOn"]] * 4 + [["HassTurnOff"]] * 4 + ["get_cpu_temperature"] * 8
TOOLS += [["HassStartTimer"]] * 5


@pytest.fixture
def clustering():
    embedder = KeywordEmbedder(["light", "cpu", "timer"])
    return cluster_texts(REQUESTS, embedder, TOOLS)


def test_cluster_texts_groups_and_describes(clustering) -> None:
    assert clustering.k == 3 and clustering.sizes == [8, 8, 5]
    assert clustering.embedder == "keywords" and len(clustering.labels) == len(REQUESTS)
    np.testing.assert_allclose(np.linalg.norm(clustering.centroids, axis=1), 1.0, atol=1e-5)
    lights, cpu, timer = clustering.clusters
    assert lights.tools == (("HassTurnOn", 0.5), ("HassTurnOff", 0.5))
    assert lights.name.startswith("HassTurnOn+HassTurnOff: ") and "light" in lights.terms
    assert cpu.tools == (("get_cpu_temperature", 1.0),) and {"cpu", "temperature"} <= set(cpu.terms)
    assert timer.name.startswith("HassStartTimer: ") and "timer" in timer.terms
    # "please" is in every cluster, so it distinguishes none of them
    assert not any("please" in c.terms for c in clustering.clusters)


def test_centroids_route_new_requests_to_their_cluster(clustering) -> None:
    embedder = KeywordEmbedder(["light", "cpu", "timer"])
    index, distance = assign(
        embedder.embed(["the cpu", "a timer", "a light"]), clustering.centroids
    )
    assert index.tolist() == [1, 2, 0] and (distance < 0.1).all()


def test_skills_follow_the_dominant_tool(clustering) -> None:
    assert skill_of_clusters(clustering) == ["home", "system", "home"]
    assert skill_of_clusters(clustering, {"get_cpu_temperature": "sys"}) == [None, "sys", None]
    owner = toolset_of_tools()
    assert owner["HassTurnOn"] == "home" and owner["get_memory"] == "system"


def test_without_tools_names_are_terms_and_skills_are_unknown() -> None:
    result = cluster_texts(REQUESTS, KeywordEmbedder(["light", "cpu", "timer"]))
    assert all(c.tools == () for c in result.clusters)
    assert "timer" in result.names[2] and ":" not in result.names[2]
    assert skill_of_clusters(result) == [None, None, None]


def test_serialises_to_json(clustering) -> None:
    data = json.loads(json.dumps(clustering.to_dict()))
    assert data["k"] == 3 and len(data["centroids"]) == 3 and len(data["labels"]) == 21


def test_summary_carries_a_skills_clusters_into_a_release(clustering) -> None:
    from edge_agent.adapters.release import AdapterRelease

    home = clustering.summary("home")
    assert home.names == [clustering.names[0], clustering.names[2]]
    assert home.centroids == [clustering.centroids[0], clustering.centroids[2]]
    release = AdapterRelease(
        name="home-v1", skill="home", version=1, base_identity={}, **home.release_fields()
    )
    assert release.embedder == "keywords" and len(release.centroids) == 2
    assert len(clustering.summary().centroids) == 3


def test_one_tool_list_per_text() -> None:
    with pytest.raises(FlywheelError, match="one per text"):
        cluster_texts(REQUESTS, KeywordEmbedder(["light", "cpu", "timer"]), TOOLS[:3])


# --- the real all-MiniLM-L6-v2 ---------------------------------------------------------------

PARAPHRASES = {
    "light": [
        "turn on the kitchen light", "switch the kitchen lights on", "kitchen light on please",
        "can you light up the kitchen", "put the lights on in the kitchen",
    ],
    "weather": [
        "what's the weather tomorrow", "will it rain tomorrow", "weather forecast for tomorrow",
        "is it going to be sunny tomorrow", "how cold will it be tomorrow",
    ],
    "music": [
        "play some jazz music", "put on a jazz playlist", "start playing jazz",
        "i want to listen to jazz", "play jazz songs",
    ],
}  # fmt: skip


@pytest.mark.integration
def test_minilm_finds_three_obvious_groups(tmp_path_factory: pytest.TempPathFactory) -> None:
    texts = [t for group in PARAPHRASES.values() for t in group]
    result = cluster_texts(texts, Embedder.open(minilm_export(tmp_path_factory)))
    assert result.k == 3
    assert same_partition(np.array(result.labels), np.repeat(np.arange(3), 5))
