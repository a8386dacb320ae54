"""The private parts of Ray the search's start and stop use (tuning/search/ray_cluster.py): each still where the
installed Ray keeps it, and each use falls back, with one warning or one line, where a Ray has moved it."""

from __future__ import annotations

import types

import pytest
import ray

from tuning.search import ray_cluster
from tuning.search.settings import ClusterError

MOVED = "the installed Ray ({version}) no longer has {what} (checked against {checked}): update tuning/search/ray_cluster.py"


def moved(what: str) -> str:
    return MOVED.format(version=ray.__version__, what=what, checked=ray_cluster.RAY_CHECKED)


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(ray_cluster, "_told", set())


def test_ray_keeps_its_one_machine_switch_and_process_names_where_the_search_looks():
    import ray._private.ray_constants as constants

    assert isinstance(getattr(constants, "ENABLE_RAY_CLUSTER", None), bool), moved("ray_constants.ENABLE_RAY_CLUSTER")
    assert getattr(constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", None) == ray_cluster.SINGLE_MACHINE_ENV, moved(
        f"ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR = {ray_cluster.SINGLE_MACHINE_ENV}"
    )
    assert getattr(constants, "PROCESS_TYPE_MONITOR", None) == ray_cluster.MONITOR, moved(
        f"ray_constants.PROCESS_TYPE_MONITOR = {ray_cluster.MONITOR}"
    )


def test_ray_keeps_the_node_lookup_and_the_node_table_where_the_start_looks():
    services, state = ray._private.services, ray._private.state
    for owner, name in ((services, "get_node"), (services, "_get_gcs_client_options"), (state, "GlobalState")):
        assert callable(getattr(owner, name, None)), moved(f"{owner.__name__}.{name}")
    for method in ("_initialize_global_state", "node_table", "disconnect"):
        assert callable(getattr(state.GlobalState, method, None)), moved(f"GlobalState.{method}")


def test_ray_keeps_its_own_processes_where_the_shutdown_looks():
    import ray._private.node as node

    assert hasattr(ray._private.worker, "_global_node"), moved("ray._private.worker._global_node")
    assert "self.all_processes" in __import__("inspect").getsource(node.Node.__init__), moved("Node.all_processes")


def test_where_the_switch_moved_a_local_ray_is_not_started(monkeypatch):
    import ray._private.ray_constants as constants

    monkeypatch.delenv(ray_cluster.SINGLE_MACHINE_ENV, raising=False)
    monkeypatch.delattr(constants, "ENABLE_RAY_CLUSTER")
    with pytest.raises(ClusterError, match="cannot be held to loopback; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"):
        with ray_cluster._node_on_loopback():
            pass


def test_where_the_node_lookup_moved_the_start_is_rays_own_with_one_warning(monkeypatch, fresh):
    monkeypatch.delattr(ray._private.services, "get_node")
    with pytest.warns(UserWarning, match=r"has no ray._private.services.get_node .* up to a second slower") as warned:
        for _ in range(2):
            with ray_cluster._prompt_node_lookup():
                pass
    assert len(warned) == 1 and not hasattr(ray._private.services, "get_node")  # nothing put in its place


def test_where_the_node_moved_the_shutdown_is_rays_own_with_one_warning(monkeypatch, fresh):
    monkeypatch.setattr(ray._private, "worker", types.SimpleNamespace())
    with pytest.warns(UserWarning, match=r"has no ray._private.worker._global_node .* a second slower") as warned:
        assert ray_cluster._local_processes(ray_cluster.MONITOR) == []
        assert ray_cluster._local_processes(ray_cluster.MONITOR) == []
    assert len(warned) == 1
    head = types.SimpleNamespace(head=True, all_processes=None)  # a node of another layout
    monkeypatch.setattr(ray._private, "worker", types.SimpleNamespace(_global_node=head))
    with pytest.warns(UserWarning, match="Node.all_processes"):
        assert ray_cluster._local_processes(ray_cluster.MONITOR) == []
