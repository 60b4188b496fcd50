"""``--procs`` on the installed launcher: what Hydra and Open MPI are told (binding, root,
oversubscription, hosts, environment), and ``--hosts`` / ``--hostfile`` read and refused
with the file and line named. The jobs themselves: test_mpi_*.py (both MPIs, see the
Makefile's test-openmpi) and tests/cluster (hosts)."""

import pytest

from distnn import launchers
from distnn.errors import UsageError
from distnn.hosts import hosts_from, parse_hosts, read_hostfile
from distnn.launchers import HYDRA, OPEN_MPI, OTHER, Launcher
from helpers import distnn


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(launchers, "local_cores", lambda: 2)
    monkeypatch.delenv(launchers.EXTRA_ARGS_VAR, raising=False)


def as_root(monkeypatch, root: bool) -> None:
    monkeypatch.setattr(launchers.os, "geteuid", lambda: 0 if root else 1000)


def test_hydra_binds_each_rank_to_a_core_and_needs_nothing_else(two_cores):
    launch = Launcher("mpiexec", HYDRA).launch(3, environ={})
    assert launch.command == ["mpiexec", "-bind-to", "core", "-n", "3"]
    assert launch.oversubscribed
    assert launch.notes == ["note: 3 processes on 2 cores: ranks share cores, so timings "
                            "measure contention, not scaling"]


@pytest.mark.parametrize("root", [True, False])
def test_open_mpi_gets_root_oversubscription_binding_and_its_osc_component(two_cores, monkeypatch,
                                                                             root):
    as_root(monkeypatch, root)
    launch = Launcher("mpiexec", OPEN_MPI).launch(3, forward=["OMP_NUM_THREADS", "DISTNN_X"],
                                                  environ={})
    assert launch.command == ["mpiexec", *(["--allow-run-as-root"] if root else []),
                              "--oversubscribe", "--bind-to", "core:overload-allowed", "--mca",
                              "osc", "^ucx", "-x", "DISTNN_X", "-x", "OMP_NUM_THREADS", "-n", "3"]
    root_notes = [note for note in launch.notes if "root" in note]
    assert root_notes == (["note: running as root: distnn passes --allow-run-as-root to Open "
                           "MPI's mpiexec"] if root else [])


def test_open_mpi_is_not_oversubscribed_within_the_cores_nor_overridden(two_cores, monkeypatch):
    as_root(monkeypatch, False)
    command = Launcher("mpiexec", OPEN_MPI).launch(2, environ={"OMPI_MCA_osc": "sm"}).command
    assert "--oversubscribe" not in command and "--mca" not in command


def test_user_arguments_come_before_the_process_count(two_cores):
    environ = {launchers.EXTRA_ARGS_VAR: "-launcher ssh -launcher-exec '/my dir/rsh'"}
    command = Launcher("mpiexec", HYDRA).launch(2, environ=environ).command
    assert command == ["mpiexec", "-bind-to", "core", "-launcher", "ssh", "-launcher-exec",
                       "/my dir/rsh", "-n", "2"]
    with pytest.raises(UsageError, match="DISTNN_MPIEXEC_ARGS=.*cannot be split"):
        Launcher("mpiexec", HYDRA).launch(2, environ={launchers.EXTRA_ARGS_VAR: "-x 'open"})


def test_an_unknown_launcher_gets_only_the_process_count(two_cores):
    assert Launcher("mpiexec", OTHER).launch(4, environ={}).command == ["mpiexec", "-n", "4"]
    with pytest.raises(UsageError, match="--hosts needs MPICH's or Open MPI's mpiexec"):
        Launcher("mpiexec", OTHER).launch(2, parse_hosts("a:1,b:1"), environ={})


def test_hosts_are_spelled_for_each_launcher(two_cores, monkeypatch, tmp_path):
    as_root(monkeypatch, False)
    hosts = parse_hosts("node1:2,node2")
    assert hosts.slots == (("node1", 2), ("node2", 1))
    hydra = Launcher("mpiexec", HYDRA).launch(3, hosts, tmp_path, environ={})
    assert hydra.command[1:] == ["-bind-to", "core", "-hosts", "node1:2,node2:1", "-n", "3"]
    assert not hydra.oversubscribed
    ompi = Launcher("mpiexec", OPEN_MPI).launch(4, hosts, tmp_path, environ={})
    assert ompi.command[ompi.command.index("--host") + 1] == "node1:3,node2:1"   # 4 on 3 slots
    assert ompi.oversubscribed and "--oversubscribe" not in ompi.command


def test_a_hostfile_is_rewritten_in_the_launchers_own_syntax(two_cores, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the cluster\nnode1 slots=2\n\nnode2:3   # a comment\n10.0.0.7\n")
    hosts = read_hostfile(str(hostfile))
    assert hosts.slots == (("node1", 2), ("node2", 3), ("10.0.0.7", 1))
    job = tmp_path / "job"
    job.mkdir()
    hydra = Launcher("mpiexec", HYDRA).launch(6, hosts, job, environ={}).command
    assert hydra[hydra.index("-f") + 1] == str(job / "hostfile")
    assert (job / "hostfile").read_text() == "node1:2\nnode2:3\n10.0.0.7:1\n"
    ompi = Launcher("mpiexec", OPEN_MPI).launch(4, hosts, job, environ={}).command
    assert ompi[ompi.index("--hostfile") + 1] == str(job / "hostfile")
    assert (job / "hostfile").read_text() == "node1 slots=2\nnode2 slots=2\n"


def test_ranks_fill_each_hosts_slots_then_wrap_around():
    hosts = parse_hosts("a:2,b:1")
    assert hosts.counts(3).slots == (("a", 2), ("b", 1))
    assert hosts.counts(2).slots == (("a", 2),)
    assert hosts.counts(5).slots == (("a", 4), ("b", 1))
    assert hosts.placement(5) == [("a", range(0, 4)), ("b", range(4, 5))]


@pytest.mark.parametrize("text, message", [
    ("node1:0", "--hosts, entry 1: the slot count of node1 must be an integer in [1, 4096], "
                "got '0'"),
    ("node1:2,,node2", "--hosts 'node1:2,,node2': entry 2 is empty"),
    ("node1:x", "the slot count of node1 must be an integer"),
    ("bad/host:2", "--hosts, entry 1: 'bad/host' is not a host name"),
    ("a:1,b:1,a:2", "--hosts a:1,b:1,a:2, entry 3: a is listed already (entry 1)"),
    ("node1 slots=2", "--hosts, entry 1: 'node1 slots=2' is not a host entry"),
])
def test_bad_hosts_are_refused_naming_the_entry(text, message):
    with pytest.raises(UsageError, match="^--hosts") as refused:
        parse_hosts(text)
    assert message in str(refused.value)


@pytest.mark.parametrize("content, message", [
    ("node1:2\nnode2:-1\n", "line 2: the slot count of node2 must be an integer"),
    ("node1 slots=x\n", "line 1: the slot count of node1 must be an integer"),
    ("node1 max_slots=4\n", "line 1: 'node1 max_slots=4' is not a host entry"),
    ("\n# only a comment\n", "lists no host"),
    ("node1\nnode1:2\n", "line 2: node1 is listed already (line 1)"),
])
def test_bad_hostfiles_are_refused_naming_the_file_and_line(tmp_path, content, message):
    hostfile = tmp_path / "hosts"
    hostfile.write_text(content)
    with pytest.raises(UsageError, match=f"--hostfile {hostfile}") as refused:
        read_hostfile(str(hostfile))
    assert message in str(refused.value)


def test_missing_hostfiles_and_two_host_flags_are_refused(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        read_hostfile(str(tmp_path / "none"))
    with pytest.raises(UsageError, match="--hosts and --hostfile both name the hosts"):
        hosts_from("a:1", str(tmp_path / "none"))


def test_train_with_a_bad_hostfile_exits_2_before_anything_is_written(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1:2\nnode2:two\n")
    done = distnn(["train", "--procs", "4", "--hostfile", str(hostfile), "--strategy", "ps-sync",
                   "--out", str(tmp_path / "run")])
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert f"--hostfile {hostfile}, line 2: the slot count of node2" in done.stderr
    assert not (tmp_path / "run").exists()


def test_info_shows_the_launcher_and_where_ranks_go():
    done = distnn(["info", "--hosts", "node1:2,node2:2", "--procs", "4"])
    assert done.returncode == 0, done.stderr
    rows = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert rows["placement"] == "node1: ranks 0-1; node2: ranks 2-3"
    assert rows["launcher"].startswith(("MPICH's Hydra", "Open MPI (PRRTE)"))
    assert "-n 4" in rows["launch"] and "node1:2,node2:2" in rows["launch"]
    assert rows["binding"].startswith("one core per rank")


def test_info_warns_when_the_launcher_belongs_to_the_other_mpi(two_cores):
    from distnn.info import launch_rows

    mismatched = launch_rows(Launcher("mpiexec", HYDRA), 2, None, "Open MPI v5.0.11, package")
    assert "--procs would start single-process jobs" in mismatched["warning"]
    matched = launch_rows(Launcher("mpiexec", OPEN_MPI), 2, None, "Open MPI v5.0.11, package")
    assert "warning" not in matched
    assert matched["placement"] == "2 ranks on this machine (2 cores)"
