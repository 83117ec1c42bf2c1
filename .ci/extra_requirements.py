"""Print the requirements of one optional-dependency group of pyproject.toml, one per line
(a requirements file for `pip install -r`)."""
import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
print("\n".join(pyproject["project"]["optional-dependencies"][sys.argv[1]]))
