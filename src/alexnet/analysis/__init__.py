"""Reading a finished run: the report (report.py), its figures (plots.py), fc7 nearest
neighbours (retrieval.py) and binary codes (binary_codes.py), §6. Nothing here trains."""
