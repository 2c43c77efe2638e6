from pathlib import Path

import pytest
import yaml

from poseharness import paths
from poseharness.data.manifest import load_manifest, load_manifest_file, manifest_names, parse_manifest
from poseharness.errors import HarnessError

ALL = ["coco", "crowdpose", "ochuman", "synthetic-coco", "synthetic-crowdpose", "synthetic-ochuman"]


def test_every_manifest_validates():
    assert set(ALL) <= set(manifest_names())
    for name in manifest_names():
        m = load_manifest(name)
        assert m.name == name
        assert m.protocol in ("coco", "crowdpose", "ochuman")
        if m.synthetic:
            assert m.default_size in m.sizes and "tiny" in m.sizes and m.sizes["coco-val-size"]["val"] == 5000
        else:
            assert m.files and all(f.url or f.source for f in m.files)


def test_real_manifest_facts():
    coco = load_manifest("coco")
    ann = next(f for f in coco.files if f.name == "annotations_trainval2017.zip")
    assert ann.size == 252907541 and ann.md5 == "f4bbac642086de4f52a3fdda2de5fa2c"
    crowd = load_manifest("crowdpose")
    val = next(f for f in crowd.files if f.name == "crowdpose_val.json")
    assert val.sha256.startswith("a1968f7c") and crowd.schema.num_keypoints == 14


def test_paths_follow_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    m = load_manifest("synthetic-coco")
    assert m.root() == tmp_path / "synthetic-coco" / f"{m.default_size}-seed{m.seed}"
    assert m.annotation_path("val", "tiny", 3) == tmp_path / "synthetic-coco" / "tiny-seed3" / m.splits["val"].annotations
    assert load_manifest("coco").root() == tmp_path / "coco"


def _raw(name="mine"):
    return yaml.safe_load((paths.manifests_dir() / "synthetic-coco.yaml").read_text()) | {"name": name}


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("protocol"), "protocol"),
    (lambda r: r.update(protocol="mpii"), "protocol"),
    (lambda r: r.update(seed=-1), "seed"),
    (lambda r: r["splits"]["val"].pop("images"), "splits.val"),
    (lambda r: r.update(colour="red"), "colour"),
    (lambda r: r.update(default_size="huge"), "default_size"),
    (lambda r: r["sizes"]["tiny"].update(test=3), "sizes.tiny"),
])
def test_bad_manifest_names_file_and_field(tmp_path, mutate, field):
    raw = _raw()
    mutate(raw)
    src = tmp_path / "mine.yaml"
    with pytest.raises(HarnessError) as err:
        parse_manifest(raw, src)
    assert str(src) in str(err.value) and field in str(err.value)


def test_bad_manifest_files(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(HarnessError, match="not valid YAML"):
        load_manifest_file(bad)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(_raw("mine")))
    with pytest.raises(HarnessError, match="differs from the file name"):
        load_manifest_file(other)
    with pytest.raises(HarnessError, match="unknown dataset 'imagenet'.*known: coco"):
        load_manifest("imagenet")
    with pytest.raises(HarnessError, match="no split 'test'"):
        load_manifest("synthetic-coco").annotation_path("test")
