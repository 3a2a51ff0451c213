"""rank.py --scores: a row per (arch, data set, proxy) that reproduces the reported correlations."""
import csv
import json

import numpy as np
import pytest
from scipy import stats

from runners import rank

PROXIES = ["params", "mean_abs(msa_g)", "autoprox-pit"]
DATASETS = ["c100", "chaoyang"]


def run_rank(tmp_path, session_cache, suffix):
    scores, report = tmp_path / f"scores{suffix}", tmp_path / "report.json"
    argv = ["--archs", "10", "--img-size", "32", "--batch-size", "4", "--datasets", ",".join(DATASETS),
            "--device", "cpu", "--backend", "sequential", "--cache", str(session_cache.root), "--quiet",
            "--proxy", ";".join(PROXIES), "--split", "all", "--json", str(report), "--scores", str(scores)]
    assert rank.main(argv) is None
    return scores, json.loads(report.read_text())


def read_rows(path):
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    text = {"space", "split", "dataset", "column", "proxy"}
    for row in rows:  # CSV cells are text: numbers and lists back from their JSON, empty = None
        row.update({k: json.loads(v) if v else None for k, v in row.items() if k not in text})
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_scores_file_reproduces_the_reported_kendall_tau(suffix, tmp_path, session_cache, autoformer_bench, capsys):
    path, report = run_rank(tmp_path, session_cache, suffix)
    capsys.readouterr()
    rows = read_rows(path)
    assert len(rows) == 10 * len(DATASETS) * len(PROXIES)
    assert {(r["index"], r["dataset"], r["proxy"]) for r in rows} == {
        (i, d, p) for i in range(10) for d in DATASETS for p in PROXIES}
    for row in rows:  # the arch fields and the accuracy are the bench's own
        record = autoformer_bench.records[row["index"]]
        assert {k: row[k] for k in record["arch"]} == record["arch"]
        assert row["accuracy"] == record[row["column"]]
    for proxy in PROXIES:
        for column, expected in report["proxies"][proxy]["datasets"].items():
            mine = sorted((r["index"], r["score"], r["accuracy"]) for r in rows
                          if r["proxy"] == proxy and r["column"] == column)
            tau = stats.kendalltau([m[1] for m in mine], [m[2] for m in mine]).statistic
            assert tau == pytest.approx(expected["kendall"], abs=1e-12), (proxy, column)


def test_scores_differ_between_proxies(tmp_path, session_cache, capsys):
    """The file holds each proxy's own scores, not one column repeated."""
    path, _ = run_rank(tmp_path, session_cache, ".json")
    rows = read_rows(path)
    by_proxy = {p: np.array([r["score"] for r in rows if r["proxy"] == p and r["dataset"] == "c100"])
                for p in PROXIES}
    assert not np.allclose(by_proxy["params"], by_proxy["mean_abs(msa_g)"])
    assert len(set(by_proxy["params"])) > 1
