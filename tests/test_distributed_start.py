"""Starting a multi-process run that cannot form: one line and exit status 2, never JAX's abort.

JAX's client aborts the process (a C++ stack, status 134) when the cluster
does not form or the coordinator is not JAX's; `jaxmm.parallel.distributed`
checks the address first and ends a wait that runs out by itself.
"""
import functools
import http.server
import re
import socket
import threading
import time

import pytest

from jaxmm.parallel import distributed

from conftest import cli_error_line
from test_cli_faults import _command, _run
from test_multiprocess import SIGLIP, _free_port

CONFIG = "configs/siglip_shapes.py"


def _train_args(tmp_path, data_dir, *cluster):
  return ["train", "--config", CONFIG, "--workdir", str(tmp_path / "run"),
          f"--config.data.data_dir={data_dir}"] + [f"--config.{o}" for o in SIGLIP] + list(cluster)


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:99999", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:abc", "expected HOST:PORT"),
])
def test_an_invalid_port_is_one_line(capsys, tmp_path, shapes_data_dir, address, expected):
  line = cli_error_line(
      capsys,
      _train_args(tmp_path, shapes_data_dir, "--coordinator-address", address, "--num-processes",
                  "2", "--process-id", "1", "--distributed-timeout", "5"))
  assert line.startswith("jaxmm train: error: --coordinator-address=") and expected in line, line
  assert not (tmp_path / "run").exists()


@pytest.fixture
def web_server():
  """The port of an HTTP server on the loopback interface: something that is not JAX's."""
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/nonexistent")
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server.server_address[1]
  server.shutdown()
  server.server_close()


def test_a_coordinator_address_where_another_service_listens_is_one_line(
    capsys, tmp_path, shapes_data_dir, web_server):
  line = cli_error_line(
      capsys,
      _train_args(tmp_path, shapes_data_dir, "--coordinator-address", f"127.0.0.1:{web_server}",
                  "--num-processes", "2", "--process-id", "1", "--distributed-timeout", "60"))
  assert line.startswith(f"jaxmm train: error: --coordinator-address=127.0.0.1:{web_server}: "
                         "something other than a JAX coordinator listens there"), line


def test_process_0_alone_says_what_it_waits_for_and_gives_up_with_one_line(
    tmp_path, shapes_data_dir, tiny_overrides):
  address = f"127.0.0.1:{_free_port()}"
  result = _run(
      _command(tmp_path / "run", shapes_data_dir, tiny_overrides) + [
          "--coordinator-address", address, "--num-processes", "2", "--process-id", "0",
          "--distributed-timeout", "3"
      ])
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.splitlines() == [
      f"jaxmm train: process 0 waiting for 2 processes to join at {address} (up to 3 s)",
      f"jaxmm train: error: the cluster did not form within 3 s: 1 of 2 processes joined at "
      f"{address}; start every process with --coordinator-address {address} --num-processes 2 "
      "and its own --process-id (0 .. 1), or raise --distributed-timeout"
  ]


def test_process_0_reports_how_many_processes_joined(capsys, monkeypatch):
  """Process 0 serves the coordinator; each process that joined holds a connection to it."""
  monkeypatch.setattr(distributed, "REPORT_EVERY_S", 0.1)
  with socket.create_server(("127.0.0.1", 0)) as coordinator:
    address = f"127.0.0.1:{coordinator.getsockname()[1]}"
    explicit = dict(coordinator_address=address, num_processes=3, process_id=0)
    clients = [socket.create_connection(coordinator.getsockname()) for _ in range(2)]
    accepted = [coordinator.accept()[0] for _ in clients]
    # pylint: disable-next=protected-access
    with distributed._Wait("jaxmm train", 60, explicit, "explicit"):
      time.sleep(0.5)
    for connection in clients + accepted:
      connection.close()
  first, *reports = capsys.readouterr().err.splitlines()
  assert first == (
      f"jaxmm train: process 0 waiting for 3 processes to join at {address} (up to 60 s)")
  assert reports and all(
      re.fullmatch(rf"jaxmm train: 2 of 3 processes joined at {address} after \d+ s", line)
      for line in reports), reports
