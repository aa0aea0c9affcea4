"""A real single-node SLURM cluster on this machine, for tests.

Installs Debian's slurm-wlm, munge, slurmdbd and MariaDB when missing (needs
root and apt-get), then starts, without systemd: munged, MariaDB, slurmdbd
(accounting, so that sacct answers: the executor plugin asks it for job
states), slurmctld and slurmd, with one fake GPU (GRES on /dev/null) so that
rules asking for a GPU are scheduled. Stops every daemon it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
ETC = Path("/etc/slurm")
DB_PASSWORD = "actionrec-test"


class Unavailable(Exception):
    """SLURM cannot be installed or started here; the message says why."""


def _run(*cmd: str, timeout: int = 120, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out


def _wait(what: str, ready, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {seconds:.0f} s waiting for {what}")


def install() -> None:
    """apt-get install the packages when a binary is missing."""
    needed = ("sbatch", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sacct")
    if all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in needed):
        return
    if os.geteuid() != 0:
        raise Unavailable("SLURM is not installed and installing it needs root")
    if not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and this machine has no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    update = subprocess.run(
        ["apt-get", "update", "-qq"], capture_output=True, text=True, env=env, timeout=600
    )
    if update.returncode != 0:
        raise Unavailable(f"apt-get update failed: {update.stderr[-500:]}")
    out = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if out.returncode != 0:
        raise Unavailable(f"apt-get install {' '.join(PACKAGES)} failed: {out.stderr[-500:]}")


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    return int(total_kb / 1024 * 0.9)


def _pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # missing, or not written yet


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not yet reaped) counts as stopped.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _pid_alive(pidfile: Path) -> bool:
    pid = _pid(pidfile)
    return pid is not None and _alive(pid)


class LocalSlurm:
    """Context manager: a running single-node cluster with accounting."""

    def __init__(self, cpus: int | None = None):
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.started: list[Path] = []  # pid files of the daemons this started

    # -- configuration -------------------------------------------------
    def write_config(self) -> None:
        ETC.mkdir(parents=True, exist_ok=True)
        for folder in ("/var/spool/slurmctld", "/var/spool/slurmd", "/var/log/slurm"):
            Path(folder).mkdir(parents=True, exist_ok=True)
        (ETC / "slurm.conf").write_text(f"""ClusterName=local
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SwitchType=switch/none
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
GresTypes=gpu
NodeName={self.host} CPUs={self.cpus} RealMemory={_memory_mb()} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        (ETC / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.host} Name=gpu File=/dev/null Count=1\n"
        )
        dbd = ETC / "slurmdbd.conf"
        dbd.write_text(f"""AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)

    # -- daemons --------------------------------------------------------
    def _daemon(self, pidfile: Path, *cmd: str) -> None:
        if _pid_alive(pidfile):
            return
        self.started.append(pidfile)  # stopped at the end even if it starts slowly
        _run(*cmd)
        _wait(f"{cmd[-1]} to write {pidfile}", lambda: _pid_alive(pidfile), 30)

    def _start_munge(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            _run("/usr/sbin/mungekey", "--create", check=False)
            if not key.exists():
                key.write_bytes(os.urandom(1024))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        self._daemon(
            Path("/run/munge/munged.pid"),
            "runuser",
            "-u",
            "munge",
            "--",
            "/usr/sbin/munged",
            "--force",
        )

    def _start_mariadb(self) -> None:
        pidfile = Path("/run/mysqld/mysqld.pid")
        sock = Path("/run/mysqld/mysqld.sock")
        if not _pid_alive(pidfile):
            Path("/run/mysqld").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/mysqld", "mysql", "mysql")
            if not Path("/var/lib/mysql/mysql").exists():
                _run("mariadb-install-db", "--user=mysql", "--datadir=/var/lib/mysql", timeout=300)
            subprocess.Popen(
                [
                    "/usr/sbin/mariadbd",
                    "--user=mysql",
                    f"--pid-file={pidfile}",
                    f"--socket={sock}",
                    "--bind-address=127.0.0.1",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.started.append(pidfile)
            _wait("MariaDB", lambda: sock.exists() and _pid_alive(pidfile), 60)
        sql = (
            f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{DB_PASSWORD}'; "
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
        )
        _run("mariadb", "-uroot", "-e", sql)

    def start(self) -> LocalSlurm:
        install()
        self.write_config()
        self._start_munge()
        self._start_mariadb()
        self._daemon(Path("/run/slurmdbd.pid"), "/usr/sbin/slurmdbd")
        _wait(
            "slurmdbd",
            lambda: _run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0,
        )
        if "local" not in _run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").stdout:
            _run("sacctmgr", "-i", "add", "cluster", "local")
        self._daemon(Path("/run/slurmctld.pid"), "/usr/sbin/slurmctld")
        self._daemon(Path("/run/slurmd.pid"), "/usr/sbin/slurmd")
        _wait(
            "the node to be idle",
            lambda: "idle" in _run("sinfo", "-h", "-o", "%t", check=False).stdout,
        )
        return self

    def stop(self) -> None:
        pids = {pidfile: _pid(pidfile) for pidfile in self.started}
        for pidfile in reversed(self.started):
            if pids[pidfile] is not None:
                with contextlib.suppress(OSError):
                    os.kill(pids[pidfile], signal.SIGTERM)
        for pidfile, pid in pids.items():
            if pid is None:
                continue
            try:
                _wait(f"{pidfile} to stop", lambda p=pid: not _alive(p), 30)
            except RuntimeError:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self.started.clear()

    def __enter__(self) -> LocalSlurm:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def sacct_jobs(since: str) -> list[dict[str, str]]:
    """Jobs sacct knows since ``since`` (YYYY-MM-DDTHH:MM:SS): id, name,
    comment, state, exit code, allocated resources."""
    out = _run(
        "sacct",
        "-n",
        "-P",
        "-X",
        "-S",
        since,
        "-o",
        "JobID,JobName,Comment,State,ExitCode,AllocTRES",
    )
    keys = ("id", "name", "comment", "state", "exit_code", "tres")
    return [dict(zip(keys, line.split("|"), strict=False)) for line in out.stdout.splitlines()]
