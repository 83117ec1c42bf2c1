"""Filters mark candidates `keep`/`reason`; they never delete rows."""
