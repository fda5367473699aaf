"""The report that gathers runs into one page (HTML, Markdown, LaTeX), and the generated sections of the docs."""
