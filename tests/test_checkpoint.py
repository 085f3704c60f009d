import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ringfl import checkpoint
from ringfl.checkpoint import CheckpointError


def test_round_trip_preserves_arrays_and_meta(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {"model": rng.standard_normal(1001).astype(np.float32), "steps": np.arange(3)}
    checkpoint.save(tmp_path / "c.npz", arrays, {"round": 7, "peer": "a"})
    got = checkpoint.load(tmp_path / "c.npz")
    assert got.meta == {"round": 7, "peer": "a"}
    assert set(got.arrays) == {"model", "steps"}
    np.testing.assert_array_equal(got.arrays["model"], arrays["model"])
    assert got.arrays["model"].dtype == np.float32
    assert checkpoint.digest(got.arrays["model"]) == checkpoint.digest(arrays["model"])


def test_digest_changes_with_one_bit() -> None:
    a = np.zeros(10, dtype=np.float32)
    b = a.copy()
    b.view(np.uint32)[3] ^= 1
    assert checkpoint.digest(a) != checkpoint.digest(b)


def test_corrupt_and_missing_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="bad.npz"):
        checkpoint.load(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "absent.npz")
    np.savez(tmp_path / "plain.npz", x=np.zeros(2))
    with pytest.raises(CheckpointError, match="not a ringfl checkpoint"):
        checkpoint.load(tmp_path / "plain.npz")


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    meta = np.frombuffer(b"{}", dtype=np.uint8)
    np.savez(path, __meta__=meta, obj=np.array([object()], dtype=object))
    with pytest.raises(CheckpointError, match="evil.npz"):
        checkpoint.load(path)


def test_killed_writer_never_leaves_a_torn_checkpoint(tmp_path: Path) -> None:
    """SIGKILL a process that rewrites the checkpoint in a loop; the file on disk must
    always load and be one of the complete versions."""
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"x": np.full(200_000, 0, dtype=np.int64)}, {"v": 0})
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        from ringfl import checkpoint
        for v in range(1, 10_000):
            checkpoint.save({str(path)!r}, {{"x": np.full(200_000, v, dtype=np.int64)}}, {{"v": v}})
            if v == 2:
                print("ready", flush=True)
        """
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        proc.kill()
        proc.wait(timeout=10)
        got = checkpoint.load(path)
        v = got.meta["v"]
        assert np.all(got.arrays["x"] == v)
    leftovers = [p for p in tmp_path.iterdir() if p.name != "c.npz"]
    # temp files of a killed writer may remain, but they never replace the checkpoint
    assert all(p.name.startswith(".c.npz.") for p in leftovers)
