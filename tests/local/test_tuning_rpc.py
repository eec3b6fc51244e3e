"""Tuning measured on devices through a TVM RPC tracker (``[neo] rpc_tracker``, ``rpc_keys``).

A real tracker and a real RPC server (TVM's ``tvm.rpc.tracker`` and ``tvm.rpc.server``, each in
its own process) run on 127.0.0.1 with free ports; a tiny CNN is compiled through the local
backend with the tracker configured, and the server's own log shows the candidates it loaded. A
second server runs inside the emulated aarch64 root (``qemu-aarch64``, see
:mod:`tests.support.qemu`) for an ARM64 target built here with the cross compiler; its timings
mean nothing (emulation), it exercises the protocol, and the ARM64 artifact is then run on it
through RPC and compared with onnxruntime. Without the root that test skips, saying why, except
under ``CI=true``, where it fails (as in ``test_arm_emulation.py``).

Settings parsing and the probe's answers (unreachable tracker, unknown key, busy device) are
checked without compiling.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_neo.local.config import ENV_JOB_CONFIG, LocalJobConfig
from airflow_neo.local.settings import CompileSettings, parse_rpc_keys, parse_rpc_tracker
from tests.support import qemu

pytestmark = pytest.mark.timeout(900)

X86_KEY = "neo-test-x86"
ARM_KEY = "neo-test-arm64"
REGISTER_TIMEOUT_S = 180.0  # the emulated server imports TVM first (20-40 s under qemu)


# ----------------------------------------------------------------------------- settings (pure)


def test_rpc_settings_are_parsed_and_validated():
    settings = CompileSettings(rpc_tracker="10.0.0.5:9190", rpc_keys="rasp4b=pi4, LINUX/ARM64=graviton2")
    assert settings.rpc_keys == {"rasp4b": "pi4", "linux-arm64": "graviton2"}
    assert CompileSettings(rpc_tracker="t:1", rpc_keys='{"linux-arm64": "graviton2", "ML_C6G": "c6g"}').rpc_keys == {
        "linux-arm64": "graviton2", "ml_c6g": "c6g"}
    assert parse_rpc_tracker("[::1]:9190") == ("::1", 9190)
    assert parse_rpc_keys(None) == {} and CompileSettings().rpc_arguments() == {}
    assert settings.rpc_arguments() == {"rpc_tracker": "10.0.0.5:9190", "rpc_keys": settings.rpc_keys}
    config = LocalJobConfig(store="/tmp/jobs.db", compile=settings)
    assert LocalJobConfig.from_json(config.to_json()) == config
    bad = [
        ({"rpc_tracker": "10.0.0.5"}, r"rpc_tracker '10\.0\.0\.5' is not host:port"),
        ({"rpc_tracker": "h:99999"}, r"rpc_tracker 'h:99999': the port must be a number from 1 to 65535"),
        ({"rpc_tracker": "http://h:9190"}, "is not host:port"),
        ({"rpc_keys": "rasp4b=pi4"}, "rpc_tracker is not set"),
        ({"rpc_tracker": "h:1", "rpc_keys": "jetson_nano=nano"}, r"'jetson_nano' is not a target .* LINUX/ARM64"),
        ({"rpc_tracker": "h:1", "rpc_keys": "rasp4b"}, r"entry 'rasp4b' is not target=key"),
        ({"rpc_tracker": "h:1", "rpc_keys": "rasp4b=a:b"}, r"the key for 'rasp4b' must be a tracker key .*'a:b'"),
        ({"rpc_tracker": "h:1", "rpc_keys": "[1]"}, "target=key"),
        ({"rpc_tracker": "h:1", "rpc_keys": "rasp4b=a, RASP4B=b"}, "two keys"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            CompileSettings(**kwargs)


def test_hook_reads_the_rpc_options(tmp_path, monkeypatch):
    from airflow_neo.hooks.local import local_job_config
    from airflow_neo.get_provider_info import get_provider_info

    monkeypatch.setenv("AIRFLOW__NEO__RPC_TRACKER", "127.0.0.1:9190")
    monkeypatch.setenv("AIRFLOW__NEO__RPC_KEYS", "LINUX/ARM64=board")
    config = local_job_config(store=str(tmp_path / "jobs.db"))
    assert config.compile.rpc_tracker == "127.0.0.1:9190" and config.compile.rpc_keys == {"linux-arm64": "board"}
    assert LocalJobConfig.from_env({ENV_JOB_CONFIG: config.to_json()}).compile == config.compile
    options = get_provider_info()["config"]["neo"]["options"]
    assert options["rpc_tracker"]["default"] == options["rpc_keys"]["default"] == ""


# ----------------------------------------------------------------------------- tracker and servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Process:
    """A process in its own group, its output in a log file; stopped with its helpers."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None):
        self.log = log
        self._handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._handle, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this process leads (its helpers)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        self._handle.close()


def _registered(port: int) -> dict[str, int]:
    from airflow_neo.local import tuning_rpc

    tracker = tuning_rpc._tracker("127.0.0.1", port)
    try:
        return tuning_rpc._registered(tracker.summary())
    finally:
        tracker.close()


def _wait_for(what: str, check, timeout: float, process: _Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited ({process.proc.returncode}):\n{process.text()[-3000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f} s:\n{process.text()[-3000:]}")


#: A tracker (tvm.rpc.tracker's, in this process: ``python -m tvm.exec.rpc_tracker`` would import
#: TVM twice, for itself and for a helper process, a quarter of a minute each on a busy machine).
_TRACKER = """
import sys
from tvm.rpc.tracker import PopenTrackerServerState
port = int(sys.argv[1])
PopenTrackerServerState("127.0.0.1", port, port + 1).thread.join()
"""

#: An RPC server: tvm.rpc.server's listen loop in this process (sessions are forked from it). Also
#: the aarch64 server: TVM's ``rpc.Server`` (``python -m tvm.exec.rpc_server``) starts a helper
#: Python with sys.executable, which qemu-user cannot exec without binfmt_misc.
_SERVER = """
import sys
from tvm.rpc.server import PopenRPCServerState
tracker_port, port, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
state = PopenRPCServerState("127.0.0.1", port, port + 1, tracker_addr=("127.0.0.1", tracker_port), key=key,
                            custom_addr="127.0.0.1")
print("serving", state.port, flush=True)
state.thread.join()
"""


@dataclass
class _Rig:
    """The tracker's port and the RPC servers, all started at once by the :func:`rig` fixture."""

    port: int
    x86: _Process
    arm: _Process | None
    arm_missing: str = ""  #: why there is no emulated server


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """A tracker and its servers, started together (each process imports TVM, 20-40 s for the
    emulated one, which thus does so while the x86 tests run); the fixtures below wait for each."""
    pytest.importorskip("tvm")
    pytest.importorskip("tornado")  # the tracker's (only the tracker's) dependency
    port = _free_port()
    logs = tmp_path_factory.mktemp("rpc")
    started = [_Process([sys.executable, "-c", _TRACKER, str(port)], logs / "tracker.log")]
    try:
        started.append(_Process([sys.executable, "-c", _SERVER, str(port), str(_free_port()), X86_KEY],
                                logs / "x86-server.log"))
        arm, missing = None, ""
        try:
            root = qemu.find_root()
        except qemu.EmulationUnavailable as err:
            missing = str(err)
        else:
            arm = _Process(root.command("-c", _SERVER, str(port), str(_free_port()), ARM_KEY), logs / "arm-server.log",
                           env=root.env())
            started.append(arm)
        yield _Rig(port, started[1], arm, missing)
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="module")
def tracker(rig) -> int:
    return rig.port


@pytest.fixture(scope="module")
def x86_server(rig) -> _Process:
    _wait_for(f"the RPC server {X86_KEY} registered", lambda: _registered(rig.port).get(X86_KEY), 90, rig.x86)
    return rig.x86


@pytest.fixture(scope="module")
def arm_server(rig) -> _Process:
    if rig.arm is None:
        if os.environ.get("CI"):
            pytest.fail(f"ARM64 emulation is required under CI: {rig.arm_missing}", pytrace=False)
        pytest.skip(rig.arm_missing)
    _wait_for(f"the emulated RPC server {ARM_KEY} registered", lambda: _registered(rig.port).get(ARM_KEY),
              REGISTER_TIMEOUT_S, rig.arm)
    return rig.arm


# ----------------------------------------------------------------------------- the probe


def test_probe_says_why_no_device_can_measure(tracker, x86_server, monkeypatch):
    """Unreachable tracker, a key no server registered, all devices busy: each a reason, quickly."""
    from airflow_neo.local import tuning_rpc

    lines: list[str] = []
    _, reason = tuning_rpc.probe(tuning_rpc.RpcDevice("127.0.0.1", _free_port(), X86_KEY), lines.append)
    assert "is unreachable" in reason and "[neo] rpc_tracker" in reason
    _, reason = tuning_rpc.probe(tuning_rpc.RpcDevice("127.0.0.1", tracker, "nobody"), lines.append)
    assert "no RPC server with key 'nobody'" in reason and f"{X86_KEY} (1)" in reason
    device, reason = tuning_rpc.probe(tuning_rpc.RpcDevice("127.0.0.1", tracker, X86_KEY), lines.append)
    assert reason is None and device.servers == 1 and device.threads and lines
    held = tuning_rpc.create_session(device_config(device))  # the only device is now busy
    try:
        monkeypatch.setattr(tuning_rpc, "DEVICE_WAIT_S", 2.0)
        _, reason = tuning_rpc.probe(tuning_rpc.RpcDevice("127.0.0.1", tracker, X86_KEY), lines.append)
        assert "became free within 2 s" in reason
    finally:
        del held
    _wait_for("the device free again", lambda: tuning_rpc.probe(device, lines.append)[1] is None, 30, x86_server)


def device_config(device):
    from tvm.s_tir.meta_schedule.runner import RPCConfig

    return RPCConfig(device.host, device.port, device.key, session_timeout_sec=60)


# ----------------------------------------------------------------------------- compiles


def _ort_reference(archive: Path, data):
    import onnxruntime as ort

    with tarfile.open(archive) as tar:
        model = tar.extractfile("model.onnx").read()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"input0": data})[0]


def _platform_name(request: dict) -> str:
    platform_ = request["OutputConfig"]["TargetPlatform"]
    return f"{platform_['Os']}/{platform_['Arch']}"


def test_tuning_measures_on_the_rpc_device(tracker, x86_server, tmp_path):
    """A job for this machine's platform, with the tracker and a key for it: the default schedules
    and the trials are measured on the RPC server (it loads each candidate), and the artifact
    still matches onnxruntime."""
    pytest.importorskip("xgboost")
    np = pytest.importorskip("numpy")
    from airflow_neo import runtime
    from airflow_neo.core import status as st
    from airflow_neo.local import runner
    from airflow_neo.local.store import JobStore
    from tests.local.test_tuning import _tiny_cnn_archive, tiny_cnn_request

    archive, _ = _tiny_cnn_archive(tmp_path / "tiny.tar.gz")
    request = tiny_cnn_request("rpc-tuned", archive, tmp_path / "out")
    settings = CompileSettings(tuning_trials=4, tuning_database=str(tmp_path / "tuning"), cache_max_bytes=0,
                               rpc_tracker=f"127.0.0.1:{tracker}", rpc_keys={_platform_name(request): X86_KEY})
    store_path = tmp_path / "state" / "jobs.db"
    store = JobStore(store_path)
    loaded_before = x86_server.text().count("load_module")
    store.create(request)
    assert runner.run_job(store_path, "rpc-tuned", poll_interval=0.2, settings=settings) == st.COMPLETED, (
        store.describe("rpc-tuned"))
    tuning = store.compile_metadata("rpc-tuned")["tuning"]
    log = store.log_path("rpc-tuned").read_text()
    assert tuning["measured_on"].startswith(f"rpc {X86_KEY} via tracker 127.0.0.1:{tracker} (1 device")
    assert f"measuring on the devices of key '{X86_KEY}'" in log
    assert tuning["new_trials"] > 0 and "skipped" not in tuning
    assert all(entry["default_secs"] for entry in tuning["kernels"].values())  # baselines measured there
    loaded = x86_server.text().count("load_module") - loaded_before
    assert loaded >= tuning["new_trials"] + len(tuning["kernels"]), x86_server.text()[-2000:]

    data = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype("float32")
    artifact = store.describe("rpc-tuned")["ModelArtifacts"]["S3ModelArtifacts"]
    got = runtime.load(artifact).run({"input0": data})[0]
    np.testing.assert_allclose(got, _ort_reference(archive, data), rtol=1e-4, atol=1e-4)


def test_unreachable_tracker_skips_tuning_and_the_job_completes(tmp_path):
    pytest.importorskip("tvm")
    from airflow_neo.core import status as st
    from airflow_neo.local import runner
    from airflow_neo.local.store import JobStore
    from tests.local.test_tuning import _tiny_cnn_archive, tiny_cnn_request

    archive, _ = _tiny_cnn_archive(tmp_path / "tiny.tar.gz")
    request = tiny_cnn_request("rpc-down", archive, tmp_path / "out")
    port = _free_port()  # nothing listens there
    settings = CompileSettings(tuning_trials=4, tuning_database=str(tmp_path / "tuning"), cache_dir=str(tmp_path / "cache"),
                               rpc_tracker=f"127.0.0.1:{port}", rpc_keys={_platform_name(request): X86_KEY})
    store_path = tmp_path / "state" / "jobs.db"
    store = JobStore(store_path)
    store.create(request)
    assert runner.run_job(store_path, "rpc-down", poll_interval=0.2, settings=settings) == st.COMPLETED, (
        store.describe("rpc-down"))
    tuning = store.compile_metadata("rpc-down")["tuning"]
    assert tuning["new_trials"] == 0 and "measured_on" not in tuning
    assert f"the RPC tracker 127.0.0.1:{port} ([neo] rpc_tracker) is unreachable" in tuning["skipped"]
    assert f"tuning: skipped: the RPC tracker 127.0.0.1:{port} ([neo] rpc_tracker) is unreachable" in (
        store.log_path("rpc-down").read_text())
    # not cached: the same job later, with the devices back, must tune rather than hit this artifact
    assert tuning["skipped_transient"] and "not cached: tuning was skipped" in store.log_path("rpc-down").read_text()
    assert not list((tmp_path / "cache").glob("entries/*/model.tar.gz"))


def test_arm64_candidates_are_measured_on_an_emulated_device(tracker, arm_server, tmp_path):
    """LINUX/ARM64, cross-compiled here: candidates linked with aarch64-linux-gnu-gcc and measured
    by the RPC server in the emulated aarch64 root; the artifact then runs there and matches
    onnxruntime (x86-64)."""
    pytest.importorskip("xgboost")
    np = pytest.importorskip("numpy")
    from tvm import relax, rpc
    import tvm

    from airflow_neo.local.compiler import compile_model
    from tests.local.test_tuning import _tiny_cnn_archive, tiny_cnn_request

    archive, _ = _tiny_cnn_archive(tmp_path / "tiny.tar.gz")
    request = tiny_cnn_request("rpc-arm64", archive, tmp_path / "out")
    request["OutputConfig"]["TargetPlatform"] = {"Os": "LINUX", "Arch": "ARM64"}
    artifact = tmp_path / "arm64.tar.gz"
    lines: list[str] = []
    metadata = compile_model(request, str(archive), str(artifact), log=lines.append, work_dir=tmp_path / "work",
                             tuning_trials=2, tuning_database=str(tmp_path / "tuning"),
                             rpc_tracker=f"127.0.0.1:{tracker}", rpc_keys={"LINUX/ARM64": ARM_KEY},
                             verify="off")  # the artifact is checked below, on the emulated RPC device
    tuning = metadata["tuning"]
    assert tuning["measured_on"].startswith(f"rpc {ARM_KEY} via tracker"), "\n".join(lines)
    assert all(entry["default_secs"] for entry in tuning["kernels"].values())
    assert tuning["new_trials"] + tuning.get("config_trials", 0) > 0
    assert arm_server.text().count("load_module") >= len(tuning["kernels"]), arm_server.text()[-2000:]

    # the artifact itself, run on the emulated device through the tracker
    with tarfile.open(artifact) as tar:
        library = tar.extractfile("model.so").read()
    (tmp_path / "model.so").write_bytes(library)
    data = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype("float32")
    session = rpc.connect_tracker("127.0.0.1", tracker).request(ARM_KEY, session_timeout=120, max_retry=1)
    session.upload(str(tmp_path / "model.so"))
    device = session.cpu()
    vm = relax.VirtualMachine(session.load_module("model.so"), device)
    got = vm["main"](tvm.runtime.tensor(data, device)).numpy()
    np.testing.assert_allclose(got, _ort_reference(archive, data), rtol=1e-4, atol=1e-4)
