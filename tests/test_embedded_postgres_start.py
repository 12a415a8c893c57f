"""The embedded PostgreSQL starts from a process that runs gRPC threads (the Batch client, a
Dagster code server, the tests' fake Batch service): never by forking that process, whose
forked child runs gRPC's fork handlers and can abort before it runs ``pg_ctl`` (exit -6,
``epoll_wait error: Bad file descriptor``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A process with a gRPC server and a client thread calling it all the time, that starts and
# stops the embedded server a few times, then runs one of its tools 100 times.
SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from concurrent import futures
    import grpc
    from robotoff_batch.predictions import embedded

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stop = threading.Event()

    def call_all_the_time():
        while not stop.is_set():
            try:
                channel.unary_unary("/robotoff.Test/Ping")(b"", timeout=0.05)
            except grpc.RpcError:
                pass

    threading.Thread(target=call_all_the_time, daemon=True).start()
    data_dir = sys.argv[1]
    for _ in range(3):
        embedded.ensure_embedded_postgres(embedded.Path(data_dir))
        embedded.stop_embedded_postgres(embedded.Path(data_dir))
    user = embedded._run_as_user()
    for _ in range(100):
        embedded._run(["/bin/true"], user=user, what="true")
    stop.set()
    print("ok")
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="the server's user is switched only as root")
def test_the_server_starts_beside_grpc_threads_without_a_fork(tmp_path: Path) -> None:
    from tests.pg_fixtures import private_tmp_dir

    data_dir = private_tmp_dir("robotoff-batch-grpc-pg-") / "data"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    # gRPC logs this on every fork() while its threads run: none happened
    assert "fork() handlers" not in done.stderr, done.stderr[-3000:]
