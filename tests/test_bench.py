"""secfl bench: the slope fit, one tiny grid end to end, the SecAgg+ baseline's arithmetic, the CLI, bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fedattn import bench
from fedattn import bench_report as report
from fedattn.bench_baselines import Timer, make_method
from fedattn.cli import app


def test_slope_fit_recovers_a_known_power_law():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e4, 1e7, 8)
    y = 3e-7 * x**1.3 * np.exp(rng.normal(0, 0.01, x.size))
    fit = bench.fit_slope(x, y)
    assert fit["slope"] == pytest.approx(1.3, abs=0.02)
    assert fit["coefficient"] == pytest.approx(3e-7, rel=0.2)
    assert fit["r2"] > 0.99 and fit["points"] == 8 and fit["from"] == pytest.approx(1e4)
    assert bench.fit_slope([1e4], [1.0]) is None  # one point has no slope
    assert bench.fit_slope([1e4, 1e5], [1.0, None]) is None


def test_peak_rss_sees_native_allocations():
    _, seconds, peak = bench.peak_rss(lambda: np.ones(8_000_000).sum())  # 64 MB outside Python's allocator
    if peak is None:
        pytest.skip("no /proc here: peak memory is reported as None")
    assert peak > 48 * 2**20 and seconds > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = bench.BenchConfig(sizes=(10_000,), clients=(2,), ref_clients=2, ref_params=10_000, repeats=1,
                               methods=("plaintext", "secagg-compact", "flare-tenseal"), fresh_processes=False,
                               command="pytest tiny grid")
    result = bench.run_bench(config)
    out = tmp_path_factory.mktemp("bench")
    return result, report.write_outputs(result, out)


def test_tiny_grid_writes_bench_json_with_every_figure(tiny):
    result, paths = tiny
    data = json.loads(paths["json"].read_text())
    assert data["schema"] == "secfl.bench/1" and data["command"] == "pytest tiny grid"
    assert {"cpu_count", "python", "packages"} <= set(data["machine"]) and data["machine"]["packages"]["tenseal"]
    assert [c["method"] for c in data["cells"]] == ["plaintext", "secagg-compact", "flare-tenseal"]
    for cell in data["cells"]:
        assert (cell["params"], cell["clients"]) == (10_000, 2)
        assert set(cell["phases"]) == {"encrypt", "serialise", "deserialise", "aggregate", "decrypt", "release"}
        assert cell["client_s"] > 0 and cell["server_s"] > 0 and cell["bytes_per_client"] > 4 * 10_000
        assert set(cell["peak_rss"]) == {"client", "server", "key_holder"}
    by = {c["method"]: c for c in data["cells"]}
    assert by["plaintext"]["max_error"] < 1e-12 and by["plaintext"]["key_holder_s"] is None
    assert by["secagg-compact"]["max_error"] < 1e-4 and by["secagg-compact"]["max_error_raw"] < 1e-7
    assert by["flare-tenseal"]["max_error"] < 1e-6 and by["flare-tenseal"]["bytes_x_float32"] > 10
    row = data["targets"]["methods"]["secagg-compact"]
    assert row["client_vs_flare"] == pytest.approx(by["secagg-compact"]["client_s"] / by["flare-tenseal"]["client_s"])
    assert all(paths[k].stat().st_size > 1000 for k in ("time_vs_params", "bytes_vs_params", "time_vs_clients"))


def test_secaggplus_unmasked_sum_equals_the_quantised_sum():
    pytest.importorskip("flwr", reason="the Flower SecAgg+ baseline needs secfl[flower]")
    shapes = {"w": (50, 20), "b": (7,)}
    method = make_method("flower-secagg+", keep_quantized=True)
    method.setup(shapes=shapes, clients=5)
    rng = np.random.default_rng(0)
    updates = [{n: rng.uniform(-0.5, 0.5, s).astype(np.float32) for n, s in shapes.items()} for _ in range(5)]
    payloads = [method.client(u, k, Timer()) for k, u in enumerate(updates)]
    assert all(len(b) > 8 * 1000 for b in payloads[0][1:2])  # int64 on the wire
    out = method.server(payloads, Timer())
    expected = [sum(method.quantized[k][i] for k in range(5)) % method.MODULUS_RANGE for i in range(3)]
    for got, want in zip(method.unmasked, expected):
        np.testing.assert_array_equal(got, want)
    step = 2 * method.CLIPPING_RANGE / method.QUANTIZATION_RANGE
    for n in shapes:
        np.testing.assert_allclose(out[n], sum(u[n].astype(np.float64) for u in updates), atol=6 * step)  # stochastic rounding < 1 step, float32 < 1/8


def test_cli_bench_writes_json_plots_and_the_markdown_block(tmp_path):
    md = tmp_path / "README.md"
    md.write_text(f"# x\n\n{report.START}\nOLD-BLOCK\n{report.END}\n\ntail\n")
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["bench", "--out", str(tmp_path / "o"), "--markdown", str(md), "--sizes", "10000",
                                 "--clients", "2", "--methods", "plaintext,secagg-compact", "--no-rounds"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "o" / "bench.json").read_text())
    assert data["command"].startswith("secfl bench --out") and len(data["cells"]) == 2
    assert all(c["fresh_process"] for c in data["cells"])  # each cell in its own process: exact peak memory
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {"bench.json", "time_vs_params.png", "bytes_vs_params.png",
                                                             "time_vs_clients.png"}
    text = md.read_text()
    assert "OLD-BLOCK" not in text and text.endswith(f"{report.END}\n\ntail\n") and "secagg-compact" in text


def test_bad_input_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="methods: unknown method 'nope'"):
        bench.BenchConfig(methods=("nope",))
    with pytest.raises(ValueError, match="sizes must be a positive integer"):
        bench.BenchConfig(sizes=(0,))
    with pytest.raises(ValueError, match="params must be a positive integer"):
        bench.measure_cell("plaintext", params=-5, clients=2)
    with pytest.raises(ValueError, match="clients must be at least 2"):
        bench.measure_cell("plaintext", params=100, clients=1)
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--methods", "nope"])
    assert result.exit_code == 2 and "unknown method" in result.output
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--markdown", str(tmp_path / "none.md")])
    assert result.exit_code == 2 and "none.md" in result.output
    (tmp_path / "plain.md").write_text("no markers\n")
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--markdown", str(tmp_path / "plain.md")])
    assert result.exit_code == 2 and "bench:start" in result.output
