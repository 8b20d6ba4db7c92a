"""How bench results are shown: terminal/markdown/CSV tables, output files, plots, JUnit, HTML pages and SVG charts."""
