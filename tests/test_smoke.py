import json


def test_default_config_trains_a_few_batches(run_train):
    run = run_train()
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/loss", "test/psnr", "test/ssim", "val/loss"} <= metrics.keys()
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
