"""The demo build's bookkeeping: which runs are done, and the progress kept between sessions."""

import gzip

from capsafe_core import demo
from capsafe_core.demo import DemoConfig
from capsafe_core.store import Store


def test_runs_done_and_partial_progress(tmp_path, monkeypatch):
    cfg = DemoConfig(out=tmp_path / "demo.db", work_dir=tmp_path / "work")
    cfg.work_dir.mkdir()
    with Store.open(tmp_path / "build.db") as store:
        assert demo.runs_done(store, cfg) == set()
        with store.transaction():
            store.upsert_experiment(cfg.experiment, meta={"demo": {"seconds": 1}})  # a build from before seeds
        assert demo.runs_done(store, cfg) == {f"{m}/0" for m in cfg.mitigations}
        with store.transaction():
            store.upsert_experiment(cfg.experiment, meta={"runs_done": {"none/1": {"seconds": 2}}})
        assert "none/1" in demo.runs_done(store, cfg) and "lower_lr/1" not in demo.runs_done(store, cfg)
        archive = tmp_path / "demo-build.db.gz"
        monkeypatch.setattr(demo, "_partial_archive", lambda c: archive)
        demo.save_partial(store, cfg)
    restored = tmp_path / "restored.db"
    restored.write_bytes(gzip.decompress(archive.read_bytes()))
    with Store.open(restored, read_only=True) as again:
        assert "none/1" in demo.runs_done(again, cfg)
    assert not (cfg.work_dir / "partial.db").exists()
