"""Small helpers with no place of their own, importable from every package (they import none of ours)."""
