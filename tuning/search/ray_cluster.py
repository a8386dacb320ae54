"""Ray's lifecycle for one search: start a local instance (services on loopback) or join a cluster.

Also the checks that need a running Ray: that some node can host one trial, and how many
trials fit at once.

A local search is a one-machine Ray cluster, so nothing of it listens beyond loopback: Ray
2.60 binds its GCS server, raylet (node and object manager), dashboard agent, runtime-env
agent and every worker to the node's IP address, and ``start_ray`` makes that 127.0.0.1. Only
the dashboard has its own host (``--dashboard-host``).

A search pays Ray's start and stop once, so both skip Ray's one-second waits where a small
machine meets them (FAST_RETRIES, ``_prompt_node_lookup``, ``stop_ray``; docs/performance.md, "What a search
costs beyond its trials").

Ray's private internals used here, each in one function, checked against Ray 2.41-2.60
(RAY_CHECKED), guarded, and pinned by tests/tuning/search/test_ray_internals.py:
``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` (``_node_on_loopback``: a local Ray on loopback;
where it has moved the search refuses to start a local Ray rather than expose its services),
``ray._private.services.get_node`` with ``ray._private.state.GlobalState`` (``_prompt_node_lookup``)
and ``ray._private.worker._global_node.all_processes`` (``_local_processes``). Where either of the
last two has moved, Ray's own start or stop runs, a second slower, with one warning.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import ipaddress
import logging
import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import ray

from .settings import ClusterError, ResourceError, Settings

TOKEN_FILE = Path.home() / ".ray" / "auth_token"
LOOPBACK = "127.0.0.1"
CLUSTER_TIMEOUT_S = 30  # --address: seconds to wait for the cluster before giving up
RAY_CHECKED = "Ray 2.41-2.60"  # the versions the private internals below were read in and tested against
# Ray's switch between a one-machine instance (node IP on loopback; its default on macOS and
# Windows) and a cluster node (node IP = the address other machines reach). Set by the user, it wins.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
MONITOR = "monitor"  # ray_constants.PROCESS_TYPE_MONITOR: the autoscaler monitor's process type
# The raylet's first connection to its own object store races the store's start; losing, it
# sleeps raylet_client_connect_timeout_milliseconds (1 s) before trying again, in about a third
# of starts on a 2-core machine. The same 10 s of tries, in 50 ms steps.
FAST_RETRIES = {"raylet_client_connect_timeout_milliseconds": 50, "raylet_client_num_connect_attempts": 200}
NODE_POLL_S = 0.02  # how often the start asks the GCS whether the raylet has registered
NODE_POLL_LIMIT_S = 10.0  # then Ray's own lookup (its own waits and errors) takes over
# What both ray.init and Ray Tune's import import first (Ray 2.60): a search imports these before
# Ray Tune is imported in a thread while Ray starts, so that no module is imported by two threads
# at once (tests/tuning/search/test_ray_start.py compares the import graphs).
SHARED_IMPORTS = ("pydantic", "socketserver", "ray._common.usage.usage_lib", "ray.dashboard")


def start_ray(
    *,
    address: str | None,
    dashboard: bool,
    dashboard_host: str,
    dashboard_port: int | None,
    join_timeout: float = CLUSTER_TIMEOUT_S,
    import_paths: list[str] = (),
) -> None:
    """Join ``address``, or start a local Ray with its dashboard on ``dashboard_host`` (loopback by default).

    ``dashboard_port`` None: Ray's 8265, or the next free port when another Ray holds it.
    ``import_paths``: folders the trials' workers need on their Python path (a network or data factory
    of the user's, importable from the current folder): a local Ray's workers inherit PYTHONPATH. On a
    cluster, such code must be importable on every node.

    Raises ClusterError (one line) when Ray cannot start or the cluster does not answer within
    ``join_timeout`` seconds; nothing of the search has been written then.
    """
    keep_token_private()
    if address:
        _join(address, join_timeout)
        print(f"joined the Ray cluster at {address}")
        return
    make_token_if_missing()
    if import_paths:
        known = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        os.environ["PYTHONPATH"] = os.pathsep.join([*[p for p in import_paths if p not in known], *filter(None, known)])
    if dashboard and not is_loopback(dashboard_host):
        print(
            f"warning: the Ray dashboard listens on {dashboard_host}, not loopback: anyone who reaches "
            f"it can run code through Ray's job API",
            file=sys.stderr,
        )
    if dashboard and dashboard_port is not None:
        check_port_free(dashboard_host, dashboard_port)
    try:
        with _node_on_loopback() as node_ip, _prompt_node_lookup():
            # address "local": a new instance, never the cluster that `ray start` (or another search's
            # test cluster) recorded in /tmp/ray/ray_current_cluster or RAY_ADDRESS names, which
            # ray.init() without an address would join
            context = ray.init(
                address="local",
                include_dashboard=dashboard,
                dashboard_host=dashboard_host,
                dashboard_port=dashboard_port,
                _node_ip_address=node_ip,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _system_config=dict(FAST_RETRIES),
            )  # a copy: Ray adds its own keys to it
    except Exception as e:  # Ray's own start-up failures arrive as tracebacks of any type
        raise ClusterError(f"Ray did not start: {_first_line(e)}") from None
    keep_token_private()  # the token this start may have written
    if dashboard and context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}")
        if os.environ.get("RAY_AUTH_MODE", "token").lower() == "token":
            print(
                f"  token authentication is on: sign in with the token in {TOKEN_FILE} (HTTP clients send "
                f"'Authorization: Bearer <token>'); on a private machine RAY_AUTH_MODE=disabled turns it off"
            )


def keep_token_private(token_file: Path = TOKEN_FILE) -> None:
    """Ray's dashboard token readable by the user alone: its folder made 0700 when this makes it, the token 0600.

    Ray 2.60 writes a new token with the process's umask (0644 under the usual 022), so wherever
    others can enter the home folder they could read it and run code through the dashboard's job
    API. Called before Ray starts (a folder this makes keeps a token written into it out of
    reach from its first byte) and after (the token Ray wrote). A token that is not the user's
    own, a symbolic link, or one whose mode cannot be changed is left as it is, with one warning.
    """
    if not token_file.parent.exists():
        with contextlib.suppress(OSError):  # else Ray makes it, or reports why it cannot
            token_file.parent.mkdir(mode=0o700)
    try:
        fd = os.open(token_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as e:
        _warn_token(token_file, "is a symbolic link" if e.errno == errno.ELOOP else f"cannot be checked ({e.strerror})")
        return
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o077:
            return
        if info.st_uid != os.geteuid():
            _warn_token(
                token_file, f"is mode {stat.S_IMODE(info.st_mode):04o} and belongs to user id {info.st_uid}, not to you"
            )
            return
        os.fchmod(fd, 0o600)
    except OSError as e:
        _warn_token(token_file, f"is readable by others and could not be made private ({e.strerror or e})")
    finally:
        os.close(fd)


def make_token_if_missing(token_file: Path = TOKEN_FILE) -> None:
    """Before a local Ray starts with token authentication and no token: the token, 0600 from its first byte.

    Ray 2.60 would write it itself, in place (``open(path, "w")``), so two searches starting at once in a
    home without a token could each write one, and a start could read the other's half-written or
    replaced token. This writes 32 random bytes in hexadecimal, as Ray's own generator does, under a
    temporary name and links it into place: the first search's token is the one every later start reads.
    Nothing is made where Ray is told to use another token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``)
    or to run without one (``RAY_AUTH_MODE`` other than ``token``).
    """
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if os.path.lexists(token_file) or not token_file.parent.is_dir():
        return  # keep_token_private checks one that exists; Ray reports a folder it cannot make
    temporary = token_file.parent / f".auth_token.{secrets.token_hex(6)}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        return  # a folder this user cannot write: Ray says why when it tries
    try:
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):  # another search made one meanwhile: that one is used (else Ray writes)
            os.link(temporary, token_file)
    finally:
        os.unlink(temporary)


def _warn_token(token_file: Path, why: str) -> None:
    print(
        f"warning: Ray's dashboard token {token_file} {why}: whoever reads it can run code through Ray's job API; "
        f"make it yours and private (chmod 600)",
        file=sys.stderr,
    )


def import_shared_modules() -> None:
    """Import SHARED_IMPORTS (those a Ray of another version lacks are skipped)."""
    for name in SHARED_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _join(address: str, timeout: float) -> None:
    """``ray.init(address=...)``, given up on after ``timeout`` seconds (Ray itself retries for many minutes)."""
    if address != "auto" and "://" not in address:  # host:port of a GCS: is anything listening at all?
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as e:
            why = f"no answer within {timeout:g} s" if isinstance(e, TimeoutError) else e.strerror or str(e)
            raise ClusterError(f"--address {address}: no Ray cluster there ({why})") from None
    # A port that answers but is no Ray GCS (or a cluster that stalls) would keep ray.init waiting:
    # the watchdog ends the command; nothing has been written yet, so there is nothing to clean up.
    # Meanwhile Ray's C++ client logs its retries to file descriptor 2: held back, shown only on success.
    with _fd2_held() as stderr_fd:
        message = (
            f"python -m tuning.search: error: --address {address}: the Ray cluster did not answer within "
            f"{timeout:g} s\n"
        )
        watchdog = threading.Timer(timeout, _give_up, args=(stderr_fd, message))
        watchdog.daemon = True
        watchdog.start()
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as e:
            raise ClusterError(f"--address {address}: cannot join the Ray cluster ({_first_line(e)})") from None
        finally:
            watchdog.cancel()


def _give_up(stderr_fd: int, message: str) -> None:
    os.write(stderr_fd, message.encode())
    os._exit(2)  # ray.init cannot be interrupted from another thread


@contextlib.contextmanager
def _fd2_held() -> Iterator[int]:
    """Send file descriptor 2 to a temporary file; yields the real stderr's descriptor. Replays the file on success."""
    sys.stderr.flush()
    real = os.dup(2)
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    succeeded = False
    try:
        yield real
        succeeded = True
    finally:
        os.dup2(real, 2)
        os.close(real)
        if succeeded:
            held.seek(0)
            os.write(2, held.read())
        held.close()


def check_port_free(host: str, port: int) -> None:
    """The dashboard's port must be free (Ray's own check fails with a traceback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ray's own test of the port
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ClusterError(
                f"--dashboard-port {port}: cannot listen on {host}:{port} ({e.strerror or e}); "
                f"choose another port or --no-dashboard"
            ) from None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


@contextlib.contextmanager
def _node_on_loopback() -> Iterator[str | None]:
    """Start the local node on 127.0.0.1 (yields the node IP for ``ray.init``), unless the user set Ray's switch.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough: on Linux Ray replaces a
    loopback address by the machine's outward one (``services.resolve_ip_for_localhost``)
    unless it runs as one machine (``ray_constants.ENABLE_RAY_CLUSTER`` false), a constant read
    from SINGLE_MACHINE_ENV when Ray was imported. So the constant is switched for the start
    (the services Ray starts are handed the node IP on their command lines) and put back.
    """
    if SINGLE_MACHINE_ENV in os.environ:
        yield None  # the user chose; Ray decides the node IP as it always does
        return
    try:
        import ray._private.ray_constants as constants
    except ImportError:
        constants = None
    if not isinstance(getattr(constants, "ENABLE_RAY_CLUSTER", None), bool):
        raise ClusterError(
            f"this Ray ({ray.__version__}) keeps its one-machine switch elsewhere than "
            f"ray._private.ray_constants.ENABLE_RAY_CLUSTER (checked against {RAY_CHECKED}), so a "
            f"local Ray cannot be held to loopback; set {SINGLE_MACHINE_ENV}=0 to start it as Ray "
            f"decides, or join a cluster with --address"
        )
    before = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield LOOPBACK
    finally:
        constants.ENABLE_RAY_CLUSTER = before


@contextlib.contextmanager
def _prompt_node_lookup() -> Iterator[None]:
    """Let ``ray.init`` find its new raylet within NODE_POLL_S of its registration, not up to a second later.

    Ray 2.60's start asks the GCS for the raylet it just started (``services.get_node``), whose
    C++ side sleeps a whole second whenever the raylet has not registered yet, as it has not on
    a first try here. For the start, ``get_node`` first polls the GCS's node table, then asks as
    Ray does. On a Ray without these functions the start is Ray's own (one warning).
    """
    services, state = getattr(ray._private, "services", None), getattr(ray._private, "state", None)
    if not all(
        hasattr(m, f)
        for m, f in ((services, "get_node"), (services, "_get_gcs_client_options"), (state, "GlobalState"))
    ):
        _warn_moved("ray._private.services.get_node", "Ray starts at its own pace, up to a second slower")
        yield
        return
    ray_get_node = services.get_node

    def get_node(gcs_address: str, node_id: str):
        gcs = None
        try:
            gcs = state.GlobalState()
            gcs._initialize_global_state(services._get_gcs_client_options(gcs_address))
            deadline = time.monotonic() + NODE_POLL_LIMIT_S
            while time.monotonic() < deadline and _registered(gcs.node_table(), node_id) is False:
                time.sleep(NODE_POLL_S)
        except Exception:  # the GCS did not answer: Ray's own call reports it
            pass
        finally:
            if gcs is not None:
                gcs.disconnect()
        return ray_get_node(gcs_address, node_id)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = ray_get_node


def _registered(nodes: list[dict], node_id: str) -> bool | None:
    """Whether the GCS's node table lists ``node_id`` alive; None for a table of another layout."""
    if any("NodeID" not in n or "Alive" not in n for n in nodes):
        return None  # another Ray's layout: stop polling, Ray's own lookup decides
    return any(n["NodeID"] == node_id and n["Alive"] for n in nodes)


def stop_ray() -> None:
    """Shut down the local Ray instance (or disconnect from the cluster).

    Ray's shutdown stops its processes one at a time, each given a second after SIGTERM: the
    GCS before the autoscaler monitor, whose SIGTERM handler then tries to tell the GCS and
    holds the shutdown for that whole second. A local instance has nothing to autoscale, so
    its monitor is killed first (as Ray itself does a second later).
    """
    for monitor in _local_processes(MONITOR):
        monitor.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # as Ray, never wait on a process for long
            monitor.wait(timeout=1)
    ray.shutdown()


def _local_processes(process_type: str) -> list:
    """The ``subprocess.Popen`` of each process of ``process_type`` that this process's own Ray instance
    started (Ray 2.60's ``Node.all_processes``); none after joining a cluster, or on another Ray layout
    (one warning: Ray's own shutdown then stops them, a second slower)."""
    worker = getattr(ray._private, "worker", None)
    if not hasattr(worker, "_global_node"):
        _warn_moved("ray._private.worker._global_node", "Ray stops at its own pace, a second slower")
        return []
    node = worker._global_node
    if node is None or not getattr(node, "head", False):
        return []
    processes = getattr(node, "all_processes", None)
    if not isinstance(processes, dict):
        _warn_moved("ray._private.node.Node.all_processes", "Ray stops at its own pace, a second slower")
        return []
    return [info.process for info in processes.get(process_type, []) if hasattr(info, "process")]


def _warn_moved(what: str, consequence: str) -> None:
    """One warning per process that a private part of Ray this module uses has moved."""
    if what not in _told:
        _told.add(what)
        warnings.warn(
            f"this Ray ({ray.__version__}) has no {what} (checked against {RAY_CHECKED}): {consequence}", stacklevel=3
        )


_told: set[str] = set()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_cluster_resources(cpus: float, gpus: float) -> None:
    """Fail fast when no single node can host one trial (instead of trials PENDING forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    if cpus > most_cpus:
        raise ResourceError(f"--cpus-per-trial {cpus:g} exceeds the largest node's {most_cpus:g} CPUs")
    if gpus > most_gpus:
        what = "has no GPU" if most_gpus == 0 else f"has at most {most_gpus:g} GPUs on one node"
        raise ResourceError(f"--gpus-per-trial {gpus:g} cannot be met: the cluster {what}")


def max_concurrent(settings: Settings) -> int:
    """Trials at once: ``--max-concurrent``, else as many as the cluster's CPUs and GPUs hold."""
    if settings.max_concurrent:
        return settings.max_concurrent
    total = ray.cluster_resources()
    by_cpu = int(total.get("CPU", 1) // settings.cpus_per_trial)
    by_gpu = int(total.get("GPU", 0) // settings.gpus_per_trial) if settings.gpus_per_trial else by_cpu
    return max(1, min(by_cpu, by_gpu))
