"""parallel-ssh (the `pssh` library, libssh2) running a batch: the closest library contender.

    python3 -m bench.pssh_runner --key KEY --slots 4 --batch FILE user@127.0.0.2:PORT ...

parallel-ssh runs *one* command per host entry per call, so a batch goes in waves: the host
list holds each host `slots` times (one connection each, kept for the whole batch) and every
wave waits for its slowest job. A short last wave is padded with `true`. It lives in its own
process because parallel-ssh monkey-patches the standard library with gevent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--batch", type=Path, required=True)
    parser.add_argument("hosts", nargs="+", help="user@address:port")
    args = parser.parse_args()
    addresses, configs = [], []
    for spec in args.hosts:
        user, _, rest = spec.partition("@")
        address, _, port = rest.rpartition(":")
        for _ in range(args.slots):
            addresses.append(address)
            configs.append(HostConfig(user=user, port=int(port), private_key=str(args.key)))
    client = ParallelSSHClient(addresses, host_config=configs, pool_size=len(addresses))
    lines = [line for line in args.batch.read_text().splitlines() if line.strip()]
    width = len(addresses)
    for start in range(0, len(lines), width):
        wave = lines[start : start + width]
        wave += ["true"] * (width - len(wave))
        output = client.run_command("%s", host_args=wave)
        client.join(output)
        for host_out in output:
            if host_out.exception is not None:
                raise SystemExit(f"{host_out.host}: {host_out.exception}")
            for _ in host_out.stdout:
                pass
            if host_out.exit_code != 0:
                raise SystemExit(f"{host_out.host}: exit {host_out.exit_code}")


if __name__ == "__main__":
    main()
