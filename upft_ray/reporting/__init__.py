"""Reports from stage files: accuracy with intervals and paired tests, token accounting, figures."""
