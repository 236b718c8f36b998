"""MkDocs hook: show the docstrings' Sphinx-style roles (``:func:`x```) as plain code in the API pages.

The docstrings are Google style but cross-reference with reST roles, which Markdown renders as literal
``:func:`` text before the code span; this drops the role and a leading ``~`` (reST's "last part").
"""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):(?=<code)")


def on_page_content(html: str, **kwargs) -> str:
    """Strip reST role prefixes from the rendered page."""
    return ROLE.sub("", html).replace("<code>~", "<code>")
