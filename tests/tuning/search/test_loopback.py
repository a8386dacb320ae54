"""A local search's Ray listens on loopback only: GCS, raylet, agents, workers and the dashboard;
and its shutdown finds the autoscaler monitor it stops first."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.tuning.helpers import REPO, free_port
from tests.tuning.search.kill import kill_search

# Starts Ray as a local search does, runs two tasks (so workers start and listen), then reports
# every listening TCP socket of this process and all it started, and shuts Ray down.
PROBE = textwrap.dedent("""
    import json, sys
    import ray  # first: it puts its vendored psutil on sys.path
    import psutil
    from tuning.search import ray_cluster

    ray_cluster.start_ray(address=None, dashboard=True, dashboard_host="127.0.0.1", dashboard_port=int(sys.argv[1]))

    @ray.remote
    def hold(x):
        return x

    ray.get([hold.remote(i) for i in range(2)])
    ray.get(hold.remote(ray.put(b"x" * 1_000_000)))  # through the object store
    sockets = []
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            for c in process.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    sockets.append({"process": process.name(), "ip": c.laddr.ip, "port": c.laddr.port})
        except psutil.Error:
            pass
    print("SOCKETS " + json.dumps(sockets), flush=True)
    monitors = ray_cluster._local_processes(ray_cluster.MONITOR)
    ray_cluster.stop_ray()
    print("MONITORS " + json.dumps([m.poll() is not None for m in monitors]), flush=True)
""")


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1, how gRPC's dual-stack sockets show an IPv4 bind
    return address.is_loopback


@pytest.mark.parametrize(
    "ip, loopback",
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
    ],
)
def test_what_counts_as_loopback(ip, loopback):
    assert is_loopback(ip) is loopback


def test_every_service_of_a_local_ray_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    # a cluster named by RAY_ADDRESS (or recorded by `ray start`) is not joined: the search starts its own
    env["RAY_ADDRESS"] = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(free_port())],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        kill_search(process)
        raise
    line = next((x for x in output.splitlines() if x.startswith("SOCKETS ")), None)
    assert process.returncode == 0 and line, output[-3000:]
    sockets = json.loads(line.removeprefix("SOCKETS "))
    names = {s["process"] for s in sockets}
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), sockets
    assert len(sockets) >= 8, sockets  # GCS, raylet x2, agents, dashboard, driver and two workers at least
    exposed = [s for s in sockets if not is_loopback(s["ip"])]
    assert exposed == [], exposed
    # stop_ray finds the autoscaler monitor it kills first (Ray's internals are still where it looks), and
    # it is gone after (ray.shutdown would also have killed it, a second later: this pins the lookup only)
    assert json.loads(next(x for x in output.splitlines() if x.startswith("MONITORS ")).removeprefix("MONITORS ")) == [
        True
    ]
