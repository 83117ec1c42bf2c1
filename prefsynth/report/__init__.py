"""Reports: what a build produced, per language and strategy."""
