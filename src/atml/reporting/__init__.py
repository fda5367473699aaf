"""The report that gathers runs into one page (HTML, Markdown, LaTeX), and README's generated sections."""
