"""Scenario 2: the master's CPU per job at saturation, with uvloop and with asyncio's own loop.

4 hosts x 4 slots of `echo ID`. Two views: the CLI's whole process (imports, handshakes, the
journal and the output encoding included) and bench.probe's run phase (from every host ready to
the last result: the per-job cost proper). Target: <= 100 us of master CPU per job.
"""

from __future__ import annotations

from collections.abc import Callable

from .harness import (
    Bed,
    Sample,
    Table,
    Target,
    anet_argv,
    anet_env,
    interleave,
    median,
    probe,
    timed,
    write_batch,
)  # fmt: skip

NAME = "cpu"
HOSTS, SLOTS = 4, 4


def run(bed: Bed) -> list[Table]:
    cluster = bed.cluster(HOSTS)
    specs = [f"{SLOTS}/{name}" for name in cluster.names]
    size = 5_000 if bed.quick else 20_000
    batch = write_batch(bed.path(f"echo-{size}.txt"), (f"echo {i}" for i in range(size)))
    probe_args = ["--ssh-config", str(cluster.ssh_config), "--batch", str(batch)]
    probe_args += [arg for spec in specs for arg in ("-S", spec)]
    contenders: dict[str, Callable[[], Sample]] = {}
    for uvloop in (True, False):
        env = anet_env(bed.root, uvloop=uvloop)
        loop = "uvloop" if uvloop else "asyncio"
        contenders[f"CLI, {loop}"] = lambda env=env: timed(
            anet_argv(cluster.ssh_config, specs, str(batch)), env=env
        )
        contenders[f"run phase, {loop}"] = lambda env=env: probe(probe_args, env=env)
    # asyncssh's own default cipher, which anet overrides with AES-GCM first (connect.py): its
    # chacha20-poly1305 builds three cipher contexts a packet in Python. Forced here through
    # the ssh config's Ciphers, which asyncssh honours, to keep that choice's gain measured.
    chacha = bed.path("ssh_config_chacha")
    chacha.write_text(
        "Host *\n    Ciphers chacha20-poly1305@openssh.com\n\n" + cluster.ssh_config.read_text()
    )
    chacha_args = [str(chacha) if arg == str(cluster.ssh_config) else arg for arg in probe_args]
    contenders["run phase, uvloop, chacha20-poly1305"] = lambda: probe(
        chacha_args, env=anet_env(bed.root)
    )
    samples = interleave(contenders, bed.runs, what="cpu")
    table = Table(
        f"2. Master CPU per job at saturation: {size:,} x `echo ID`, {HOSTS} hosts x {SLOTS} slots",
        "`CLI` = `anet run` as a user runs it (CPU of the whole process, start-up, journal and "
        "output included); `run phase` = bench.probe, CPU from every host ready to the last "
        "result (no output encoding, no journal). uvloop off = `ANET_NO_UVLOOP=1`.",
        ["master", "median wall s", "jobs/s", "CPU s", "CPU us/job", "of which system"],
    )
    per_job = {}
    for name, runs in samples.items():
        wall = median(runs, lambda s: s.extra.get("run", s.wall))
        cpu = median(runs, lambda s: s.cpu)
        per_job[name] = cpu / size * 1e6
        system = (
            f"{median(runs, lambda s: s.extra['system']) / size * 1e6:.0f}"
            if runs[0].extra
            else "-"
        )
        table.rows.append(
            [name, f"{wall:.2f}", f"{size / wall:,.0f}", f"{cpu:.2f}", f"{per_job[name]:,.0f}",
             system]
        )  # fmt: skip
    table.notes.append("For `run phase` rows the wall time is the run phase only.")
    for loop in ("uvloop", "asyncio"):
        for view in ("run phase", "CLI"):
            value = per_job[f"{view}, {loop}"]
            table.targets.append(
                Target(f"<= 50 us/job ({view}, {loop})", f"{value:.0f} us", value <= 50)
            )
    return [table]
