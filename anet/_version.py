"""anet's version, in a module of its own: any module can name it without importing `anet`
(whose `__init__` imports the API, which imports those modules back), and the packaging reads
it from here too (`tool.setuptools.dynamic` in pyproject.toml)."""

__version__ = "0.1.0"
