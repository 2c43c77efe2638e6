import pytest
import yaml

from poseharness.errors import HarnessError
from poseharness.methods import deep_merge, load_method, method_names, parse_method


def test_every_method_loads_and_resolves():
    assert "gog" in method_names()
    for name in method_names():
        m = load_method(name)
        for scale in m.scales:
            for v in m.variants:
                cfg = m.variant_config(v, scale)
                assert cfg["variant"] == v and cfg["method"] == name and "decode" in cfg
        for t in m.tables().values():
            assert set(t.paper) <= set(m.variants)
            # Every claim names columns and a metric of its own table (checked when the file is loaded).
            for c in t.claims:
                assert {c.a, c.b} <= set(t.columns) and c.metric in t.metrics and c.says
                assert c.kind in ("better", "same") and (c.margin is not None) == (c.kind == "same")


def test_gog_variant_configs():
    m = load_method("gog")
    q = m.variant_config("qnt_ro", "tiny")
    assert q["training"] == "qnt" and q["encoding"]["quantise"] is True and q["decode"]["refine"] is True
    o = m.variant_config("ours", "paper")
    assert o["encoding"]["quantise"] is False and o["decode"]["upsample"] == "bicubic"
    assert o["scale"]["input"] == 640 and o["decode"]["topk"] == 32
    # decode settings never leak into the training config, so decoder changes do not retrain
    assert "decode" not in m.training_config("precise", "tiny")
    assert m.tables()["table2"].paper["ours"] == {"AP": 64.4}
    assert m.tables()["oracle"].paper["limbs44"] == {"AP": 91.0}
    # Table 2's claims: four "better" comparisons and one "same within 0.5 AP points"; metric defaults to AP.
    claims = m.tables()["table2"].claims
    assert [(c.kind, c.a, c.b, c.metric, c.margin) for c in claims] == [
        ("better", "ours", "qnt", "AP", None), ("better", "ours", "dark", "AP", None),
        ("better", "qnt_ro", "qnt", "AP", None), ("better", "ours", "ours_bilinear", "AP", None),
        ("same", "ours", "ours_ro", "AP", 0.5)]
    assert m.tables()["oracle"].claims == ()


def test_deep_merge():
    a = {"x": {"y": 1, "z": 2}, "w": 1}
    assert deep_merge(a, {"x": {"y": 5}}) == {"x": {"y": 5, "z": 2}, "w": 1}
    assert a["x"]["y"] == 1


def test_bad_method_spec(tmp_path):
    raw = yaml.safe_load((load_method("gog").source).read_text())
    d = tmp_path / "gog"
    d.mkdir()
    bad = dict(raw, variants={**raw["variants"], "x": {"training": "nope"}})
    with pytest.raises(HarnessError, match=r"variants\.x\.training"):
        parse_method(bad, d / "method.yaml")
    bad = dict(raw, paradigm="sideways")
    with pytest.raises(HarnessError, match=r"method.yaml.*\n.*field paradigm"):
        parse_method(bad, d / "method.yaml")
    with pytest.raises(HarnessError, match="unknown method 'nope'"):
        load_method("nope")
