"""Run a real, throwaway Elasticsearch locally for tests and developers.

A real server, because the search code relies on ES semantics (knn, function_score,
replica failover) that mocks get wrong.  The integ-test-zip distribution, because it
is on Maven Central (`mvn` is the only fetcher needed) and has no bundled JDK (the
system Java 17 is reused); the price is server built-ins only -- no `GET /`, no
painless, no analysis-common, no ML, no geoip -- so callers must stay inside that.
ES refuses to run as root, so as root it runs as the system user `mvsearch-es`,
and everything it reads or writes is made owned by / reachable for that user.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

VERSION = "8.19.21"
ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{VERSION}:zip"
ES_USER = "mvsearch-es"
CLUSTER_NAME = "mvsearch-test"
SHARED_DIST_DIR = Path("/opt/mvsearch-es")  # when the ES user cannot reach the cache dir
M2_REPO = Path.home() / ".m2" / "repository"
ZIP_PATH = (M2_REPO / "org/elasticsearch/distribution/integ-test-zip/elasticsearch" / VERSION
            / f"elasticsearch-{VERSION}.zip")
# ES aborts on unknown settings, so these are written only if the module registering
# them ships in the distribution.  Verified on 8.19.21 integ-test-zip: xpack.ml.enabled
# is accepted (x-pack-core registers it even without ML); ingest.geoip.downloader.enabled
# is rejected ("unknown setting ... check that any required plugins are installed").
OPTIONAL_SETTINGS = {"xpack.ml.enabled": (False, "x-pack-core"),
                     "ingest.geoip.downloader.enabled": (False, "ingest-geoip")}


def _java_home() -> Path:
    """ES's launcher wants a JDK home, not a java binary; env wins so CI can pin one."""
    if os.environ.get("ES_JAVA_HOME"):
        return Path(os.environ["ES_JAVA_HOME"])
    return Path(os.path.realpath(shutil.which("java") or "/usr/bin/java")).parent.parent


def es_available() -> tuple[bool, str]:
    """Cheap pre-check so test suites can skip with a reason instead of erroring."""
    if not (_java_home() / "bin" / "java").is_file():
        return False, f"no java at {_java_home()}/bin/java (set ES_JAVA_HOME)"
    if not ZIP_PATH.is_file() and not shutil.which("mvn"):
        return False, f"{ZIP_PATH} is not cached and mvn is not on PATH to fetch it"
    return True, ""


def _es_ids() -> tuple[int, int]:
    """ES refuses root: as root use (creating if needed) a no-login system user."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam(ES_USER)
    except KeyError:  # no check=True: a parallel test worker may have just created it
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ES_USER])
        pw = pwd.getpwnam(ES_USER)
    return pw.pw_uid, pw.pw_gid


def _traversable(path: Path, uid: int, gid: int) -> bool:
    """os.access answers for us (root); what matters is the ES user's view."""
    def ok(st: os.stat_result) -> bool:
        return bool(st.st_mode & (stat.S_IXUSR if st.st_uid == uid else
                                  stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH))
    return uid == 0 or all(ok(os.stat(p)) for p in [path, *path.parents])


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """ES writes its keystore, data and logs; only root can (and must) hand them over."""
    if os.geteuid() != 0:
        return
    os.chown(root, uid, gid)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _mkdirs(path: Path) -> Path:
    """0755 regardless of umask, so the ES user can traverse what we create."""
    for p in reversed([path, *path.parents]):
        if not p.exists():
            p.mkdir(exist_ok=True)  # exist_ok: parallel test workers
            p.chmod(0o755)
    return path


def default_cache_dir() -> Path:
    """Outside the repo, so the unpacked tree survives `git clean` and is shared."""
    return Path(os.environ.get("MVSEARCH_ES_CACHE") or Path.home() / ".cache" / "mvsearch" / "es")


def ensure_distribution(cache_dir: Path | str | None = None) -> Path:
    """Return the unpacked ES home, fetching and unpacking at most once.

    Extraction goes to a temp dir beside the target and is renamed into place, so a
    crash or a concurrent worker never sees a half-extracted tree.  If the ES user
    cannot traverse cache_dir (root's ~ is mode 700), the tree goes to SHARED_DIST_DIR;
    the zip itself stays in the Maven repo.
    """
    uid, gid = _es_ids()
    if not ZIP_PATH.is_file():  # repo.local pinned so the zip lands where we look
        subprocess.run(["mvn", "-B", "-q", "dependency:get", f"-Dartifact={ARTIFACT}",
                        f"-Dmaven.repo.local={M2_REPO}"], check=True)
    parent = _mkdirs(Path(cache_dir or default_cache_dir()).absolute())
    if not _traversable(parent, uid, gid):
        parent = _mkdirs(SHARED_DIST_DIR)
    home = parent / f"elasticsearch-{VERSION}"
    if (home / "bin" / "elasticsearch").is_file():
        if home.stat().st_uid != uid:  # e.g. the ES user was recreated with a new uid
            _chown_tree(home, uid, gid)
        return home
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=parent))
    try:
        with zipfile.ZipFile(ZIP_PATH) as zf:
            for info in zf.infolist():
                out = Path(zf.extract(info, tmp))
                if (mode := (info.external_attr >> 16) & 0o777) and not info.is_dir():
                    out.chmod(mode)  # zipfile itself drops unix modes
        src = tmp / f"elasticsearch-{VERSION}"
        for f in [*(src / "bin").glob("*"), *(src / "jdk" / "bin").glob("*")]:  # no jdk here; other zips
            f.chmod(f.stat().st_mode | 0o755)
        src.chmod(0o755)
        _chown_tree(src, uid, gid)
        try:
            src.rename(home)
        except OSError:  # another process won the rename race; its tree is as good
            if not (home / "bin" / "elasticsearch").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


def _port_free(port: int) -> bool:
    """A stale cluster on our port would answer the health check and fool us."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _es_group(pgid: int) -> bool:
    """`stop --dir` reads pids from disk; after a reboot a pid may be someone else's,
    so only signal groups that really contain an Elasticsearch JVM."""
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(st.read_text().rsplit(")", 1)[1].split()[2]) == pgid \
                    and b"org.elasticsearch" in (st.parent / "cmdline").read_bytes():
                return True
        except (OSError, IndexError, ValueError):
            pass  # process vanished meanwhile
    return False


class Cluster:
    """Started nodes; a context manager.  Each pid is also a process-group id
    (start_new_session), so signals reach both the launcher and the server JVM."""

    def __init__(self, base_dir: Path, nodes: list[dict], owns_dir: bool = False):
        self.base_dir, self.nodes, self.owns_dir = Path(base_dir), nodes, owns_dir
        self._procs: dict = {}  # pid -> Popen, only in the starting process

    @property
    def urls(self) -> list[str]:
        return [n["url"] for n in self.nodes]

    def _alive(self, pid: int) -> bool:
        """Group liveness: the server JVM may outlive the launcher.  poll() reaps our
        own exited launcher, whose zombie would otherwise keep the group 'alive'."""
        if pid in self._procs:
            self._procs[pid].poll()
        try:
            os.killpg(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def _signal(self, pids: list[int], steps: tuple) -> None:
        pids = [p for p in pids if p in self._procs or _es_group(p)]
        for sig, wait in steps:
            for pid in pids:
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while any(map(self._alive, pids)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not any(map(self._alive, pids)):
                return

    def kill_node(self, i: int) -> None:
        """SIGKILL, not SIGTERM: failover tests want a crash, not a graceful leave.
        Indexes of nodes/urls stay stable, so callers pick the survivors themselves."""
        self._signal([self.nodes[i]["pid"]], ((signal.SIGKILL, 10),))

    def stop(self, timeout: float = 30, remove_dir: bool | None = None) -> None:
        """Graceful first (ES flushes and leaves), forced after timeout.  Deletes
        base_dir by default only if we created it, so user dirs keep their logs."""
        self._signal([n["pid"] for n in self.nodes], ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)))
        if self.owns_dir if remove_dir is None else remove_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def save(self) -> None:
        """Persist pids so another process (`stop --dir`) can find the nodes."""
        (self.base_dir / "cluster.json").write_text(json.dumps(
            {"base_dir": str(self.base_dir), "owns_dir": self.owns_dir,
             "urls": self.urls, "nodes": self.nodes}, indent=2))

    @classmethod
    def load(cls, base_dir: Path | str) -> Cluster:
        d = json.loads((Path(base_dir) / "cluster.json").read_text())
        return cls(Path(d["base_dir"]), d["nodes"], d.get("owns_dir", False))

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _settings(home: Path, nodes: int, transport_port: int, extra: dict | None) -> dict:
    """Security off: tests talk plain HTTP, without credentials, to a loopback node.
    Disk threshold off: dev disks are often nearly full and watermarks would block
    shard allocation."""
    s = {"cluster.name": CLUSTER_NAME, "network.host": "127.0.0.1",
         "xpack.security.enabled": False, "action.destructive_requires_name": False,
         "cluster.routing.allocation.disk.threshold_enabled": False}
    s.update({k: v for k, (v, module) in OPTIONAL_SETTINGS.items() if (home / "modules" / module).is_dir()})
    if nodes == 1:
        s["discovery.type"] = "single-node"
    else:
        s["discovery.seed_hosts"] = [f"127.0.0.1:{transport_port + i}" for i in range(nodes)]
        s["cluster.initial_master_nodes"] = [f"node-{i}" for i in range(nodes)]
    return {**s, **(extra or {})}


def start_cluster(nodes: int = 1, base_dir: Path | str | None = None, http_port: int = 9250,
                  transport_port: int = 9350, heap: str = "512m", timeout: float = 180,
                  cache_dir: Path | str | None = None, extra_settings: dict | None = None) -> Cluster:
    """Start `nodes` nodes on consecutive ports; return once every node is usable.

    Binding to loopback only keeps ES in development mode, so bootstrap checks such
    as vm.max_map_count < 262144 only warn instead of aborting startup.
    """
    home = ensure_distribution(cache_dir)
    uid, gid = _es_ids()
    busy = [p for i in range(nodes) for p in (http_port + i, transport_port + i) if not _port_free(p)]
    if busy:
        raise RuntimeError(f"ports already in use: {busy} (stale cluster? try `stop --dir`)")
    owns_dir = base_dir is None
    base = Path(tempfile.mkdtemp(prefix="mvsearch-es-", dir="/tmp") if owns_dir else base_dir).absolute()
    _mkdirs(base)
    base.chmod(0o755)
    if not _traversable(base, uid, gid):
        raise RuntimeError(f"{base} is not traversable by uid {uid}; use a dir under /tmp")
    yml = "".join(f"{k}: {json.dumps(v)}\n"  # JSON scalars/lists are valid YAML
                  for k, v in _settings(home, nodes, transport_port, extra_settings).items())
    run_as = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
    cluster = Cluster(base, [], owns_dir)
    try:
        for i in range(nodes):
            nd = base / f"node-{i}"
            shutil.rmtree(nd, ignore_errors=True)
            shutil.copytree(home / "config", nd / "config")  # per node: ES writes its keystore here
            (nd / "config" / "elasticsearch.yml").write_text(yml)
            for sub in ("data", "logs", "tmp"):
                (nd / sub).mkdir()
            _chown_tree(nd, uid, gid)
            env = {**os.environ, "ES_JAVA_HOME": str(_java_home()), "ES_PATH_CONF": str(nd / "config"),
                   "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}", "ES_TMPDIR": str(nd / "tmp"), "HOME": str(nd)}
            cmd = [str(home / "bin" / "elasticsearch"), f"-Enode.name=node-{i}",
                   f"-Epath.data={nd / 'data'}", f"-Epath.logs={nd / 'logs'}",
                   f"-Ehttp.port={http_port + i}", f"-Etransport.port={transport_port + i}"]
            with open(base / f"node-{i}.log", "wb") as log:
                proc = subprocess.Popen(cmd, env=env, cwd=nd, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True, **run_as)
            cluster._procs[proc.pid] = proc
            cluster.nodes.append({"name": f"node-{i}", "pid": proc.pid, "http_port": http_port + i,
                                  "transport_port": transport_port + i,
                                  "url": f"http://127.0.0.1:{http_port + i}"})
        cluster.save()
        _wait_ready(cluster, nodes, timeout)
    except BaseException as e:
        cluster.stop(timeout=10, remove_dir=False)  # keep the logs for the post-mortem
        if isinstance(e, RuntimeError) or not isinstance(e, Exception):
            raise
        raise RuntimeError(f"starting Elasticsearch failed: {e!r}; logs in {base}") from e
    return cluster


def _wait_ready(cluster: Cluster, nodes: int, timeout: float) -> None:
    """Ask every node, not just one: a test may hit a node whose HTTP is not up yet."""
    q = f"/_cluster/health?wait_for_status=yellow&wait_for_nodes={nodes}&timeout=1s"
    deadline, pending = time.monotonic() + timeout, list(cluster.nodes)
    while pending:
        dead = [n for n in cluster.nodes if not cluster._alive(n["pid"])]
        if dead or time.monotonic() > deadline:  # fail fast if a node died (e.g. bad setting)
            why = f"node {dead[0]['name']} exited" if dead else f"not ready after {timeout}s"
            tails = "\n".join(f"--- {n['name']} ---\n" + "\n".join(
                (cluster.base_dir / f"{n['name']}.log").read_text(errors="replace").splitlines()[-40:])
                for n in dead or pending)
            raise RuntimeError(f"Elasticsearch {why} (logs in {cluster.base_dir}):\n{tails}")
        try:
            with urllib.request.urlopen(pending[0]["url"] + q, timeout=5) as r:
                h = json.loads(r.read())
            if h.get("number_of_nodes") == nodes and h.get("status") in ("yellow", "green"):
                pending.pop(0)
                continue
        except (OSError, ValueError):  # not bound yet, 408 health timeout, reset; URLError is OSError
            pass
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """CLI; takes argv so another CLI can delegate (`main(["start", "--nodes", "3"])`)."""
    ap = argparse.ArgumentParser(prog="python -m search.es_local", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="start a detached cluster, write DIR/cluster.json")
    for flag, kw in (("--nodes", {"type": int, "default": 1}), ("--port", {"type": int, "default": 9250}),
                     ("--transport-port", {"type": int, "default": 9350}), ("--dir", {}),
                     ("--heap", {"default": "512m"}), ("--timeout", {"type": float, "default": 180})):
        st.add_argument(flag, **kw)
    sp = sub.add_parser("stop", help="stop the cluster recorded in DIR/cluster.json")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--timeout", type=float, default=30)
    sub.add_parser("fetch", help="only download and unpack the distribution")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "fetch":
            print(ensure_distribution())
        elif a.cmd == "start":
            t0 = time.monotonic()
            c = start_cluster(a.nodes, a.dir, a.port, a.transport_port, a.heap, a.timeout)
            print("\n".join(c.urls))
            print(f"# started in {time.monotonic() - t0:.1f}s; stop with: "
                  f"python -m search.es_local stop --dir {c.base_dir}", file=sys.stderr)
        else:
            Cluster.load(a.dir).stop(a.timeout, remove_dir=False)  # keep logs for inspection
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        print(f"es_local {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
