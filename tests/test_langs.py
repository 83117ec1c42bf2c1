"""Every registry record: complete, consistent with its language-ID backend, usable templates."""
import string
import subprocess
import sys

import pyarrow as pa
import pytest

from prefsynth import langid, langs, lid_backends
from prefsynth.config import LanguageIdFilter
from prefsynth.filter.language import language_checks

AYA_23 = {"ar", "zh-Hans", "zh-Hant", "cs", "nl", "en", "fr", "de", "el", "he", "hi", "id", "it", "ja", "ko",
          "fa", "pl", "pt", "ro", "ru", "es", "tr", "uk", "vi"}
SCARCE = {"bn", "sw", "th", "ta", "te", "ur", "mr", "am", "ha", "yo", "zu", "ms", "fil", "ne", "my", "km"}
RECORDS = list(langs.load().values())


def test_registry_covers_aya_23_and_scarce_languages():
    codes = [r.code for r in RECORDS]
    assert len(codes) == len(set(codes)) >= 101
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
    # its check: a default backend (installed with prefsynth) with a label for it
    assert record.lid_backend in lid_backends.DEFAULT_BACKENDS, record.lid_backend
    assert lid_backends.record_label(record, record.lid_backend) is not None
    assert all(other in langs.codes() and other != record.code for other in record.lid_group)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.code)
def test_templates_have_their_placeholders_and_are_in_language(record):
    assert record.templates is not None, f"{record.code} has no templates"
    for name, required in langs.TEMPLATE_PLACEHOLDERS.items():
        text = getattr(record.templates, name)
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
        assert sorted(fields) == sorted(required), f"{record.code}.{name}: {fields}"
        filled = text.format(**{f: "" for f in required})
        if record.templates.fallback:
            continue
        # the language_id filter, as a build runs it (`backend: auto`), keeps the template as the language
        table = pa.table({"text": [filled], "language": [record.code]})
        failed, reason, columns = language_checks(LanguageIdFilter(type="language_id"), table)
        assert not failed[0].as_py(), f"{record.code}.{name}: {reason[0]} ({columns['lid_backend'][0]})"


def test_cli_lists_languages_with_coverage_flags():
    out = subprocess.run([sys.executable, "-m", "prefsynth.cli", "langs"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": ""}).stdout
    assert "zh-Hant" in out and "Hausa" in out and "LID backend" in out and "cld3" in out and "ms+id" in out
