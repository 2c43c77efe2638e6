"""Shared test helpers: tiny synthetic sets, a results / checkpoint store per test, a local HTTP server."""
import contextlib
import http.server
import os
import threading

import pytest

from poseharness.data import synthetic
from poseharness.data.manifest import load_manifest


#: Where the learning tests' figures are kept for the end-of-run summary.
LEARNING_FIGURES = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def learning_figures(pytestconfig):
    """``learning_figures(text)`` prints a learning test's measured figures and repeats them in a "learning
    figures" section at the end of the run, so that `python -m pytest -q` (which hides a passing test's output)
    still shows what each build and machine measured."""
    kept = pytestconfig.stash.setdefault(LEARNING_FIGURES, [])

    def record(text: str) -> None:
        print("\n" + text)
        kept.append(text)
    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    kept = config.stash.get(LEARNING_FIGURES, [])
    if kept:
        import torch
        terminalreporter.write_sep("=", f"learning figures (torch {torch.__version__})")
        for text in kept:
            terminalreporter.write_line(text)


@pytest.fixture(autouse=True)
def torch_state_is_left_as_found():
    """A test (or a command it runs in this process) that changes torch's thread count, determinism or matmul
    precision and does not restore it fails here: a later test comparing weights trained in this process with
    weights trained in a subprocess would otherwise see other float reductions (CI stop 23: a bench's --threads 1
    leaked into the SIGKILL-resume test)."""
    import torch

    def state():
        return (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.get_float32_matmul_precision())
    before = state()
    yield
    after = state()
    if after != before:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])
        torch.set_float32_matmul_precision(before[2])
        pytest.fail(f"torch state (threads, deterministic, matmul precision) changed from {before} to {after} "
                    "and was not restored", pytrace=False)


def tiny_synthetic(tmp_path_factory, manifest: str):
    """A folder holding the tiny size of synthetic set ``manifest``, generated there (POSEHARNESS_DATA restored
    afterwards)."""
    root = tmp_path_factory.mktemp(manifest)
    old = os.environ.get("POSEHARNESS_DATA")
    os.environ["POSEHARNESS_DATA"] = str(root)
    try:
        synthetic.generate(load_manifest(manifest), size="tiny", jobs=1, progress=False)
    finally:
        if old is None:
            del os.environ["POSEHARNESS_DATA"]
        else:
            os.environ["POSEHARNESS_DATA"] = old
    return root


def use_store(monkeypatch, data_root, tmp_path):
    """Data from ``data_root``; this test's own results and checkpoints folders under ``tmp_path``."""
    monkeypatch.setenv("POSEHARNESS_DATA", str(data_root))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("POSEHARNESS_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny synthetic-coco generated once per test module."""
    return tiny_synthetic(tmp_path_factory, "synthetic-coco")


@pytest.fixture
def env(data_root, tmp_path, monkeypatch):
    """The tiny data, and this test's own results and checkpoints folders."""
    return use_store(monkeypatch, data_root, tmp_path)


@contextlib.contextmanager
def local_http_server(handler, state):
    """A threaded HTTP server on 127.0.0.1 serving with ``handler`` (which reads ``self.server.state``);
    yields its base URL and shuts it down afterwards."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
