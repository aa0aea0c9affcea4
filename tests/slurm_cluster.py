"""A real single-node SLURM cluster for tests, private to one folder.

Installs Debian's slurmctld, slurmd, slurm-client and munge when missing (needs
root and apt-get), then starts, without systemd: munged, slurmctld and slurmd,
with one fake GPU (GRES on /dev/null) so that rules asking for a GPU are
scheduled. Its configuration, munge key and socket, state, spool, pid files and
logs all lie in the folder it is given, and every SLURM command finds them
through SLURM_CONF: the machine's own /etc/slurm and /etc/munge are neither read
nor written. A machine that already has a SLURM of its own is left alone.

There is no accounting (no slurmdbd, no database, no password): the controller
keeps finished jobs for an hour (MinJobAge), long enough for Snakemake to ask
squeue for their states and for the tests to read them with scontrol.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd", "munged")
CLIENTS = ("srun", "sbatch", "salloc", "squeue", "scontrol", "sinfo", "scancel", "sacct", "sstat")
# Where Debian (and older Debian) look for the machine's own cluster.
SYSTEM_CONFS = (Path("/etc/slurm/slurm.conf"), Path("/etc/slurm-llnl/slurm.conf"))
DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "slurmstepd")
# The first line of every slurm.conf this writes: how a later run tells its own leftovers.
MARKER = "# A single-node cluster for actionrec's tests, private to this folder."
# Far longer than a test run: squeue and scontrol only see jobs the controller still holds.
MIN_JOB_AGE = 3600
PROC = Path("/proc")


class Unavailable(Exception):
    """SLURM cannot be installed or started here; the message says why."""


def _run(
    *cmd: str, env: Mapping[str, str] | None = None, timeout: int = 60, check: bool = True
) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
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


def _binary(name: str) -> str | None:
    # Root's PATH has /usr/sbin, but not every caller's does.
    found = shutil.which(name)
    return found or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


# -- processes ------------------------------------------------------------


def _zombie(pid: int) -> bool:
    try:
        return (PROC / f"{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _processes() -> Iterable[tuple[int, str]]:
    """(pid, name) of every process still running: a zombie has ended, it only
    waits for init to reap it."""
    for entry in PROC.iterdir():
        if entry.name.isdigit() and not _zombie(int(entry.name)):
            with contextlib.suppress(OSError):
                yield int(entry.name), (entry / "comm").read_text().strip()


def _slurm_conf_of(pid: int) -> str | None:
    try:
        environ = (PROC / f"{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [e[len(b"SLURM_CONF=") :] for e in environ if e.startswith(b"SLURM_CONF=")]
    return found[0].decode(errors="replace") if found else None


def _by_conf() -> dict[str, list[tuple[int, str]]]:
    """The processes run with SLURM_CONF set (daemons, job steps, jobs), by its value."""
    found: dict[str, list[tuple[int, str]]] = {}
    for pid, name in _processes():
        conf = _slurm_conf_of(pid)
        if conf is not None and pid != os.getpid():
            found.setdefault(conf, []).append((pid, name))
    return found


def _ours(conf: str) -> bool:
    try:
        with open(conf) as f:
            return f.readline().rstrip("\n") == MARKER
    except OSError:
        return False


def leftovers() -> list[int]:
    """Processes left by a cluster of this harness whose test process was killed
    before it could stop them: its daemons ended with it, but its job steps and
    jobs did not. A cluster whose daemons still run may be another test run's."""
    return [
        pid
        for conf, procs in _by_conf().items()
        if _ours(conf) and not any(name in ("slurmctld", "slurmd") for _, name in procs)
        for pid, _ in procs
    ]


def _stop(pids: Iterable[int], seconds: float = 30) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + seconds
    while pids and time.monotonic() < end:
        pids = [p for p in pids if (PROC / str(p)).exists() and not _zombie(p)]
        time.sleep(0.2)
    # slurmstepd ignores SIGTERM.
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _die_with_parent() -> None:
    # Should the test process be killed before it can stop them, the daemons end too.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _interrupt(signum, frame):
    # timeout(1) ends a test run with SIGTERM, which would skip every teardown and
    # leave the cluster's jobs running; as an interrupt, pytest tears its fixtures down.
    raise KeyboardInterrupt(f"signal {signum}")


# -- the machine ----------------------------------------------------------


def existing_slurm(
    environ: Mapping[str, str] | None = None, confs: Iterable[Path] | None = None
) -> str | None:
    """Why this machine's own SLURM must be left alone, or None where it has none."""
    environ = os.environ if environ is None else environ
    confs = SYSTEM_CONFS if confs is None else confs
    for conf in confs:
        if conf.exists():
            return f"this machine has a SLURM configuration of its own ({conf})"
    if environ.get("SLURM_CONF") and Path(environ["SLURM_CONF"]).exists():
        return f"SLURM_CONF points to a SLURM configuration ({environ['SLURM_CONF']})"
    running = sorted({f"{name} {pid}" for pid, name in _processes() if name in DAEMONS})
    if running:
        return f"SLURM daemons not started by this test are running ({', '.join(running)})"
    return None


def install() -> None:
    """apt-get install the packages when a binary is missing."""
    if all(_binary(b) for b in BINARIES):
        return
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


def _free_port() -> int:
    # Not SLURM's default ports, which a cluster of the machine's own may want later.
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """Context manager: a running single-node cluster whose files all lie in ``folder``."""

    def __init__(self, folder: Path, cpus: int | None = None):
        self.folder = Path(folder).resolve()
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.folder / "etc/slurm.conf"
        self.bin = self.folder / "bin"
        self.munge_socket = self.folder / "run/munge.socket"
        path = os.pathsep.join([str(self.bin), os.environ.get("PATH", os.defpath)])
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}
        self.daemons: dict[str, subprocess.Popen] = {}
        self._sigterm = None

    # -- configuration -------------------------------------------------
    def write_config(self) -> list[Path]:
        """Writes the configuration and munge key; returns every path it wrote."""
        f = self.folder
        folders = [f / name for name in ("etc", "bin", "state", "spool", "log", "run")]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""{MARKER}
ClusterName=actionrec-test
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/run/slurmctld.pid
SlurmdPidFile={f}/run/slurmd.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd.log
PlugStackConfig={f}/etc/plugstack.conf
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge={MIN_JOB_AGE}
GresTypes=gpu
NodeName={self.host} CPUs={self.cpus} RealMemory={_memory_mb()} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        gres = f / "etc/gres.conf"
        gres.write_text(f"AutoDetect=off\nNodeName={self.host} Name=gpu File=/dev/null Count=1\n")
        # Empty: no SPANK plugins, not even those the machine's own plugstack.conf names.
        plugstack = f / "etc/plugstack.conf"
        plugstack.write_text("")
        key = f / "etc/munge.key"
        with contextlib.suppress(FileNotFoundError):
            key.unlink()  # read-only, from an earlier start in this folder
        key.touch(0o600)
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        return [*folders, self.conf, gres, plugstack, key, *self._write_clients()]

    def _write_clients(self) -> list[Path]:
        """SLURM's client tools, run with this cluster's SLURM_CONF: the SLURM plugin
        removes every SLURM_ variable before it calls srun inside a job, and srun
        then looks for the machine's own configuration."""
        path = os.environ.get("PATH", os.defpath).split(os.pathsep)
        elsewhere = os.pathsep.join(p for p in path if Path(p) != self.bin)
        written = []
        for name in CLIENTS:
            real = shutil.which(name, path=elsewhere) or f"/usr/bin/{name}"
            wrapper = self.bin / name
            conf = shlex.quote(str(self.conf))
            wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shlex.quote(real)} "$@"\n')
            wrapper.chmod(0o755)
            written.append(wrapper)
        return written

    # -- daemons --------------------------------------------------------
    def _daemon(self, name: str, *cmd: str) -> subprocess.Popen:
        with open(self.folder / f"log/{name}.out", "ab") as out:
            self.daemons[name] = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self.daemons[name]

    def _alive(self, daemon: subprocess.Popen) -> bool:
        if daemon.poll() is None:
            return True
        log = (self.folder / "log").glob("*")
        tails = "\n".join(f"{p.name}: {p.read_text(errors='replace')[-800:]}" for p in log)
        raise RuntimeError(f"{daemon.args[0]} exited ({daemon.returncode}):\n{tails}")

    def start(self) -> LocalSlurm:
        _stop(leftovers(), 10)
        why = existing_slurm()
        if why:
            raise Unavailable(f"{why}; the test leaves a machine's own SLURM alone")
        if os.geteuid() != 0:
            raise Unavailable("starting slurmd and munged needs root")
        install()
        self.write_config()
        f = self.folder
        munged = self._daemon(
            "munged",
            _binary("munged"),
            "--foreground",
            # Else it refuses a socket in a folder only root can reach, as pytest's
            # temporary folders are; every client here runs as root.
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={f}/etc/munge.key",
            f"--log-file={f}/log/munged.log",
            f"--pid-file={f}/run/munged.pid",
            f"--seed-file={f}/run/munged.seed",
        )
        _wait("munged", lambda: self._alive(munged) and self.munge_socket.exists(), 30)
        controller = self._daemon("slurmctld", _binary("slurmctld"), "-D")
        _wait(
            "slurmctld",
            lambda: self._alive(controller) and self.squeue(check=False).returncode == 0,
        )
        node = self._daemon("slurmd", _binary("slurmd"), "-D")
        _wait(
            "the node to be idle",
            lambda: (
                self._alive(node)
                and "idle" in _run("sinfo", "-h", "-o", "%t", env=self.env, check=False).stdout
            ),
        )
        return self

    def squeue(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("squeue", "-h", *args, env=self.env, timeout=30, check=check)

    def stop(self) -> None:
        controller = self.daemons.get("slurmctld")
        if controller is not None and controller.poll() is None:
            # Jobs left by a failed run would outlive slurmd.
            ids = self.squeue("-o", "%i", check=False).stdout.split()
            if ids:
                _run("scancel", *ids, env=self.env, timeout=30, check=False)
                with contextlib.suppress(RuntimeError):
                    _wait("the jobs to end", lambda: not self.squeue(check=False).stdout, 30)
        _stop(d.pid for d in reversed(self.daemons.values()) if d.poll() is None)
        for daemon in self.daemons.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=5)
        self.daemons.clear()
        # Whatever else still runs with this configuration was started through it.
        _stop((pid for pid, _ in _by_conf().get(str(self.conf), [])), 10)

    def __enter__(self) -> LocalSlurm:
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self._sigterm is not None:
                signal.signal(signal.SIGTERM, self._sigterm)
                self._sigterm = None

    # -- queries --------------------------------------------------------
    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller holds, as scontrol's fields (JobId, Comment,
        JobState, ExitCode, JOB_GRES: the GRES it was given, ...)."""
        out = _run("scontrol", "-d", "-o", "show", "job", env=self.env, timeout=30)
        return [_fields(line) for line in out.stdout.splitlines() if line.strip()]


def _fields(line: str) -> dict[str, str]:
    """scontrol's one-line ``Key=value Key=value`` record; a value with spaces
    (a command's arguments) continues until the next ``Key=``."""
    fields: dict[str, str] = {}
    key = None
    for token in line.split():
        name, sep, value = token.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][\w/:]*", name):
            key = name
            fields[key] = value
        elif key is not None:
            fields[key] += " " + token
    return fields
