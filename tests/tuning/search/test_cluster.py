"""Beyond one machine: a real two-node Ray cluster on loopback; the CLI joins it with --address."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.tuning.helpers import search_command, start_search


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster, {cluster.head_node.node_id, worker.node_id}
    cluster.shutdown()


def test_trials_run_on_both_nodes_of_a_cluster(tmp_path, data_root, two_node_cluster):
    cluster, node_ids = two_node_cluster
    command = search_command(
        "fc",
        tmp_path,
        "cluster",
        "--preset",
        "smoke",
        "--trials",
        "4",
        "--grace-period",
        "3",
        "--no-retrain",
        "--no-report",
        "--address",
        cluster.address,
    )
    process = start_search(command, data_root, tmp_path / "cluster.log")
    assert process.wait(timeout=600) == 0, (tmp_path / "cluster.log").read_text()[-3000:]
    assert f"joined the Ray cluster at {cluster.address}" in (tmp_path / "cluster.log").read_text()
    trials = pd.read_csv(tmp_path / "cluster" / "trials.csv")
    assert len(trials) == 4
    assert set(trials["node_id"]) == node_ids  # one CPU per node, two at once: both nodes ran trials


def test_a_request_larger_than_any_node_fails_fast(tmp_path, data_root, two_node_cluster):
    cluster, _ = two_node_cluster
    command = search_command(
        "fc", tmp_path, "big", "--preset", "smoke", "--cpus-per-trial", "2", "--address", cluster.address
    )
    process = start_search(command, data_root, tmp_path / "big.log")
    assert process.wait(timeout=300) == 2
    log = (tmp_path / "big.log").read_text()
    assert "--cpus-per-trial 2 exceeds the largest node's 1 CPUs" in log
    assert "Traceback" not in log
