"""Every registry record: complete, consistent with the bundled fastText model, usable templates."""
import string
import subprocess
import sys

import pytest

from prefsynth import langid, langs

AYA_23 = {"ar", "zh-Hans", "zh-Hant", "cs", "nl", "en", "fr", "de", "el", "he", "hi", "id", "it", "ja", "ko",
          "fa", "pl", "pt", "ro", "ru", "es", "tr", "uk", "vi"}
SCARCE = {"bn", "sw", "th", "ta", "te", "ur", "mr", "am", "ha", "yo", "zu", "ms", "fil", "ne", "my", "km"}
RECORDS = list(langs.load().values())


def test_registry_covers_aya_23_and_scarce_languages():
    codes = [r.code for r in RECORDS]
    assert len(codes) == len(set(codes)) >= 50
    assert AYA_23 <= set(codes) and SCARCE <= set(codes)
    assert langs.get("hi").native_name == "हिन्दी"
    with pytest.raises(KeyError, match="not in the registry"):
        langs.get("xx")


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.code)
def test_record_is_complete_and_consistent(record):
    assert record.name and record.native_name
    assert record.script in langid.SCRIPT_PARTS, f"{record.script} is not a script prefsynth can check"
    assert record.fasttext is None or record.fasttext in langid.labels()
    assert record.flores200 == record.nllb and record.flores200.count("_") == 1
    assert record.direction in {"ltr", "rtl"} and record.resource_level in {"high", "medium", "low"}
    assert (record.direction == "rtl") == (record.script in {"Arab", "Hebr"})


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.code)
def test_templates_have_their_placeholders_and_are_in_language(record):
    assert record.templates is not None, f"{record.code} has no templates"
    for name, required in langs.TEMPLATE_PLACEHOLDERS.items():
        text = getattr(record.templates, name)
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
        assert sorted(fields) == sorted(required), f"{record.code}.{name}: {fields}"
        filled = text.format(**{f: "" for f in required})
        if record.templates.fallback or record.fasttext is None:
            continue
        detected, _ = langid.detect([filled])[0]
        assert detected == record.code, f"{record.code}.{name} reads as {detected}"


def test_cli_lists_languages_with_coverage_flags():
    out = subprocess.run([sys.executable, "-m", "prefsynth.cli", "langs"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": ""}).stdout
    assert "zh-Hant" in out and "Hausa" in out and "fastText" in out
