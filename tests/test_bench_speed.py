"""The benchmarks' comparison with a paper's published speed (method.yaml ``speed``), worked by hand."""
import pytest

from poseharness.bench.oracle import published_comparison
from poseharness.errors import HarnessError
from poseharness.methods import load_method_file


def test_decode_time_against_published_fps():
    result = {"images": 50, "seconds": {"decode": 10.0}}            # 200 ms per image = 5 images/s
    line = published_comparison(result, {"fps": 5.2, "hardware": "one CPU process", "note": "pure Python"})
    assert "ours 200.0 ms/image = 5.0 images/s" in line
    assert "published 5.2 images/s (one CPU process, pure Python)" in line
    assert "ratio ours/published 1.0x" in line                        # 5.0 / 5.2 = 0.96
    assert published_comparison(result, None) is None
    assert published_comparison({"images": 0, "seconds": {"decode": 0.0}}, {"fps": 1, "hardware": "x"}) is None


def test_speed_entry_is_checked_by_the_method_schema(tmp_path):
    toy = (__import__("pathlib").Path(__file__).parent / "fixtures" / "methods" / "toy" / "method.yaml").read_text()
    spec = tmp_path / "toy" / "method.yaml"
    spec.parent.mkdir()
    spec.write_text(toy + "speed: {decode: {fps: 5.2, hardware: CPU}}\n")
    assert load_method_file(spec).raw["speed"]["decode"]["fps"] == 5.2
    spec.write_text(toy + "speed: {decode: {fps: -1, hardware: CPU}}\n")
    with pytest.raises(HarnessError, match="field speed.decode.fps"):
        load_method_file(spec)
