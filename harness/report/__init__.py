"""`mvbench report`: tables, figures and sample sheets from finished runs."""
