"""The Chinese catalogue is complete and the compiled file is the one its source gives."""

import subprocess
from pathlib import Path

from django.utils import translation

from cases.models import EntrustmentState

PO = Path(__file__).resolve().parent.parent / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"


def test_every_string_is_translated_and_none_is_fuzzy():
    stats = subprocess.run(["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(PO)],
                           capture_output=True, text=True, env={"LC_ALL": "C"})
    assert stats.returncode == 0, stats.stderr
    assert "untranslated" not in stats.stderr and "fuzzy" not in stats.stderr, stats.stderr


def test_the_compiled_catalogue_matches_its_source(tmp_path):
    compiled = tmp_path / "django.mo"
    subprocess.run(["msgfmt", "-o", str(compiled), str(PO)], check=True)
    assert compiled.read_bytes() == PO.with_suffix(".mo").read_bytes(), "run: bash locale/check.sh"


def test_chinese_is_the_default_and_english_selectable(client):
    assert client.get("/accounts/login/").content.decode().count('lang="zh-Hans"') == 1
    with translation.override("zh-hans"):
        assert EntrustmentState.SUBMITTED.label == "已委托，待产权交易所受理"
    with translation.override("en"):
        assert EntrustmentState.SUBMITTED.label == "Entrusted, awaiting BCE"
