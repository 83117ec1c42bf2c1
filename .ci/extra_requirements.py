"""Print the requirements of one optional-dependency group of pyproject.toml, shell-quoted."""
import shlex
import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
print(" ".join(shlex.quote(r) for r in pyproject["project"]["optional-dependencies"][sys.argv[1]]))
