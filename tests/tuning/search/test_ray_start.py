"""What makes a local search's Ray start quick, and what keeps the overlapped start safe.

- ``ray.init`` asks the GCS for its new raylet once a second; ``_prompt_node_lookup`` polls first
  (and the node table's layout it reads is Ray's).
- The raylet's retries to reach its object store come in 50 ms steps (FAST_RETRIES reach Ray).
- The cost estimate and Ray Tune's import run in a thread while ``ray.init`` runs in the main
  thread: the three import graphs share no module, so no module is imported by two threads at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import ray

from tests.tuning.helpers import REPO, free_port
from tests.tuning.search.kill import kill_search
from tuning.search import ray_cluster


class FakeGcs:
    """``ray._private.state.GlobalState`` answering node tables from a list, one per poll."""

    def __init__(self, tables: list, log: list) -> None:
        self.tables, self.log = iter(tables), log

    def _initialize_global_state(self, options) -> None:
        self.log.append(("connect", options))

    def node_table(self) -> list[dict]:
        self.log.append("poll")
        table = next(self.tables)
        if isinstance(table, Exception):
            raise table
        return table

    def disconnect(self) -> None:
        self.log.append("disconnect")


@pytest.fixture
def ray_lookup(monkeypatch):
    """Ray's own ``get_node`` replaced by a recorder; returns (log, install the GCS's answers, Ray's get_node)."""
    log: list = []

    def ray_get_node(address, node_id):
        log.append(("ray's get_node", address, node_id))
        return {"NodeID": node_id}

    monkeypatch.setattr(ray._private.services, "get_node", ray_get_node)
    monkeypatch.setattr(ray._private.services, "_get_gcs_client_options", lambda address: f"options for {address}")
    monkeypatch.setattr(ray_cluster, "NODE_POLL_S", 0)

    def answers(*tables) -> None:
        monkeypatch.setattr(ray._private.state, "GlobalState", lambda: FakeGcs(list(tables), log))

    return log, answers, ray_get_node


def test_the_start_polls_the_gcs_until_its_raylet_is_alive_then_asks_as_ray_does(ray_lookup):
    log, answers, ray_get_node = ray_lookup
    answers(
        [], [{"NodeID": "other", "Alive": True}], [{"NodeID": "n1", "Alive": False}], [{"NodeID": "n1", "Alive": True}]
    )
    with ray_cluster._prompt_node_lookup():
        assert ray._private.services.get_node("127.0.0.1:6379", "n1") == {"NodeID": "n1"}
    assert log == [
        ("connect", "options for 127.0.0.1:6379"),
        "poll",
        "poll",
        "poll",
        "poll",
        "disconnect",
        ("ray's get_node", "127.0.0.1:6379", "n1"),
    ]
    assert ray._private.services.get_node is ray_get_node  # Ray's own again after the start


def test_a_gcs_that_does_not_answer_is_left_to_rays_own_call(ray_lookup):
    log, answers, _ = ray_lookup
    answers(RuntimeError("GCS unavailable"))
    with ray_cluster._prompt_node_lookup():
        ray._private.services.get_node("127.0.0.1:6379", "n1")
    assert log[-2:] == ["disconnect", ("ray's get_node", "127.0.0.1:6379", "n1")]


def test_a_node_table_of_another_layout_ends_the_polling_at_once(ray_lookup):
    log, answers, _ = ray_lookup
    answers([{"node_id": "n1", "state": "ALIVE"}])  # never polled again: a second poll would fail here
    with ray_cluster._prompt_node_lookup():
        ray._private.services.get_node("127.0.0.1:6379", "n1")
    assert log.count("poll") == 1 and log[-1] == ("ray's get_node", "127.0.0.1:6379", "n1")


def test_rays_get_node_is_put_back_when_the_start_fails(ray_lookup):
    *_, ray_get_node = ray_lookup
    with pytest.raises(ValueError), ray_cluster._prompt_node_lookup():
        raise ValueError("ray.init failed")
    assert ray._private.services.get_node is ray_get_node


# Each prints the modules one part of a search's start imports, after what the CLI has imported by
# then (and ray_cluster.import_shared_modules); "start" also prints the Ray config it set.
_BEFORE = textwrap.dedent("""
    import json, sys
    import optuna, torch
    from snn.data import default_data_dir, read_dataset
    from tuning.search import cli, cost, ray_cluster
    from tuning.search.settings import Settings
    from tuning.search.space import default_space_path, load_space

    ray_cluster.import_shared_modules()
    data = read_dataset(default_data_dir()) if sys.argv[1] == "estimate" else None
    before = set(sys.modules)
""")
_PARTS = {
    "start": """
        ray_cluster.start_ray(address=None, dashboard=True, dashboard_host="127.0.0.1", dashboard_port=int(sys.argv[2]))
        import ray
        config = ray._private.state.state.get_system_config()
        print("CONFIG " + json.dumps({key: config.get(key) for key in ray_cluster.FAST_RETRIES}))
        # the node table's layout the start's polling reads (another layout would end it at once)
        print("REGISTERED " + json.dumps(ray_cluster._registered(ray.nodes(), ray.get_runtime_context().get_node_id())))
        ray_cluster.stop_ray()
    """,
    "tune": """
        import tuning.search.tuner
    """,
    "estimate": """
        settings = Settings(model="fc", metric="val_acc", seed=0, cpus_per_trial=1, gpus_per_trial=0,
                            max_concurrent=0, max_failures=0, retrain_seeds=1, retrain=False, device="cpu")
        cost.seed_epoch_seconds(load_space(default_space_path("fc"), "fc"), settings, data)
    """,
}
_AFTER = '\nprint("MODULES " + json.dumps(sorted(set(sys.modules) - before)))\n'


def test_the_estimate_ray_tune_and_ray_start_import_no_module_in_common(data_root):
    env = {**os.environ, "SNN_DATA_DIR": str(data_root)}
    processes = {
        part: subprocess.Popen(
            [sys.executable, "-c", _BEFORE + textwrap.dedent(code) + _AFTER, part, str(free_port())],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for part, code in _PARTS.items()
    }
    outputs = {}
    for part, process in processes.items():
        try:
            outputs[part], _ = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            kill_search(process)
            raise
        assert process.returncode == 0, outputs[part][-3000:]

    def printed(part: str, tag: str):
        return json.loads(next(x for x in outputs[part].splitlines() if x.startswith(tag + " "))[len(tag) + 1 :])

    modules = {part: set(printed(part, "MODULES")) for part in _PARTS}
    assert "ray.tune" in modules["tune"] and "snn.models" in modules["estimate"]  # each part imports its own
    assert len(modules["start"]) > 50
    assert modules["start"] & modules["tune"] == set()
    assert modules["start"] & modules["estimate"] == set()
    assert printed("start", "CONFIG") == ray_cluster.FAST_RETRIES
    assert printed("start", "REGISTERED") is True
