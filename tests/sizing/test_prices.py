from datetime import date

import pytest

from ftplan.sizing.errors import DataError, UnknownGPUError
from ftplan.sizing.prices import load_prices


def test_every_row_has_a_source_and_a_date():
    book = load_prices()
    assert len(book.gpu_rows) > 30 and book.user_file is None
    assert {r.provider for r in book.gpu_rows} >= {"modal", "lambda", "runpod", "aws"}
    for r in book.gpu_rows:
        assert r.source and r.as_of and r.usd_per_gpu_hour > 0
    for api in book.apis.values():
        assert api["source"] and api["as_of"]


def test_rows_older_than_90_days_are_stale():
    book = load_prices()
    assert book.stale(date(2026, 6, 1)) == []
    stale = book.stale(date(2027, 6, 1))
    assert len(stale) == len(book.gpu_rows)


def test_user_file_overrides_and_adds(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[[gpu]]\nprovider = "lambda"\ngpu = "H100"\nusd_per_gpu_hour = 1.0\ncounts = [1]\n'
                 'source = "my quote"\nas_of = "2026-11-20"\n\n'
                 '[[gpu]]\nprovider = "myco"\ngpu = "L40S"\nusd_per_gpu_hour = 0.5\nsource = "contract"\n'
                 'as_of = "2026-11"\n\n[local]\nelectricity_usd_per_kwh = 0.31\n')
    book = load_prices(f)
    lam = [r for r in book.gpu_rows if r.provider == "lambda" and r.gpu == "H100"]
    assert [(r.counts, r.usd_per_gpu_hour) for r in lam if 1 in r.counts] == [((1,), 1.0)]
    assert len(lam) == 4  # the 2x/4x/8x rows stay
    assert any(r.provider == "myco" for r in book.gpu_rows) and "myco" in book.providers
    assert book.local["electricity_usd_per_kwh"] == 0.31 and book.user_file == str(f)


def test_default_user_file_is_picked_up(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    cfg = tmp_path / "cfg" / "ftplan"
    cfg.mkdir(parents=True)
    (cfg / "prices.toml").write_text("[local]\nelectricity_usd_per_kwh = 0.05\n")
    assert load_prices().local["electricity_usd_per_kwh"] == 0.05


@pytest.mark.parametrize("text,err,needle", [
    ("[[gpu]]\nprovider='x'\n", DataError, "lacks 'gpu'"),
    ("[[gpu]]\nprovider='x'\ngpu='H100'\nusd_per_gpu_hour=-1\nsource='s'\nas_of='2026-01'\n", DataError, ">= 0"),
    ("[[gpu]]\nprovider='x'\ngpu='H1OO'\nusd_per_gpu_hour=1\nsource='s'\nas_of='2026-01'\n", UnknownGPUError, "h100"),
    ("[[gpu]]\nprovider='x'\ngpu='H100'\nusd_per_gpu_hour=1\nsource='s'\nas_of='soon'\n", DataError, "not a date"),
    ("[local]\nvoltage = 3\n", DataError, "no setting 'voltage'"),
    ("this is not toml = = =", DataError, "TOML"),
])
def test_bad_user_files_are_explained(tmp_path, text, err, needle):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(err, match=needle):
        load_prices(f)


def test_missing_prices_file():
    with pytest.raises(DataError, match="no such file"):
        load_prices("/nonexistent/prices.toml")
