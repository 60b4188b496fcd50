"""``--procs N``: run the same command under the installed MPI's ``mpiexec``, and own that job.

The launcher is the process the user sees, so it answers for the whole job:
- ``mpiexec`` runs in its own session, so the terminal's Ctrl-C reaches the launcher
  alone, which forwards it as SIGUSR1 (Hydra and Open MPI pass that to every rank
  silently: they stop at a step boundary and save). Each further request, or no end
  within ``STOP_GRACE_S``, escalates: SIGINT twice (Hydra's "abort"), then SIGKILL to
  mpiexec's whole process group;
- ``mpiexec`` dies with the launcher (``PR_SET_PDEATHSIG``): if the launcher is killed,
  even by SIGKILL, mpiexec gets SIGTERM and the ranks stop within seconds;
- after the job, whatever its end, the launcher removes the temporary files a killed rank
  may have left in the run directory (rank 0 tells it which directory that is);
- mpiexec's standard error (which carries every rank's, from every host) passes through
  a relay process (``relay.py``), which tells the launcher of a stall wherever the rank
  that saw it runs; an mpiexec still waiting ``STALL_GRACE_S`` later, for a host it
  cannot reach, is killed with everything under it.

Which flags the installed launcher needs (Hydra or Open MPI, hosts, binding) is
``launchers.py``'s business; the hosts come from ``hosts.py``.
"""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distnn.errors import UsageError
from distnn.hosts import Hosts
from distnn.launchers import Launcher, kind_of

MPI_ENV_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
MPI_ENV_RANK = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
JOB_DIR_VAR = "DISTNN_JOB_DIR"          # where rank 0 notes the run directory for the launcher
RUN_DIR_NOTE = "run_dir"
RESIDUE_NOTE = "residue"                # files of the MPI launcher a killed job leaves behind
HYDRA_TEMPORARY = "/tmp/hydra_hwloc_xmlfile_"
LAUNCHER_PID_VAR = "DISTNN_LAUNCHER_PID"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ESCALATION = (signal.SIGUSR1, signal.SIGINT, signal.SIGINT, signal.SIGKILL)
STOP_GRACE_S = 30      # a stop request not honoured by then escalates, then every ESCALATE_S
ESCALATE_S = 5
STARTED_NOTE = "started"
STALLED_MARK = "distnn: error: stalled: "   # how a rank that found a silent peer says so
STALLED_NOTE = "stalled"   # the relay saw STALLED_MARK pass
STALL_GRACE_S = 3          # then mpiexec may wait forever for an unreachable host: killed
RELAY_DRAIN_S = 5          # the relay copies what is left, then is killed
EXIT_STALLED = 4
PR_SET_PDEATHSIG = 1


def env_int(names) -> int | None:
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def under_mpi() -> bool:
    return env_int(MPI_ENV_SIZE) is not None


def env_rank() -> int:
    return env_int(MPI_ENV_RANK) or 0


def pin_blas_threads(env) -> None:
    """One BLAS thread per rank: with ranks filling the cores, more threads only contend."""
    for name in BLAS_THREAD_VARS:
        env.setdefault(name, "1")


def find_mpiexec() -> str:
    """The mpiexec of the MPI mpi4py was installed with: the venv's first (the MPICH wheel)."""
    override = os.environ.get("DISTNN_MPIEXEC")
    if override:
        found = shutil.which(override)
        if found is None:
            raise UsageError(f"DISTNN_MPIEXEC={override!r} is not an executable file; point it "
                             "at your MPI's mpiexec, or unset it to use the one beside Python")
        return found
    beside_python = Path(sys.executable).parent / "mpiexec"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("mpiexec")
    if found is None:
        raise UsageError(
            "--procs needs mpiexec, and none was found: pip install 'distnn[mpich]' "
            "for the MPICH wheel, or install your system's MPI, or set DISTNN_MPIEXEC"
        )
    return found


def find_launcher() -> Launcher:
    """The installed ``mpiexec`` (``find_mpiexec``) and which launcher it is."""
    mpiexec = find_mpiexec()
    text = _version(mpiexec)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    # Hydra prints "HYDRA build details:", then "Version: 5.0.2"; others one line first.
    version = next((line for line in lines if line.startswith("Version:")), lines[0] if lines else "")
    return Launcher(mpiexec, kind_of(text), version)


def _version(mpiexec: str, timeout_s: float = 10) -> str:
    """What ``mpiexec --version`` prints, or '' if it fails or hangs. It runs in a process
    group of its own that dies with the launcher, so a hung launcher leaves nothing."""
    try:
        probe = subprocess.Popen([mpiexec, "--version"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                                 start_new_session=True, preexec_fn=_die_with_parent)
    except OSError:
        return ""
    try:
        return probe.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        return ""
    finally:
        _kill_group(probe.pid)
        probe.wait()


def mpiexec_command(procs: int, hosts: Hosts | None = None) -> list[str]:
    """``mpiexec ... -n procs``, as ``--procs`` would start it (without a job directory):
    for tools and tests that start MPI jobs of their own."""
    return find_launcher().launch(procs, hosts, forward=forwarded(os.environ)).command


def forwarded(env) -> list[str]:
    """The variables remote ranks need from the launcher's environment: those distnn sets
    (BLAS threads, its own ``DISTNN_*``) and the terminal's width."""
    names = [*BLAS_THREAD_VARS, "COLUMNS"]
    return [name for name in env if name in names or name.startswith("DISTNN_")]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the launcher dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def relaunch(procs: int, argv: list[str], program: tuple[str, ...] = ("-m", "distnn"),
             threads: int | None = None, hosts: Hosts | None = None, quiet: bool = False) -> int:
    """Run ``python -m mpi4py PROGRAM argv`` (by default ``distnn argv``) on ``procs`` ranks
    (on ``hosts``, else here), each with ``threads`` BLAS threads (default: the
    environment's, else 1); returns the job's exit status."""
    find_mpiexec()                   # a missing mpiexec is named before anything is made
    env = dict(os.environ)
    pin_blas_threads(env)
    if threads is not None:
        for name in BLAS_THREAD_VARS:
            env[name] = str(threads)
    job_dir = tempfile.mkdtemp(prefix="distnn-job-")
    env[JOB_DIR_VAR] = job_dir
    env[LAUNCHER_PID_VAR] = str(os.getpid())
    # The launcher pipes the ranks' output: tell rank 0 whether it reaches a terminal, and how wide.
    from distnn.progress import TTY_VAR

    env[TTY_VAR] = "1" if sys.stderr.isatty() else "0"
    if env[TTY_VAR] == "1":
        try:
            env["COLUMNS"] = str(os.get_terminal_size(sys.stderr.fileno()).columns)
        except OSError:
            pass
    # Until mpiexec runs, a stop request simply stops the launcher (KeyboardInterrupt),
    # which ends its probe of mpiexec too; from then on, requests are forwarded.
    previous = {signum: signal.signal(signum, _interrupt) for signum in FORWARDED_SIGNALS}
    try:
        launcher = find_launcher()
        launch = launcher.launch(procs, hosts, Path(job_dir), forward=forwarded(env), environ=env)
        for note in launch.notes if not quiet else ():
            sys.stderr.write(note + "\n")
        sys.stderr.flush()
        command = [*launch.command, sys.executable, "-m", "mpi4py", *program, *argv]
        relay, errors = _start_relay(Path(job_dir) / STALLED_NOTE)
        try:
            job = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stderr=errors,
                                   start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            os.close(errors)
            _finish_relay(relay)
            raise UsageError(f"cannot start {launcher.path}: {exc.strerror}") from exc
        os.close(errors)
        stopping = _Stopping(job, Path(job_dir) / STALLED_NOTE)
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, lambda signum, frame: stopping.escalate())
        try:
            code = stopping.wait()
        finally:
            _kill_group(job.pid)
            _finish_relay(relay)
        started = (Path(job_dir) / STARTED_NOTE).exists()
        stalled = (Path(job_dir) / STALLED_NOTE).exists()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        clean_up_after(job_dir)
    # A stall ends the job with MPI_Abort(4), but Hydra reports whichever rank it saw end
    # (9 for one it killed): the status is the stall's, whatever mpiexec says.
    code = EXIT_STALLED if stalled else (128 - code if code < 0 else code)
    # Rank 0 says it started through a file on this machine; on other hosts it cannot.
    if not started and hosts is None and not stopping.requests:
        what = "exited" if code == 0 else f"failed (exit status {code})"
        raise UsageError(f"{launcher.path} {what} without starting distnn's processes; is it "
                         "the mpiexec of the MPI that mpi4py uses? (set DISTNN_MPIEXEC, or "
                         "unset it)")
    return code


def _start_relay(note: Path) -> tuple[subprocess.Popen, int]:
    """The relay process (``relay.py``) and the write end of its pipe, for mpiexec's
    standard error. It runs in a session of its own, so that it outlives a killed
    launcher: it ends when mpiexec and the ranks have closed the pipe."""
    from distnn import relay

    read, write = os.pipe()
    try:
        process = subprocess.Popen([sys.executable, relay.__file__, str(note), STALLED_MARK],
                                   stdin=read, stdout=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        os.close(write)
        raise UsageError(f"cannot start {sys.executable}: {exc.strerror}") from exc
    finally:
        os.close(read)
    return process, write


def _finish_relay(relay: subprocess.Popen) -> None:
    """Once mpiexec is gone: the relay copies what is left; one held up by a process
    that still has the pipe open is killed."""
    try:
        relay.wait(timeout=RELAY_DRAIN_S)
    except subprocess.TimeoutExpired:
        relay.kill()
        relay.wait()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class _Stopping:
    """The launcher's side of stopping a job: each stop request (or a request left
    unanswered for ``STOP_GRACE_S``) sends the next signal of ``ESCALATION``."""

    def __init__(self, job: subprocess.Popen, stall_note: Path):
        self.job, self.requests, self.deadline = job, 0, None
        self.stall_note, self.stall_deadline = stall_note, None

    def escalate(self) -> None:
        if self.job.poll() is not None or self.requests >= len(ESCALATION):
            return
        signum = ESCALATION[self.requests]
        self.requests += 1
        self.deadline = time.monotonic() + (STOP_GRACE_S if self.requests == 1 else ESCALATE_S)
        if signum == signal.SIGKILL:
            _kill_job(self.job.pid)
            return
        try:
            self.job.send_signal(signum)
        except OSError:
            pass

    def wait(self) -> int:
        while True:
            try:
                return self.job.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if self.deadline is not None and now > self.deadline:
                    self.escalate()
                if self.stall_deadline is None and self.stall_note.exists():
                    self.stall_deadline = now + STALL_GRACE_S
                elif self.stall_deadline is not None and now > self.stall_deadline:
                    _kill_job(self.job.pid)      # mpiexec waits for a host it cannot reach
            except InterruptedError:
                continue


def _kill_group(pgid: int) -> None:
    """Whatever is left of mpiexec's process group (it runs in a session of its own)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _kill_job(pid: int) -> None:
    """A live mpiexec, its process group and every process under it: Open MPI puts the
    remote shells it starts (ssh) in process groups of their own, and one that waits for
    an unreachable host would outlive the job, holding its output open."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, index = [pid], 0
    while index < len(tree):
        tree += children.get(tree[index], [])
        index += 1
    _kill_group(pid)
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except OSError:
            pass


def _leave_note(name: str, text: str = "") -> None:
    """Write ``text`` into the launcher's job directory as ``name``; nothing without a
    launcher on this machine (plain mpiexec, or a rank on another host). Best effort: a
    note that cannot be written only costs the launcher its cleaning."""
    job_dir = os.environ.get(JOB_DIR_VAR)
    if job_dir and Path(job_dir).is_dir():
        try:
            (Path(job_dir) / name).write_text(text)
        except OSError:
            pass


def note_started() -> None:
    """Rank 0: tell the launcher that distnn's ranks are running (a launcher that exits
    without starting them is named, not taken for a finished run)."""
    _leave_note(STARTED_NOTE)


def note_run_directory(path: Path) -> None:
    """Rank 0: tell the launcher, if there is one, where this run writes."""
    _leave_note(RUN_DIR_NOTE, str(Path(path).resolve()))


def note_launcher_residue() -> None:
    """Rank 0: tell the launcher which temporary files its MPI launcher made for this job.

    Hydra's proxy (this rank's parent) keeps the hwloc topology it wrote to /tmp open and
    removes it when the job ends normally, but not when the job is aborted or killed; the
    distnn launcher removes it then. Other launchers leave nothing that is known here.
    """
    if not os.environ.get(JOB_DIR_VAR):
        return
    found = []
    try:
        descriptors = Path(f"/proc/{os.getppid()}/fd")
        for descriptor in descriptors.iterdir():
            target = os.readlink(descriptor)
            if target.startswith(HYDRA_TEMPORARY):
                found.append(target)
    except OSError:
        return
    if found:
        _leave_note(RESIDUE_NOTE, "\n".join(found))


def remove_temporary_files(run_dir: Path) -> None:
    """Temporary files of interrupted atomic writes (``.<name>.<random>.tmp``)."""
    for stale in Path(run_dir).glob(".*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass


def clean_up_after(job_dir: str) -> None:
    note = Path(job_dir) / RUN_DIR_NOTE
    try:
        run_dir = note.read_text()
    except OSError:
        run_dir = None
    if run_dir:
        remove_temporary_files(Path(run_dir))
    try:
        residue = (Path(job_dir) / RESIDUE_NOTE).read_text().split("\n")
    except OSError:
        residue = []
    for path in residue:
        if path.startswith(HYDRA_TEMPORARY):
            Path(path).unlink(missing_ok=True)
    shutil.rmtree(job_dir, ignore_errors=True)


def forget_orphaned_job() -> None:
    """Rank 0, at its end: if the launcher died (it was killed), do its cleaning."""
    job_dir, pid = os.environ.get(JOB_DIR_VAR), os.environ.get(LAUNCHER_PID_VAR, "")
    if not job_dir or not pid.isdigit():
        return
    if _alive(int(pid)):
        return                       # the launcher cleans up after the job
    clean_up_after(job_dir)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a killed process that is not yet reaped, a zombie, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
