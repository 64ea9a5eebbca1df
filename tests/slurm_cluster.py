"""A single-node SLURM cluster on this machine, brought up for a test and taken down after.

Debian's ``slurmctld slurmd slurm-client munge`` packages (installed with apt-get when
missing), no systemd: ``munged`` runs as user munge, ``slurmctld`` and ``slurmd -N localhost``
as root, each stopped by its PID at the end. The node offers every CPU and one fake GPU
(a ``gres.conf`` entry whose ``File=`` is a device node made with mknod), in two partitions
named like those of ``profiles/slurm/config.yaml`` (``cpu``, the default, and ``gpu``).

``slurm.conf`` must live at ``/etc/slurm/slurm.conf``: the executor's job step strips the
``SLURM_*`` variables, so ``SLURM_CONF`` would be lost inside jobs. An existing
configuration that this module did not write is never touched (the test is skipped).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ETC = Path("/etc/slurm")
MARK = "# speechlens test cluster (tests/slurm_cluster.py): removed when the test ends"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel", "scontrol")
BINARIES += ("munged", "munge", "unmunge")
PIDS = Path("/run/speechlens-slurm")
"""PID files of the daemons this module started (a crashed test's are stopped next time)."""


class Unavailable(RuntimeError):  # noqa: N818 (reads as `except Unavailable as why`)
    """The cluster cannot be brought up here (not root, no apt-get, foreign config...)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _sh(*cmd: str, timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc


def ensure_installed(timeout: float = 900) -> float:
    """Install the SLURM and munge packages with apt-get when missing; seconds it took."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (starts slurmctld, slurmd and munged, writes /etc/slurm)")
    if all(_which(b) for b in BINARIES):
        return 0.0
    if _which("apt-get") is None:
        missing = [b for b in BINARIES if not _which(b)]
        raise Unavailable(f"{', '.join(missing)} missing and no apt-get to install them")
    began = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ("apt-get", "update", "-qq"),
        ("apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES),
    ):
        proc = _sh(*cmd, timeout=timeout, check=False, env=env)
        if proc.returncode != 0:
            raise Unavailable(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}")
    return time.monotonic() - began


def _alive(pid: int, name: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name[:15]
    except OSError:
        return False


def _stop_pid(pid: int, name: str, timeout: float = 20) -> None:
    """SIGTERM process ``pid`` if it is ``name``; SIGKILL it after ``timeout`` s."""
    if not _alive(pid, name):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid, name) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid, name):
        os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_for(what: str, test, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if test():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def _running(names: set[str]) -> list[int]:
    """PIDs of running processes called one of ``names``."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in names:
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return sorted(pids)


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    return 1000


@dataclass
class Cluster:
    """A running single-node cluster; :meth:`stop` takes it down."""

    root: Path
    cpus: int
    started: list[tuple[Path, str]] = field(default_factory=list)  # (pid file, process name)
    startup_s: float = 0.0

    def jobs(self) -> list[dict[str, str]]:
        """``scontrol show job`` of every job the controller remembers, as key -> value
        (JobId, JobName, JobState, Partition, NumCPUs, TresPerJob, Comment, ...); finished
        jobs stay listed for MinJobAge=600 s."""
        out = _sh("scontrol", "--oneliner", "show", "job").stdout
        jobs = []
        for line in out.splitlines():
            if "JobId=" in line:
                jobs.append(dict(t.split("=", 1) for t in line.split() if "=" in t))
        return jobs

    def stop(self) -> None:
        """Cancel every job, stop the daemons by PID, remove the configuration written."""
        if _which("scancel"):
            _sh("scancel", "--user=root", check=False, timeout=30)
        for pid_file, name in reversed(self.started):
            pid = _read_pid(pid_file)
            if pid is not None:
                _stop_pid(pid, name)
            pid_file.unlink(missing_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            conf = ETC / name
            if conf.exists() and conf.read_text().startswith(MARK):
                conf.unlink()


def _stop_leftovers() -> None:
    """Stop the daemons of an earlier test run that ended without :meth:`Cluster.stop`."""
    for pid_file in PIDS.glob("*.pid"):
        pid = _read_pid(pid_file)
        if pid is not None:
            _stop_pid(pid, pid_file.stem)
        pid_file.unlink(missing_ok=True)


def _munge_works() -> bool:
    if not (_which("munge") and _which("unmunge")):
        return False
    cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
    if cred.returncode != 0:
        return False
    return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True).returncode == 0


def _start_munge(cluster: Cluster) -> None:
    if _munge_works():  # a munged of the machine is running: use it
        return
    for folder in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(128))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    pid_file = PIDS / "munged.pid"
    _sh("runuser", "-u", "munge", "--", _which("munged"))
    _wait_for("munged", _munge_works, 30)
    pid = _read_pid(Path("/run/munge/munged.pid"))
    pid_file.write_text(f"{pid}\n")
    cluster.started.append((pid_file, "munged"))


def _write_config(root: Path, cpus: int) -> None:
    gpu = root / "fake-gpu0"
    try:
        os.mknod(gpu, 0o600 | 0o020000, os.makedev(195, 0))  # a character device, like nvidia0
    except OSError:
        gpu = Path("/dev/null")  # mknod not permitted: any character device will do
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    ETC.mkdir(parents=True, exist_ok=True)
    (ETC / "slurm.conf").write_text(
        f"""{MARK}
ClusterName=speechlens
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
ReturnToService=2
MinJobAge=600
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
"""
    )
    (ETC / "gres.conf").write_text(
        f"{MARK}\nAutoDetect=off\nNodeName=localhost Name=gpu File={gpu}\n"
    )


def _node_states() -> set[str]:
    """The node's state in each partition (one line per partition)."""
    proc = _sh("sinfo", "--noheader", "--Node", "--format=%T", check=False, timeout=10)
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


def start(root: Path, timeout: float = 90) -> Cluster:
    """Bring the cluster up with its state and logs under ``root``; wait until the node is idle.

    Raises :class:`Unavailable` where it cannot run here, RuntimeError when it fails to start.
    """
    began = time.monotonic()
    ensure_installed()
    for name in ("slurm.conf", "gres.conf"):
        conf = ETC / name
        if conf.exists() and not conf.read_text().startswith(MARK):
            raise Unavailable(f"{conf} exists and was not written by this test: left untouched")
    if os.environ.get("SLURM_CONF"):
        raise Unavailable(f"SLURM_CONF={os.environ['SLURM_CONF']}: this machine has a SLURM setup")
    PIDS.mkdir(parents=True, exist_ok=True)
    _stop_leftovers()
    running = _running({"slurmctld", "slurmd", "slurmdbd"})
    if running:
        raise Unavailable(f"SLURM daemons already running here (PIDs {running}): left alone")
    cluster = Cluster(root=root, cpus=os.cpu_count() or 1)
    try:
        _start_munge(cluster)
        _write_config(root, cluster.cpus)
        for name, cmd in (
            ("slurmctld", ["slurmctld", "-c"]),
            ("slurmd", ["slurmd", "-N", "localhost"]),
        ):
            _sh(_which(cmd[0]), *cmd[1:], timeout=30)
            pid_file = PIDS / f"{name}.pid"
            _wait_for(f"{name}'s pid file", (root / f"{name}.pid").exists, 20, root / f"{name}.log")
            pid_file.write_text((root / f"{name}.pid").read_text())
            cluster.started.append((pid_file, name))
        _wait_for(
            "the node to be idle", lambda: _node_states() == {"idle"}, timeout, root / "slurmd.log"
        )
    except BaseException:
        cluster.stop()
        raise
    cluster.startup_s = time.monotonic() - began
    return cluster
